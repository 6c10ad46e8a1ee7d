"""Replace the 3D convolutions of an ONNX graph by 4D blocks: ``rewrite.py``'s rewrite for a model
from any framework, where no trainable module exists (so calibration only, no distillation).

Each eligible Conv is fitted in graph order as a Conv3d is there (projection from its kernel, then
least squares where that does better on held-out clips), on the input the partly rewritten graph
gives it and against the original graph's output, both computed by ONNX Runtime. The fitted block
is exported on its own and its nodes take the Conv's place, reading and writing the Conv's values,
so the rest of the graph is untouched.
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ..errors import InputError, first_line
from ..log import native_output_muted
from ..onnx_tensors import default_opset, graph_inputs
from . import BLOCKS, STRIDE_MODES, Geometry
from .rewrite import LayerReport, RewriteReport, count_macs, fitted_block
from .structures import Block

EXPORTER_MAX_OPSET = 20  # the highest opset torch's TorchScript exporter writes
_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


@dataclass
class _Conv:
    """A Conv node with a stored rank-5 weight, and what the rewrite needs of it."""

    name: str
    x: str  # the input value
    y: str  # the output value
    weight: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    stored: list[str]  # the weight's (and bias's) value names: dropped with the Conv when nothing else reads them
    reason: str = ""

    @property
    def geometry(self) -> Geometry:
        cout, cin = self.weight.shape[:2]
        kt, kh, kw = self.weight.shape[2:]
        return Geometry(cin, cout, (kt, kh, kw), self.stride, self.padding)


def conv_ineligible(node: onnx.NodeProto, weight_shape: tuple[int, ...]) -> str:
    """Why a 3D Conv node keeps its form ('' when a block can replace it): ``rewrite.ineligible``
    read from the node's attributes."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    kt, kh, kw = attrs.get("kernel_shape", weight_shape[2:])
    group = attrs.get("group", 1)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pads = list(attrs.get("pads", [0] * 6))
    if kt == kh == kw == 1:
        return "1x1x1 kernel: pointwise, already 4D-friendly (a Conv2d on frames)"
    if kt == 1:
        return "kt = 1: already spatial-only (a Conv2d on frames)"
    if kh == kw == 1:
        return "kh = kw = 1: already temporal-only (a (kt, 1) Conv2d on the time layout)"
    if group != 1:
        return f"groups = {group}: the blocks are dense; grouped and depthwise kernels are already cheap"
    if any(d != 1 for d in attrs.get("dilations", [1, 1, 1])):
        return "dilated kernel"
    if auto_pad != "NOTSET":
        return f"padding auto_pad={auto_pad}"
    if pads[:3] != pads[3:]:
        return f"asymmetric pads {pads}: the blocks pad both ends alike"
    if any(k % 2 == 0 or p != k // 2 for k, p in zip((kt, kh, kw), pads)):
        return "not a 'same'-padded odd kernel: the two branches would produce different sizes"
    return ""


def rewrite_onnx(model: onnx.ModelProto, block: str, stride_mode: str, calib: list[np.ndarray],
                 heldout: list[np.ndarray], example: np.ndarray) -> tuple[onnx.ModelProto, RewriteReport]:
    """The model with its eligible 3D Convs replaced by ``block``, and the report of the rewrite.
    Clips are float32 arrays of the model's (static) input shape; ``calib`` empty: projection only."""
    if block not in BLOCKS:
        raise InputError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
    if stride_mode not in STRIDE_MODES:
        raise InputError(f"unknown stride mode {stride_mode!r}; choose aligned or paper")
    original = onnx.shape_inference.infer_shapes(model)
    opset = _export_opset(original)
    clips = calib + heldout + [example]
    feed = _clip_input(original, clips)
    rewritten = copy.deepcopy(original)
    report = RewriteReport(block, stride_mode, "least-squares" if calib else "projection")
    convs = _convs(original)
    report.layers = [LayerReport(c.name, list(c.weight.shape[2:]), list(c.stride), replaced=False, reason=c.reason)
                     for c in convs]
    # In graph order, each block is fitted on what the blocks before it (already in place) give
    # it, against the original layer's output: it also corrects what those blocks got wrong.
    for conv, layer in zip(convs, report.layers):
        if layer.reason:
            continue
        inputs = _capture(rewritten, feed, conv.x, clips)
        outputs = _capture(original, feed, conv.y, clips)
        new = fitted_block(block, stride_mode, conv.geometry, torch.tensor(conv.weight),
                           None if conv.bias is None else torch.tensor(conv.bias), layer, inputs, outputs,
                           len(calib), len(heldout))
        if new is None:
            continue
        layer.replaced = True
        layer.params_before = conv.weight.size + (0 if conv.bias is None else conv.bias.size)
        layer.params_after = sum(p.numel() for p in new.parameters())
        layer.macs_before = outputs[-1].numel() * math.prod(conv.weight.shape[1:])
        layer.macs_after = count_macs(new, inputs[-1])
        _splice(rewritten.graph, conv, _block_graph(new, inputs[-1], opset, block))
        del inputs, outputs
    _check(rewritten, opset)
    report.model = _model_summary(original, rewritten, feed, heldout)
    report.model["replaced_layers"] = sum(layer.replaced for layer in report.layers)
    return rewritten, report


def _export_opset(model: onnx.ModelProto) -> int:
    """The opset the blocks are written at: the model's own, so that its nodes mean what they say there."""
    opset = default_opset(model)
    if opset == 0:
        raise InputError("the model imports no opset of the default ONNX domain; export it again")
    return min(opset, EXPORTER_MAX_OPSET)


def _clip_input(model: onnx.ModelProto, clips: list[np.ndarray]) -> str:
    """The name of the model's one clip input, once the clips are known to fit it."""
    inputs = graph_inputs(model.graph)
    if len(inputs) != 1:
        raise InputError(f"the rewrite takes a model with one input (a clip); this one has {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    if len(shape) != 5 or None in shape:
        raise InputError(f"the model's input must be a clip (B, C, T, H, W) of fixed size; it is {shape}")
    for clip in clips:
        if tuple(clip.shape) != shape or clip.dtype != np.float32:
            raise InputError(f"a clip of shape {tuple(clip.shape)} ({clip.dtype}) does not fit the model's input "
                             f"{shape} (float32)")
    return inputs[0].name


def _convs(model: onnx.ModelProto) -> list[_Conv]:
    """The main graph's Conv nodes with a rank-5 weight, in graph (topological) order."""
    graph = model.graph
    stored = {t.name: t for t in graph.initializer}
    stored.update({n.output[0]: n.attribute[0].t for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.input]}
    found = []
    for node in graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            continue
        w = node.input[1]
        if w not in stored:
            if ranks.get(w) == 5:
                found.append(_computed_weight(node))
            continue
        if len(stored[w].dims) == 5:
            found.append(_stored_conv(node, stored))
    return found


def _computed_weight(node: onnx.NodeProto) -> _Conv:
    """A 3D Conv whose weight the graph computes: reported, never replaced."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    empty = np.zeros((0, 0, *attrs.get("kernel_shape", [0, 0, 0])), np.float32)  # the kernel's size, for the report
    return _Conv(_layer_name(node), node.input[0], node.output[0], empty, None, tuple(attrs.get("strides", [1] * 3)),
                 (0, 0, 0), [], reason="the weight is computed in the graph, not stored: there is no kernel to project")


def _stored_conv(node: onnx.NodeProto, stored: dict[str, onnx.TensorProto]) -> _Conv:
    weight = numpy_helper.to_array(stored[node.input[1]])
    bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    bias = numpy_helper.to_array(stored[bias_name]) if bias_name in stored else None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    stride = tuple(attrs.get("strides", [1, 1, 1]))
    padding = tuple(attrs.get("pads", [0] * 6)[:3])
    reason = conv_ineligible(node, weight.shape)
    if not reason and weight.dtype != np.float32:
        reason = f"{weight.dtype} weights: the blocks are fitted and written in float32"
    if not reason and bias_name and bias is None:
        reason = "the bias is computed in the graph, not stored"
    return _Conv(_layer_name(node), node.input[0], node.output[0], weight, bias, stride, padding,
                 [n for n in (node.input[1], bias_name) if n], reason)


def _layer_name(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


# -- running parts of the graph ------------------------------------------------------------------

def _capture(model: onnx.ModelProto, feed: str, value: str, clips: list[np.ndarray]) -> list[torch.Tensor]:
    """``value`` on each clip, computed by only the nodes it depends on."""
    if value == feed:
        return [torch.from_numpy(clip) for clip in clips]
    session = _session(_upto(model, value))
    return [torch.from_numpy(session.run(None, {feed: clip})[0]) for clip in clips]


def _upto(model: onnx.ModelProto, value: str) -> onnx.ModelProto:
    """A model of the nodes ``value`` depends on, with ``value`` as its output."""
    graph = model.graph
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    kept: set[int] = set()
    seen: set[str] = set()
    stack = [value]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in producer and producer[name] not in kept:
            kept.add(producer[name])
            stack.extend(_reads(graph.node[producer[name]]))
    part = onnx.helper.make_graph(
        [graph.node[i] for i in sorted(kept)], graph.name, graph_inputs(graph),
        [onnx.helper.make_tensor_value_info(value, onnx.TensorProto.FLOAT, None)],
        [t for t in graph.initializer if t.name in seen])
    return onnx.helper.make_model(part, opset_imports=model.opset_import, ir_version=model.ir_version,
                                  functions=model.functions)


def _reads(node: onnx.NodeProto) -> set[str]:
    """The values a node reads, including those its subgraphs (If, Loop, Scan) take from outside."""
    names = {n for n in node.input if n}
    for attr in node.attribute:
        for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
            for inner in sub.node:
                names |= _reads(inner)
    return names


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about the graph's own unused initializers are not ours to show
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


# -- splicing a block in --------------------------------------------------------------------------

def _block_graph(block: Block, x: torch.Tensor, opset: int, name: str) -> onnx.GraphProto:
    """The block alone as an ONNX graph at the model's opset."""
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), native_output_muted():  # its deprecation notice, its IR dump on an error
            warnings.simplefilter("ignore")
            torch.onnx.export(  # the TorchScript exporter writes to a file object too; torch types only paths
                block, (x,), buffer, dynamo=False, opset_version=opset,  # type: ignore[arg-type]
                do_constant_folding=True, input_names=["x"], output_names=["y"])
    except Exception as exc:  # noqa: BLE001 - the exporter raises several types for an op it cannot write
        raise InputError(f"the {name} block cannot be written at the model's opset {opset} ({first_line(exc)}); "
                         "convert the model to a later opset first (onnx.version_converter)") from None
    return onnx.load_from_string(buffer.getvalue()).graph


def _splice(graph: onnx.GraphProto, conv: _Conv, block: onnx.GraphProto) -> None:
    """Put the block's nodes where the Conv node was, reading its input and writing its output,
    under a prefix no name of the graph has; then drop the Conv's weights if nothing else reads them."""
    prefix = _free_prefix(graph, f"{conv.name}/")
    names = {block.input[0].name: conv.x, block.output[0].name: conv.y}
    rename = lambda name: names.get(name, prefix + name) if name else name  # noqa: E731
    nodes = []
    for i, node in enumerate(block.node):
        new = copy.deepcopy(node)
        new.name = prefix + (node.name or f"node{i}")
        new.input[:] = [rename(n) for n in node.input]
        new.output[:] = [rename(n) for n in node.output]
        nodes.append(new)
    at = next(i for i, node in enumerate(graph.node) if conv.y in node.output)
    tail = [copy.deepcopy(node) for node in graph.node[at + 1:]]
    del graph.node[at:]
    graph.node.extend(nodes + tail)
    for tensor in block.initializer:
        new_tensor = graph.initializer.add()
        new_tensor.CopyFrom(tensor)
        new_tensor.name = rename(tensor.name)
    _drop_unread(graph, set(conv.stored))


def _free_prefix(graph: onnx.GraphProto, base: str) -> str:
    """``base``, numbered if needed, such that no name in the graph starts with it."""
    taken = [n.name for n in graph.node] + [v for n in graph.node for v in (*n.input, *n.output)] + \
        [t.name for t in graph.initializer]
    prefix, count = base, 1
    while any(name.startswith(prefix) for name in taken):
        prefix, count = f"{base}{count}/", count + 1
    return prefix


def _drop_unread(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove the stored values in ``names`` that no node and no graph output reads (another Conv
    may share a weight)."""
    read = set().union(*(_reads(n) for n in graph.node)) | {o.name for o in graph.output}
    unread = names - read
    for field in (graph.initializer, graph.input, graph.value_info):
        for i in reversed(range(len(field))):
            if field[i].name in unread:
                del field[i]
    for i in reversed(range(len(graph.node))):
        node = graph.node[i]
        if node.op_type == "Constant" and node.output[0] in unread:
            del graph.node[i]


def _check(model: onnx.ModelProto, opset: int) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise InputError(f"the rewritten graph fails ONNX's checker ({first_line(exc)}); the blocks are written at "
                         f"opset {opset}: convert the model to a later opset first") from None


# -- the model's figures --------------------------------------------------------------------------

def _model_summary(original: onnx.ModelProto, rewritten: onnx.ModelProto, feed: str,
                   heldout: list[np.ndarray]) -> dict:
    summary: dict = {"params_before": _params(original), "params_after": _params(rewritten),
                     "macs_before": _macs(original), "macs_after": _macs(rewritten)}
    if heldout:
        before, after = _session(original), _session(rewritten)
        agree = rows = 0
        for clip in heldout:
            a, b = before.run(None, {feed: clip})[0], after.run(None, {feed: clip})[0]
            if a.ndim == 2:
                agree += int((a.argmax(1) == b.argmax(1)).sum())
                rows += a.shape[0]
        summary["heldout_clips"] = len(heldout)
        summary["top1_agreement"] = agree / rows if rows else None
    return summary


def _stored(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        if node.op_type == "Constant":
            yield from (a.t for a in node.attribute if a.name == "value")


def _params(model: onnx.ModelProto) -> int:
    """Elements of the stored float tensors: the weights, as a module's parameters count them."""
    return sum(math.prod(t.dims) for t in _stored(model.graph) if t.data_type in _FLOATS)


def _macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of the Conv, Gemm and MatMul nodes, from the shapes inference gives."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = inferred.graph
    shapes = {t.name: list(t.dims) for t in _stored(graph)}
    for v in [*graph.input, *graph.value_info, *graph.output]:
        dims = v.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = [d.dim_value for d in dims]
    return sum(_node_macs(node, shapes) for node in graph.node)


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    a, out = shapes.get(node.input[0]) if node.input else None, shapes.get(node.output[0])
    if a is None or out is None:
        return 0
    if node.op_type == "Conv" and node.input[1] in shapes:
        return math.prod(out) * math.prod(shapes[node.input[1]][1:])
    if node.op_type == "Gemm":
        trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
        return math.prod(out) * a[0 if trans_a else 1]
    if node.op_type == "MatMul":
        return math.prod(out) * a[-1]
    return 0
