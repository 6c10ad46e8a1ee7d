"""The pass that removes every tensor above rank 4 from a shape-inferred ONNX graph.

Rank-5 graph inputs become frames ``(B·T, C, H, W)``; each node that touches a high-rank value
is replaced by what its registered rule emits; rank-5 graph outputs leave in frames layout.
Nodes no rule can lower are collected and reported all at once; with ``allow_high_rank`` they
are kept, fed by rank-5 views of their inputs, so the rest of the graph is still lowered.

The pass's contract (onnx-ir's ``requires`` / ``ensures``, and checks around each rule):

- preconditions: the default-domain opset is one the rules handle (``MIN_OPSET`` and up), else
  nothing is lowered and the report says why (``LoweringPreconditionError`` unless
  ``allow_high_rank``); a node is handed to its rule only when every value it uses or makes has
  an inferred shape, else it is reported like a node with no rule.
- an op's rules are tried in order (its own rule, then its axis-merging fallback), each in a
  transaction: when one refuses, nothing it did remains. A rule may absorb later nodes of a
  pattern it lowered whole (``LowerContext.absorb``); the pass then removes them unvisited.
  Any other exception becomes ``RuleFailed``, naming the rule, the node and its op; a rule that returns without a
  representation (or replacement) of a used output raises ``RuleContractError``.
- postconditions: no value above rank 4 remains in use unless ``allow_high_rank``
  (``ir.passes.PostconditionError``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir

from ..choices import MIN_OPSET
from .context import Dims, LowerContext, Rep, Unsupported, default_grouping, frames_dims
from .live_memory import live_memory
from .registry import DEFAULT_DOMAIN, Registration, normalize_domain, qualified, registrations_for, why_no_rule

log = logging.getLogger(__name__)


@dataclass
class UnsupportedNode:
    name: str
    op: str
    input_shapes: list[Dims | None]
    reason: str

    def __str__(self) -> str:
        shapes = ", ".join(str(list(s)) if s is not None else "?" for s in self.input_shapes)
        return f"{self.name} ({self.op}; inputs {shapes}): {self.reason}"


@dataclass
class LoweringReport:
    lowered: list[dict[str, Any]] = field(default_factory=list)  # node, op, rule, new ops
    unsupported: list[UnsupportedNode] = field(default_factory=list)
    layouts: dict[str, dict[str, Any]] = field(default_factory=dict)  # graph input/output name → layout
    activation_memory: dict[str, dict[str, Any]] = field(default_factory=dict)  # "original"/"lowered" → peak

    def to_dict(self) -> dict[str, Any]:
        return {
            "lowered_nodes": len(self.lowered),
            "by_rule": dict(Counter(item["rule"] for item in self.lowered).most_common()),
            "nodes": self.lowered,
            "unsupported": [vars(u) for u in self.unsupported],
            "activation_memory": self.activation_memory,
        }


class LoweringError(Exception):
    def __init__(self, report: LoweringReport):
        self.report = report
        items = report.unsupported
        super().__init__(f"{len(items)} node(s) have no rank-4 lowering: " + "; ".join(map(str, items)))


class LoweringPreconditionError(LoweringError, ir.passes.PreconditionError):
    """The model is outside what the lowering handles (its opset); nothing was lowered. A
    LoweringError, so callers report it like unsupported nodes; a PreconditionError, so onnx-ir's
    pass machinery passes it through unwrapped."""

    def __init__(self, report: LoweringReport):
        LoweringError.__init__(self, report)
        self.args = ("the model cannot be lowered: " + "; ".join(map(str, report.unsupported)),)


class RuleError(Exception):
    """A bug in a lowering rule (not a refusal): names the rule, the node and its op."""

    def __init__(self, rule: str, node: str, op: str, message: str):
        self.rule, self.node, self.op = rule, node, op
        super().__init__(message)


class RuleFailed(RuleError):
    """A rule raised something other than ``Unsupported``; the original is chained (``__cause__``)."""

    def __init__(self, rule: str, node: str, op: str, error: BaseException):
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        super().__init__(rule, node, op, f"rule {rule} failed on node {node} ({op}): {type(error).__name__}"
                         + (f": {detail}" if detail else ""))


class RuleContractError(RuleError):
    """A rule returned without doing what every rule must (see ``registry``)."""

    def __init__(self, rule: str, node: str, op: str, problem: str):
        super().__init__(rule, node, op, f"rule {rule} broke its contract on node {node} ({op}): {problem}")


def _opset(model: ir.Model, domain: str) -> int | None:
    """The model's opset for ``domain`` (``""`` and ``"ai.onnx"`` alike)."""
    domain = normalize_domain(domain)
    for name, version in model.opset_imports.items():
        if normalize_domain(name) == domain:
            return version
    return None


