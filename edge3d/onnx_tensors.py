"""One walk over an ONNX graph that lint, inspect and export share.

Every tensor is listed once with what shape inference knows of it (symbolic dims are kept as
names: the rank is what matters), the node that produces it and the nodes that consume it,
including tensors in the subgraphs of If/Loop/Scan nodes.
"""

from __future__ import annotations

import contextlib
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
    # Where the shape comes from: "initializer", "input" (the graph's declared interface),
    # "inferred" (the walked model's value_info or outputs: shape inference's for a model from
    # ``fresh_inference``) or "declared" (set by lint: only the file's declaration knows it).
    shape_source: str | None = None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


def load_onnx(path: str | Path, with_data: bool = False):
    """Read an ONNX file; weights in external files are read only when asked for."""
    import onnx

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; pass the ONNX model file itself")
    if not path.is_file():
        raise InputError(f"{path}: no such file; check the path to the ONNX model")
    if _serialization_format(path) == "protobuf":
        problem = protobuf_problem(path)
        if problem is not None:
            raise InputError(f"{path} is not a readable ONNX model ({problem})")
    try:
        model = onnx.load(str(path), load_external_data=with_data)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have several types
        raise InputError(f"{path} is not a readable ONNX model ({first_line(exc)})") from None
    if not model.graph.node and not model.graph.input:
        raise InputError(f"{path} is not an ONNX model (no graph found); check the file")
    return model


def _serialization_format(path: Path) -> str:
    """The format ``onnx.load`` reads ``path`` in: from its extension, protobuf by default."""
    from onnx.serialization import registry

    return registry.get_format_from_file_extension(path.suffix) or "protobuf"


# ModelProto's fields: number -> wire type (0 varint, 2 length-delimited).
MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_MODEL_FIELD_NAMES = {1: "ir_version", 2: "producer_name", 3: "producer_version", 4: "domain", 5: "model_version",
                      6: "doc_string", 7: "graph", 8: "opset_import", 14: "metadata_props", 20: "training_info",
                      25: "functions", 26: "configuration"}
_MAX_FIELDS = 4096  # top-level fields walked; a ModelProto has a dozen or so


def _varint(f) -> int | None:
    value = 0
    for shift in range(0, 70, 7):
        byte = f.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    return None  # more than 10 bytes: not a varint


def protobuf_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be a binary ONNX ModelProto, from its top-level field headers alone
    (None: it may be one). The first field must be one of ModelProto's with its wire type, and
    every top-level field must be well formed and end inside the file; a length-delimited field
    (the graph, the bulk of the file) is skipped with a seek, so a huge file that is not ONNX
    (a zip, a pickle, text) is rejected after reading a few bytes, and no more than a few hundred
    bytes of a real model are read here."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(0)
        for index in range(_MAX_FIELDS):
            offset = f.tell()
            if offset == size:
                return None
            key = _varint(f)
            number, wire = (key >> 3, key & 7) if key is not None else (0, -1)
            if index == 0 and MODEL_FIELDS.get(number) != wire:
                return f"its first bytes {head!r} do not start an ONNX protobuf"
            if number == 0 or wire not in (0, 1, 2, 5):
                return f"no protobuf field at byte {offset}"
            if number in MODEL_FIELDS and MODEL_FIELDS[number] != wire:
                return f"field {_MODEL_FIELD_NAMES[number]} at byte {offset} has the wrong protobuf wire type"
            if wire == 0:
                length = 0 if _varint(f) is not None else size
            elif wire == 2:
                declared = _varint(f)
                length = size if declared is None else declared
            else:
                length = 8 if wire == 1 else 4
            if f.tell() + length > size:
                return (f"field {_MODEL_FIELD_NAMES.get(number, number)} at byte {offset} runs past the end of "
                        f"the file ({size} bytes): the file is truncated or not ONNX")
            f.seek(length, 1)
    return None


