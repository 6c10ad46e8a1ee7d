"""The pass that removes every tensor above rank 4 from a shape-inferred ONNX graph.

Rank-5 graph inputs become frames ``(B·T, C, H, W)``; each node that touches a high-rank value
is replaced by what its registered rule emits; rank-5 graph outputs leave in frames layout.
Nodes no rule can lower are collected and reported all at once; with ``allow_high_rank`` they
are kept, fed by rank-5 views of their inputs, so the rest of the graph is still lowered.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir

from .context import Dims, LowerContext, Rep, Unsupported, frames_dims
from .registry import rule_for

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "lowered_nodes": len(self.lowered),
            "by_rule": dict(Counter(item["rule"] for item in self.lowered).most_common()),
            "nodes": self.lowered,
            "unsupported": [vars(u) for u in self.unsupported],
        }


class LoweringError(Exception):
    def __init__(self, report: LoweringReport):
        self.report = report
        items = report.unsupported
        super().__init__(f"{len(items)} node(s) have no rank-4 lowering: " + "; ".join(map(str, items)))


def _frames_shape(dims: Dims) -> ir.Shape:
    """(B·T, C, H, W); a symbolic batch becomes the symbol ``batch*T``."""
    b, c, t, h, w = dims
    return ir.Shape([b * t if b is not None else f"batch*{t}", c, h, w])


class LowerHighRankPass(ir.passes.InPlacePass):
    def __init__(self, allow_high_rank: bool = False, conv_strategy: str = "auto"):
        super().__init__()
        self.allow_high_rank = allow_high_rank
        self.conv_strategy = conv_strategy
        self.report = LoweringReport()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        ctx = LowerContext(graph, model.opset_imports.get("", 1), self.conv_strategy)
        self._lower_inputs(ctx, graph)
        lowered = []
        for node in list(graph):
            if not any(ctx.is_high(v) for v in list(node.inputs) + list(node.outputs)):
                continue
            ctx.new_nodes = []
            ctx.prefix = node.name or node.op_type
            try:
                rule = rule_for(node.op_type)
                if rule is None:
                    raise Unsupported(f"no lowering rule for {node.op_type}")
                description = rule(ctx, node)
            except Unsupported as exc:
                self._keep(ctx, graph, node, str(exc))
                continue
            graph.insert_before(node, ctx.new_nodes)
            self._apply_replacements(ctx, node)
            lowered.append(node)
            into = dict(Counter(n.op_type for n in ctx.new_nodes))
            log.debug("%s (%s) lowered by %s: %s; emitted %s", ctx.prefix, node.op_type,
                      getattr(rule, "__name__", rule), description,
                      ", ".join(f"{n} {op}" for op, n in into.items()) or "no nodes")
            self.report.lowered.append({
                "node": node.name, "op": node.op_type, "rule": description, "into": into,
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
            dims = ctx.rep(value).dims
            if len(dims) != 5:
                continue  # only reachable with allow_high_rank: the output stays as it is
            frames = ctx.op("Identity", [ctx.frames(value)])
            name = value.name or f"output{i}"
            value.name = f"{name}__rank5"
            frames.name, frames.type = name, value.type
            frames.shape = _frames_shape(dims)
            graph.outputs[i] = frames
            log.debug("graph output %s %s leaves as frames %s", name, list(dims), list(frames_dims(dims)))
            self.report.layouts[name] = {"layout": "frames", "original_shape": list(dims)}
        graph.extend(ctx.new_nodes)

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
        log.debug("%s (%s) has no rank-4 lowering, kept: %s", node.name or node.op_type, node.op_type, reason)
        self.report.unsupported.append(UnsupportedNode(
            node.name or node.op_type, node.op_type, [ctx.dims(v) for v in node.inputs], reason))
        ctx.new_nodes = []
        for index, value in enumerate(node.inputs):
            if value is not None and ctx.is_high(value) and value in ctx.reps:
                node.replace_input_with(index, ctx.canonical(value, ctx.rep(value).dims))
        graph.insert_before(node, ctx.new_nodes)
        for out in node.outputs:
            out_dims = ctx.dims(out)
            if ctx.is_high(out) and out_dims is not None:
                ctx.reps[out] = _native_rep(out, out_dims)


def _native_rep(value: ir.Value, dims: Dims) -> Rep:
    """A value kept at its own rank: its only representation is itself."""
    return Rep(tuple(dims), canonical={tuple(dims): value})