def _frames_shape(dims: Dims) -> ir.Shape:
    """(B·T, C, H, W); a symbolic batch becomes the symbol ``batch*T``."""
    b, c, t, h, w = dims
    return ir.Shape([b * t if b is not None else f"batch*{t}", c, h, w])


class LowerHighRankPass(ir.passes.InPlacePass):
    def __init__(self, allow_high_rank: bool = False, conv_strategy: str = "auto",
                 allowed_ops: frozenset[str] | None = None, op_limits: Mapping[str, Any] | None = None,
                 chunk_convs: bool = True):
        super().__init__()
        self.chunk_convs = chunk_convs
        self.allow_high_rank = allow_high_rank
        self.conv_strategy = conv_strategy
        self.allowed_ops = allowed_ops
        self.op_limits = op_limits
        self.report = LoweringReport()

    # -- contract -------------------------------------------------------------------------------
    def requires(self, model: ir.Model) -> None:
        failures = self._preconditions(model)
        if failures and not self.allow_high_rank:
            self.report.unsupported.extend(failures)
            raise LoweringPreconditionError(self.report)

    @staticmethod
    def _preconditions(model: ir.Model) -> list[UnsupportedNode]:
        opset = _opset(model, DEFAULT_DOMAIN)
        if opset is None or opset < MIN_OPSET:
            found = "imports no default-domain opset" if opset is None else f"uses opset {opset}"
            reason = (f"the model {found}; the lowering rules handle opset {MIN_OPSET} and up "
                      "(convert it with onnx.version_converter)")
            return [UnsupportedNode("model", "opset", [], reason)]
        return []

    def ensures(self, model: ir.Model) -> None:
        if self.allow_high_rank:
            return
        graph = model.graph
        values = list(graph.inputs) + list(graph.outputs)
        for node in graph:
            values += [v for v in node.inputs if v is not None] + list(node.outputs)
        high = sorted({v.name or "?" for v in values if LowerContext.is_high(v)})
        if high:
            raise ir.passes.PostconditionError(
                f"{len(high)} value(s) above rank 4 remain after lowering: {', '.join(high[:5])}")

    @staticmethod
    def _shapes_missing(node: ir.Node) -> str | None:
        """Why the node cannot go to its rule: a value it uses or makes has no inferred shape."""
        used = [v for v in node.inputs if v is not None]
        made = [v for v in node.outputs if v.uses() or v.is_graph_output()]
        missing = [v.name or "?" for v in used + made if v.shape is None]
        if missing:
            return f"the shape of {', '.join(map(repr, missing))} is unknown after shape inference"
        return None

    @staticmethod
    def _check_outputs(ctx: LowerContext, node: ir.Node, rule: str, op: str, description: object,
                       absorbed: set[ir.Node]) -> None:
        name = node.name or node.op_type
        if not isinstance(description, str):
            raise RuleContractError(rule, name, op, f"returned {type(description).__name__}, not a description")
        for out in node.outputs:
            if not (any(use.node not in absorbed for use in out.uses()) or out.is_graph_output()):
                continue  # an unused output (or one only absorbed nodes use) needs no rank-4 form
            if ctx.is_high(out):
                if out not in ctx.reps:
                    raise RuleContractError(rule, name, op, f"the rank-{len(out.shape or ())} output "
                                            f"{out.name!r} has no rank-4 representation")
            elif out not in ctx.replacements:
                raise RuleContractError(rule, name, op, f"the output {out.name!r} has no replacement")

    # -- the pass ---------------------------------------------------------------------------------
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        failures = self._preconditions(model)  # checked again: ``call`` may be called without ``requires``
        if failures:
            self.report.unsupported.extend(failures)
            if not self.allow_high_rank:
                raise LoweringPreconditionError(self.report)
            return ir.passes.PassResult(model, modified=False)  # allowed: the model stays as it is
        graph = model.graph
        ctx = LowerContext(graph, _opset(model, DEFAULT_DOMAIN) or MIN_OPSET, self.conv_strategy, self.allowed_ops,
                           self.op_limits, self.chunk_convs)
        ctx.live = live_memory(graph)
        self.report.activation_memory["original"] = ctx.live.to_dict()
        self._lower_inputs(ctx, graph)
        lowered: list[ir.Node] = []
        absorbed: set[ir.Node] = set()
        for node in list(graph):
            if node in absorbed:
                lowered.append(node)
                continue
            if not any(ctx.is_high(v) for v in list(node.inputs) + list(node.outputs)):
                continue
            ctx.absorbed = []
            ctx.new_nodes = []
            ctx.prefix = node.name or node.op_type
            op = qualified(node.domain, node.op_type)
            opset = node.version if node.version is not None else _opset(model, node.domain)
            entries = registrations_for(node.domain, node.op_type, opset)
            if not entries:
                self._keep(ctx, graph, node, why_no_rule(node.domain, node.op_type, opset))
                continue
            missing = self._shapes_missing(node)
            if missing is not None:
                self._keep(ctx, graph, node, missing)
                continue
            applied = self._apply_cheapest(ctx, node, op, entries)
            if isinstance(applied, Unsupported):
                self._keep(ctx, graph, node, str(applied))
                continue
            entry, description = applied
            for done in [node, *ctx.absorbed]:
                self._check_outputs(ctx, done, entry.name, op, description, set(ctx.absorbed))
            graph.insert_before(node, ctx.new_nodes)
            for done in [node, *ctx.absorbed]:
                self._apply_replacements(ctx, done)
            absorbed.update(ctx.absorbed)
            lowered.append(node)
            into = dict(Counter(n.op_type for n in ctx.new_nodes))
            log.debug("%s (%s) lowered by %s: %s; emitted %s", ctx.prefix, op, entry.name, description,
                      ", ".join(f"{n} {kind}" for kind, n in into.items()) or "no nodes")
            self.report.lowered.append({
                "node": node.name, "op": op, "rule": description, "into": into,
            })
        self._lower_outputs(ctx, graph)
        if self.report.unsupported and not self.allow_high_rank:
            raise LoweringError(self.report)
        for node in lowered:  # detach, so the old rank-5 weights lose their last use
            for index in range(len(node.inputs)):
                node.replace_input_with(index, None)
        graph.remove(lowered, safe=False)
        return ir.passes.PassResult(model, modified=bool(lowered))

    def _lower_inputs(self, ctx: LowerContext, graph: ir.Graph) -> None:
        for i, value in enumerate(list(graph.inputs)):
            dims = ctx.dims(value)
            if not ctx.is_high(value) or dims is None:
                continue
            name = value.name or f"input{i}"
            if len(dims) != 5 or any(d is None for d in dims[1:]):
                reason = "only rank-5 inputs with static C, T, H, W can become frames"
                log.debug("graph input %s %s kept: %s", name, list(dims), reason)
                self.report.unsupported.append(UnsupportedNode(name, "graph input", [dims], reason))
                ctx.reps[value] = _native_rep(value, dims)
                continue
            frames = ir.Value(name=name, type=value.type, shape=_frames_shape(dims))
            value.name = f"{name}__rank5"
            graph.inputs[i] = frames
            ctx.set_frames(value, frames)
            log.debug("graph input %s %s → frames %s", name, list(dims), list(frames_dims(dims)))
            self.report.layouts[name] = {"layout": "frames", "original_shape": list(dims)}

    def _lower_outputs(self, ctx: LowerContext, graph: ir.Graph) -> None:
        ctx.new_nodes = []
        ctx.prefix = "output"
        for i, value in enumerate(list(graph.outputs)):
            if not ctx.is_high(value) or value not in ctx.reps:
                continue
            dims = ctx.reps[value].dims
            try:
                if len(dims) == 5:
                    layout, shape = "frames", _frames_shape(dims)
                    out = ctx.op("Identity", [ctx.frames(value)])
                else:  # rank 6 to 8: its elements in row-major order, as the rank-4 canonical shape
                    if any(d is None for d in dims):
                        raise Unsupported(f"a rank-{len(dims)} output needs static dims, not {list(dims)}")
                    grouped = default_grouping(dims)
                    layout, shape = "row-major", ir.Shape(list(grouped))
                    out = ctx.op("Identity", [ctx.canonical(value, grouped)])
            except Unsupported as exc:
                self.report.unsupported.append(UnsupportedNode(value.name or f"output{i}", "graph output",
                                                               [dims], str(exc)))
                continue
            name = value.name or f"output{i}"
            value.name = f"{name}__rank{len(dims)}"
            out.name, out.type = name, value.type
            out.shape = shape
            graph.outputs[i] = out
            log.debug("graph output %s %s leaves as %s %s", name, list(dims), layout, list(shape.dims))
            self.report.layouts[name] = {"layout": layout, "original_shape": list(dims)}
        graph.extend(ctx.new_nodes)

    @staticmethod
    def _apply_cheapest(ctx: LowerContext, node: ir.Node, op: str,
                        entries: list[Registration]) -> tuple[Registration, object] | Unsupported:
        """Apply the rule of ``entries`` that moves the least data, each tried in a transaction;
        when all refuse, one ``Unsupported`` with every reason.

        An op's own rule keeps frames and is right wherever its input is in frames; the axis-merging
        fallback is right where the input is already row-major (an attention tensor that never was
        frames), and the own rule would first convert it. So when the own rule emits transposes,
        the fallback is tried too and the one with fewer wins (the own rule on a tie, unless an
        input is a lazy view: a reshape/transpose chain the source model made in row-major order,
        an attention or channel-last block whose next ops want it row-major too)."""
        reasons: list[str] = []
        best: tuple[int, Registration] | None = None
        lazy = any(v is not None and (rep := ctx.reps.get(v)) is not None and rep.view is not None
                   and rep.frames is None and not rep.canonical for v in node.inputs)
        for index, entry in enumerate(entries):
            try:
                with ctx.transaction() as savepoint:
                    description = entry.rule(ctx, node)
            except Unsupported as exc:
                reasons.append(str(exc) if not reasons else f"axis merging: {exc}")
                continue
            except Exception as exc:
                raise RuleFailed(entry.name, ctx.prefix, op, exc) from exc
            cost = sum(n.op_type == "Transpose" for n in ctx.new_nodes[savepoint.nodes:])
            if cost == 0 or (index == len(entries) - 1 and (best is None or cost < best[0]
                                                             or (lazy and cost == best[0]))):
                return entry, description  # nothing can beat it: kept as applied
            if best is None or cost < best[0]:
                best = (cost, entry)
            ctx.rollback(savepoint)
        if best is None:
            return Unsupported("; ".join(reasons))
        entry = best[1]
        try:  # an earlier rule was cheaper: rules are deterministic, so it does again what it did when tried
            return entry, entry.rule(ctx, node)
        except Exception as exc:
            raise RuleFailed(entry.name, ctx.prefix, op, exc) from exc

    @staticmethod
    def _apply_replacements(ctx: LowerContext, node: ir.Node) -> None:
        for out in node.outputs:
            new = ctx.replacements.pop(out, None)
            if new is None:
                continue
            name = out.name
            out.replace_all_uses_with(new, replace_graph_outputs=True)
            out.name = f"{name}__replaced"
            new.name, new.type, new.shape = name, out.type, out.shape

    def _keep(self, ctx: LowerContext, graph: ir.Graph, node: ir.Node, reason: str) -> None:
        """Record an unsupported node and keep it, fed rank-5 views of its inputs; its outputs
        stay rank 5, so its consumers are still lowered and only root causes get reported."""
        op = qualified(node.domain, node.op_type)
        log.debug("%s (%s) has no rank-4 lowering, kept: %s", node.name or node.op_type, op, reason)
        self.report.unsupported.append(UnsupportedNode(
            node.name or node.op_type, op, [ctx.dims(v) for v in node.inputs], reason))
        ctx.new_nodes = []
        for index, value in enumerate(node.inputs):
            rep = ctx.reps.get(value) if value is not None and ctx.is_high(value) else None
            if value is not None and rep is not None:  # a kept producer's output is its own view
                native = rep.canonical.get(tuple(rep.dims))
                node.replace_input_with(index, native if native is not None else ctx.canonical(value, rep.dims))
        graph.insert_before(node, ctx.new_nodes)
        for out in node.outputs:
            out_dims = ctx.dims(out)
            if ctx.is_high(out) and out_dims is not None:
                ctx.reps[out] = _native_rep(out, out_dims)


def _native_rep(value: ir.Value, dims: Dims) -> Rep:
    """A value kept at its own rank: its only representation is itself."""
    return Rep(tuple(dims), canonical={tuple(dims): value})
