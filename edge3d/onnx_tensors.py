"""One walk over an ONNX graph that lint, inspect and export share.

Every tensor is listed once with what shape inference knows of it (symbolic dims are kept as
names: the rank is what matters), the node that produces it and the nodes that consume it,
including tensors in the subgraphs of If/Loop/Scan nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, first_line

Dim = int | str | None


@dataclass
class TensorInfo:
    name: str
    kind: str  # "input", "output", "initializer" or "intermediate"
    shape: tuple[Dim, ...] | None  # None: rank unknown
    dtype: str | None
    producer: tuple[str, str] | None = None  # (node name, op type)
    consumers: list[tuple[str, str]] = field(default_factory=list)
    graph: str = "main"

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


def load_onnx(path: str | Path, with_data: bool = False):
    """Read an ONNX file; weights in external files are read only when asked for."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; check the path to the ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=with_data)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have several types
        raise InputError(f"{path} is not a readable ONNX model ({first_line(exc)})") from None
    if not model.graph.node and not model.graph.input:
        raise InputError(f"{path} is not an ONNX model (no graph found); check the file")
    return model


def default_opset(model) -> int:
    """The model's opset of the default ONNX domain (0 when it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def graph_inputs(graph) -> list:
    """The graph's real inputs: its ``input`` entries that are not initializers (weights that
    older exporters also list as inputs)."""
    initializers = {i.name for i in graph.initializer}
    return [v for v in graph.input if v.name not in initializers]


def infer_shapes(model):
    """Shape inference that never raises: a graph it cannot fully type is still walked."""
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - partial information is better than none for a linter
        return model


def shape_of(value_info) -> tuple[tuple[Dim, ...] | None, str | None]:
    import onnx

    t = value_info.type
    if not t.HasField("tensor_type"):
        return None, None
    tt = t.tensor_type
    dtype = onnx.TensorProto.DataType.Name(tt.elem_type).lower() if tt.elem_type else None
    if not tt.HasField("shape"):
        return None, dtype
    dims = tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
    )
    return dims, dtype


def tensors(model) -> list[TensorInfo]:
    """Every tensor of the (already shape-inferred) model, subgraphs included."""
    out: list[TensorInfo] = []
    _walk(model.graph, "main", out)
    return out


def _walk(graph, path: str, out: list[TensorInfo]) -> None:
    import onnx

    table: dict[str, TensorInfo] = {}

    def add(name, kind, shape, dtype):
        if not name:
            return None
        info = table.get(name)
        if info is None:
            info = table[name] = TensorInfo(name, kind, shape, dtype, graph=path)
        elif info.shape is None and shape is not None:
            info.shape, info.dtype = shape, dtype
        return info

    for init in graph.initializer:
        add(init.name, "initializer", tuple(init.dims), onnx.TensorProto.DataType.Name(init.data_type).lower())
    for value in graph.input:
        add(value.name, "input", *shape_of(value))
    for value in graph.output:
        info = add(value.name, "output", *shape_of(value))
        if info is not None and info.kind != "input":
            info.kind = "output"
    for value in graph.value_info:
        add(value.name, "intermediate", *shape_of(value))
    for index, node in enumerate(graph.node):
        node_name = node.name or f"{node.op_type}_{index}"
        for name in node.input:
            if name:
                add(name, "intermediate", None, None).consumers.append((node_name, node.op_type))
        for name in node.output:
            if name:
                add(name, "intermediate", None, None).producer = (node_name, node.op_type)
        for attr in node.attribute:
            subgraphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for i, sub in enumerate(subgraphs):
                _walk(sub, f"{path}/{node_name}.{attr.name}{i if len(subgraphs) > 1 else ''}", out)
    out.extend(table.values())
