"""The rank lint: every tensor whose rank exceeds what the target runtime accepts.

Ranks come from shape inference run on the graph alone (``fresh_inference``): the file's
``value_info`` and output declarations are not trusted, since a file that declares rank 4 for a
tensor that is rank 5 at run time must not lint clean. Every declaration is then checked against
inference: a disagreement is itself a finding (E3D006). Where inference cannot type a tensor,
the file's declaration is used (``shape_source`` "declared").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Edge3dError
from ..onnx_tensors import Declaration, TensorInfo, declarations, fresh_inference, load_onnx, shape_text, tensors

RULE_RANK = "E3D001"
RULE_DECLARED = "E3D006"


@dataclass
class Mismatch:
    """A shape the file declares that shape inference contradicts (E3D006)."""

    name: str
    graph: str
    declared_in: str  # "input", "output" or "value_info"
    declared: list | None
    inferred: list | None
    message: str
    rule: str = RULE_DECLARED


@dataclass
class LintResult:
    path: str
    max_rank: int
    findings: list[TensorInfo] = field(default_factory=list)
    unknown: list[TensorInfo] = field(default_factory=list)  # rank not known after inference
    tensor_count: int = 0
    highest_rank: int = 0
    error: str | None = None  # the file could not be read
    seconds: float = 0.0
    issues: list = field(default_factory=list)  # target_check.Issue: ops, limits, dynamic dims, opset
    target: str | None = None
    mismatches: list[Mismatch] = field(default_factory=list)  # declarations inference contradicts
    from_declaration: list[TensorInfo] = field(default_factory=list)  # node outputs only the file types

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return 2
        return 1 if self.findings or self.issues or self.mismatches else 0


_WHERE = {"input": "graph inputs", "output": "graph outputs", "value_info": "value_info"}


def _disagree(declared: tuple, inferred: tuple) -> bool:
    """Different ranks, or a dim both know as a number with different values (symbolic dims are
    names, not facts: they never disagree)."""
    if len(declared) != len(inferred):
        return True
    return any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(declared, inferred))


def _cross_check(declared: list[Declaration], found: dict[tuple[str, str], TensorInfo]) -> list[Mismatch]:
    """Check each declaration against inference; where inference has no shape, adopt the
    declaration (rank from the file, marked "declared")."""
    mismatches = []
    for d in declared:
        info = found.get((d.graph, d.name))
        if info is None or d.shape is None:
            continue  # a declaration of a tensor the graph does not have, or of its type only
        if info.shape is None:
            info.shape, info.dtype, info.shape_source = d.shape, info.dtype or d.dtype, "declared"
            continue
        if _disagree(d.shape, info.shape):
            where = "" if d.graph == "main" else f" in {d.graph}"
            against = "its initializer" if info.shape_source == "initializer" else "shape inference"
            message = (f"'{d.name}'{where} is declared rank {len(d.shape)} {shape_text(d.shape)} in the file's "
                       f"{_WHERE[d.where]} but {against} gives rank {len(info.shape)} {shape_text(info.shape)}")
            mismatches.append(Mismatch(d.name, d.graph, d.where, list(d.shape), list(info.shape), message))
    return mismatches


def lint_model(model, max_rank: int = 4, path: str = "<model>", target=None) -> LintResult:
    """Lint an in-memory ModelProto: shape inference first (ignoring what the file declares),
    then every tensor is checked, every declaration is checked against inference, and with a
    target profile its ops, per-op limits, dynamic dims and opset. ``model`` is not changed."""
    start = time.perf_counter()
    if target is not None:
        max_rank = target.max_rank
    declared = declarations(model)
    with fresh_inference(model) as inferred:
        result = _lint_inferred(inferred, declared, max_rank, path, target)
    result.seconds = time.perf_counter() - start
    return result


def _lint_inferred(inferred, declared: list[Declaration], max_rank: int, path: str, target) -> LintResult:
    all_tensors = tensors(inferred)
    result = LintResult(path, max_rank, tensor_count=len(all_tensors), target=target.name if target else None)
    result.mismatches = _cross_check(declared, {(t.graph, t.name): t for t in all_tensors})
    result.highest_rank = max((t.rank for t in all_tensors if t.rank is not None), default=0)
    for info in all_tensors:
        if info.shape_source == "declared" and info.producer is not None:
            result.from_declaration.append(info)
        if info.rank is None:
            # A tensor that only appears as a node's input is produced elsewhere or is optional.
            if info.producer is not None:
                result.unknown.append(info)
        elif info.rank > max_rank:
            result.findings.append(info)
    if target is not None:
        from .target_check import check_target

        main = {t.name: t for t in all_tensors if t.graph == "main"}
        ranks = {name: t.rank for name, t in main.items() if t.rank is not None}
        # The graph's interface as the file declares it (a contradiction is E3D006), inference's
        # where the file gives no shape.
        io_shapes = {t.name: t.shape for t in main.values() if t.kind in ("input", "output")}
        io_shapes.update({d.name: d.shape for d in declared
                          if d.graph == "main" and d.where != "value_info" and d.shape is not None})
        result.issues = check_target(inferred, target, ranks, io_shapes)
    return result


def lint_file(path: str | Path, max_rank: int = 4, target=None) -> LintResult:
    """Lint an ONNX file; external weight files are not read (ranks come from the graph)."""
    try:
        model = load_onnx(path, with_data=False)
    except Edge3dError as exc:
        return LintResult(str(path), max_rank, error=str(exc))
    return lint_model(model, max_rank, str(path), target)