def default_opset(model) -> int:
    """The model's opset of the default ONNX domain (0 when it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def graph_inputs(graph) -> list:
    """The graph's real inputs: its ``input`` entries that are not initializers (weights that
    older exporters also list as inputs)."""
    initializers = {i.name for i in graph.initializer}
    return [v for v in graph.input if v.name not in initializers]


@contextlib.contextmanager
def fresh_inference(model):
    """Shape inference from the graph alone, for checks that must not trust the file: yields the
    inferred model, valid inside the ``with``.

    The file's ``value_info`` and the shapes it declares for graph outputs (in subgraphs too) are
    set aside, so that a wrong declaration can neither hide a tensor's real rank nor stop
    inference; graph inputs keep their declarations: they are the interface. What inference
    cannot type has no shape (compare with ``declarations(model)``). No copy of the weights is
    made, and ``model`` is as it was once the ``with`` ends."""
    import onnx

    saved = _set_aside_declarations(model.graph)
    try:
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception:  # noqa: BLE001 - partial information is better than none for a linter
            inferred = model  # without its declarations until the with ends: what the graph alone says
        yield inferred
    finally:
        _put_back(saved)


def _set_aside_declarations(graph) -> list:
    import onnx

    saved = []
    for g in _graphs(graph):
        value_info = onnx.GraphProto()
        value_info.value_info.extend(g.value_info)
        del g.value_info[:]
        output_types = []
        for value in g.output:
            output_types.append(onnx.TypeProto())
            output_types[-1].CopyFrom(value.type)
            if value.type.HasField("tensor_type"):
                value.type.tensor_type.ClearField("shape")
        saved.append((g, value_info, output_types))
    return saved


def _put_back(saved: list) -> None:
    for g, value_info, output_types in saved:
        g.value_info.extend(value_info.value_info)
        for value, kind in zip(g.output, output_types):
            value.type.CopyFrom(kind)


def _graphs(graph):
    """``graph`` and all its subgraphs (If/Loop/Scan bodies), at any depth."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                yield from _graphs(sub)


def _subgraphs(node, node_name: str, path: str):
    """(path, subgraph) of each graph attribute of ``node``, named as ``TensorInfo.graph`` names them."""
    for attr in node.attribute:
        subgraphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for i, sub in enumerate(subgraphs):
            yield f"{path}/{node_name}.{attr.name}{i if len(subgraphs) > 1 else ''}", sub


@dataclass
class Declaration:
    """A shape the file declares for a tensor."""

    name: str
    graph: str
    where: str  # "input", "output" or "value_info"
    shape: tuple[Dim, ...] | None
    dtype: str | None


def declarations(model) -> list[Declaration]:
    """Every tensor shape the file declares (graph inputs, outputs, value_info), subgraphs included."""
    out: list[Declaration] = []

    def walk(graph, path):
        for where, values in (("input", graph.input), ("output", graph.output), ("value_info", graph.value_info)):
            for value in values:
                if value.name:
                    out.append(Declaration(value.name, path, where, *shape_of(value)))
        for index, node in enumerate(graph.node):
            for sub_path, sub in _subgraphs(node, node.name or f"{node.op_type}_{index}", path):
                walk(sub, sub_path)

    walk(model.graph, "main")
    return out


def shape_text(shape) -> str:
    """``(1, 3, N, ?)``; ``?`` for an unknown shape or dim."""
    if shape is None:
        return "?"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


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

    def add(name, kind, shape, dtype, source=None):
        if not name:
            return None
        info = table.get(name)
        if info is None:
            info = table[name] = TensorInfo(name, kind, shape, dtype, graph=path)
        elif info.shape is None and shape is not None:
            info.shape, info.dtype = shape, dtype
        else:
            return info
        if shape is not None:
            info.shape_source = source
        return info

    for init in graph.initializer:
        add(init.name, "initializer", tuple(init.dims), onnx.TensorProto.DataType.Name(init.data_type).lower(),
            "initializer")
    for value in graph.input:
        add(value.name, "input", *shape_of(value), "input")
    for value in graph.output:
        info = add(value.name, "output", *shape_of(value), "inferred")
        if info is not None and info.kind != "input":
            info.kind = "output"
    for value in graph.value_info:
        add(value.name, "intermediate", *shape_of(value), "inferred")
    for index, node in enumerate(graph.node):
        node_name = node.name or f"{node.op_type}_{index}"
        for name in node.input:
            if name:
                add(name, "intermediate", None, None).consumers.append((node_name, node.op_type))
        for name in node.output:
            if name:
                add(name, "intermediate", None, None).producer = (node_name, node.op_type)
        for sub_path, sub in _subgraphs(node, node_name, path):
            _walk(sub, sub_path, out)
    out.extend(table.values())
