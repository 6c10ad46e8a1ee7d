"""The activation memory a graph needs: bytes alive at each node when it runs in graph order.

A runtime keeps a node's output until its last consumer has run; views (Reshape and the like)
share their input's buffer. Summing what is alive after each node gives the peak a run must
hold beyond the weights, independent of any runtime's allocator. The lowering uses it twice: to
keep a Conv3d's gathered taps from raising the model's peak (``conv.choose_strategy``), and to
report the peak of the 5D and of the lowered model side by side (manifest ``activation_memory``).

Weights (initializers, Constant outputs) are not counted: both models hold the same ones. An
unknown dimension counts as 1, so a symbolic batch gives the figure for batch 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import onnx_ir as ir

if TYPE_CHECKING:
    import onnx

VIEWS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})  # outputs share the input's buffer


@dataclass
class LiveMemory:
    peak: int  # bytes
    at: str  # the node that first reaches the peak
    after: dict[ir.Node, int] = field(default_factory=dict)  # bytes alive once each node's outputs exist

    def to_dict(self) -> dict[str, int | str]:
        return {"peak_bytes": self.peak, "at": self.at}


def value_bytes(value: ir.Value) -> int:
    """Bytes of a tensor of ``value``'s inferred shape and type (unknown dims as 1; 0 if untyped)."""
    if value.shape is None or value.dtype is None:
        return 0
    count = 1
    for dim in value.shape.dims:
        count *= dim if isinstance(dim, int) else 1
    return int(count * value.dtype.itemsize)


def live_memory(graph: ir.Graph) -> LiveMemory:
    """Walk ``graph`` in order; a buffer lives from the node that makes it to the last node that
    uses it or any view of it (graph outputs to the end)."""
    nodes = list(graph)
    weights = {v for v in graph.initializers.values()}
    weights |= {out for node in nodes if node.op_type == "Constant" and not node.domain for out in node.outputs}
    buffer: dict[ir.Value, ir.Value] = {}  # a value → the value that owns its buffer
    last_use: dict[ir.Value, int] = {}
    end = len(nodes)

    def owner(value: ir.Value) -> ir.Value:
        return buffer.get(value, value)

    for index, node in enumerate(nodes):
        view = node.op_type in VIEWS and not node.domain and node.inputs and node.inputs[0] is not None
        for out in node.outputs:
            if view and node.inputs[0] not in weights:
                buffer[out] = owner(node.inputs[0])  # type: ignore[arg-type]
        for value in node.inputs:
            if value is not None and value not in weights:
                last_use[owner(value)] = index
    for value in graph.outputs:
        last_use[owner(value)] = end
    alive: dict[ir.Value, int] = {v: value_bytes(v) for v in graph.inputs if v not in weights}
    result = LiveMemory(sum(alive.values()), "inputs")
    for index, node in enumerate(nodes):
        for out in node.outputs:
            if out not in weights and owner(out) is out:
                alive[out] = value_bytes(out)
        total = sum(alive.values())
        result.after[node] = total
        if total > result.peak:
            result.peak, result.at = total, node.name or node.op_type
        for value in [v for v in alive if last_use.get(v, index) <= index]:
            del alive[value]
    return result


def live_memory_of(model: onnx.ModelProto) -> LiveMemory:
    """``live_memory`` of a shape-inferred ``onnx.ModelProto`` (its weights are not read)."""
    return live_memory(ir.from_proto(model).graph)
