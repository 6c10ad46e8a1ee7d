"""Model statistics for `edge3d inspect`: what is 3D in a model and what it costs."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from .onnx_tensors import TensorInfo, default_opset, fresh_inference, tensors


@dataclass
class ModelStats:
    ops: Counter = field(default_factory=Counter)  # every op type
    ops_3d: Counter = field(default_factory=Counter)  # ops touching a rank-5 (or higher) tensor
    params: int = 0
    macs: int = 0
    macs_3d: int = 0
    above_rank4: int = 0  # tensors of rank 5 or more
    max_rank: int = 0
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    opset: int = 0

    def to_dict(self) -> dict:
        io = lambda ts: [{"name": t.name, "shape": list(t.shape) if t.shape else None, "dtype": t.dtype} for t in ts]  # noqa: E731
        return {
            "opset": self.opset, "params": self.params, "macs": self.macs, "macs_3d": self.macs_3d,
            "tensors_above_rank4": self.above_rank4, "max_rank": self.max_rank,
            "ops": dict(self.ops.most_common()), "ops_3d": dict(self.ops_3d.most_common()),
            "inputs": io(self.inputs), "outputs": io(self.outputs),
        }


def inspect_file(path, **load) -> tuple[str, ModelStats]:
    """Load any model file `edge3d export` takes, export it to ONNX as it is (rank 5 kept) and
    summarise it; returns the kind of file and the statistics."""
    from .frontend.load import load_model
    from .frontend.to_onnx import export_to_onnx, prepare

    loaded = load_model(path, **load)
    return loaded.kind, model_stats(prepare(export_to_onnx(loaded).model, simplify=False))


def _prod(shape) -> int | None:
    if shape is None or any(not isinstance(d, int) for d in shape):
        return None
    return math.prod(shape)


def model_stats(model) -> ModelStats:
    """Ranks and shapes from the graph alone (``fresh_inference``): a file's declared shapes may lie."""
    with fresh_inference(model) as inferred:
        return _stats(inferred)


def _stats(model) -> ModelStats:
    info = {t.name: t for t in tensors(model) if t.graph == "main"}
    stats = ModelStats(opset=default_opset(model))
    stats.params = sum(_prod(tuple(i.dims)) or 0 for i in model.graph.initializer)
    stats.inputs = [info[v.name] for v in model.graph.input if v.name in info and info[v.name].kind == "input"]
    stats.outputs = [info[v.name] for v in model.graph.output if v.name in info]
    ranks = [t.rank for t in info.values() if t.rank is not None]
    stats.max_rank = max(ranks, default=0)
    stats.above_rank4 = sum(r > 4 for r in ranks)
    for node in model.graph.node:
        stats.ops[node.op_type] += 1
        shapes = [info[n].shape if n in info else None for n in list(node.input) + list(node.output) if n]
        is_3d = any(s is not None and len(s) >= 5 for s in shapes)
        if is_3d:
            stats.ops_3d[node.op_type] += 1
        macs = _node_macs(node, info)
        stats.macs += macs
        if is_3d:
            stats.macs_3d += macs
    return stats


def _node_macs(node, info: dict[str, TensorInfo]) -> int:
    """Multiply-accumulates of the ops that dominate a video model's cost."""
    def shape(i, io="input"):
        names = node.input if io == "input" else node.output
        return info[names[i]].shape if len(names) > i and names[i] in info else None

    if node.op_type in ("Conv", "ConvTranspose"):  # output (Conv) or input (ConvTranspose) × kernel taps
        size, weight = _prod(shape(0, "output") if node.op_type == "Conv" else shape(0)), shape(1)
        per_element = _prod(weight[1:]) if weight else None
        return size * per_element if size and per_element else 0
    if node.op_type in ("Gemm", "MatMul"):
        out, a = _prod(shape(0, "output")), shape(0)
        if out and a and isinstance(a[-1], int):
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[0] if (node.op_type == "Gemm" and trans_a) else a[-1]
            return out * k
    return 0
