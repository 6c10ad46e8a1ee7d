"""The rank lint: every tensor whose rank exceeds what the target runtime accepts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Edge3dError
from ..onnx_tensors import TensorInfo, infer_shapes, load_onnx, tensors

RULE_RANK = "E3D001"


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

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return 2
        return 1 if self.findings or self.issues else 0


def lint_model(model, max_rank: int = 4, path: str = "<model>", target=None) -> LintResult:
    """Lint an in-memory ModelProto: shape inference first, then every tensor is checked, and
    with a target profile its ops, per-op limits, dynamic dims and opset."""
    start = time.perf_counter()
    inferred = infer_shapes(model)
    all_tensors = tensors(inferred)
    if target is not None:
        max_rank = target.max_rank
    result = LintResult(path, max_rank, tensor_count=len(all_tensors), target=target.name if target else None)
    result.highest_rank = max((t.rank for t in all_tensors if t.rank is not None), default=0)
    for info in all_tensors:
        if info.rank is None:
            # A tensor that only appears as a node's input is produced elsewhere or is optional.
            if info.producer is not None:
                result.unknown.append(info)
        elif info.rank > max_rank:
            result.findings.append(info)
    if target is not None:
        from .target_check import check_target

        ranks = {t.name: t.rank for t in all_tensors if t.graph == "main" and t.rank is not None}
        result.issues = check_target(inferred, target, ranks)
    result.seconds = time.perf_counter() - start
    return result


def lint_file(path: str | Path, max_rank: int = 4, target=None) -> LintResult:
    """Lint an ONNX file; external weight files are not read (ranks come from the graph)."""
    try:
        model = load_onnx(path, with_data=False)
    except Edge3dError as exc:
        return LintResult(str(path), max_rank, error=str(exc))
    return lint_model(model, max_rank, str(path), target)
