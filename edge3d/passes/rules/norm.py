"""Normalisations and softmax over one axis of a rank-5 value."""

from __future__ import annotations

import onnx_ir as ir

from ..context import LowerContext, Unsupported
from ..registry import register


@register("BatchNormalization")
def lower_batch_norm(ctx: LowerContext, node: ir.Node) -> str:
    """Per-channel affine in inference: the same node on frames."""
    if any(o is not None and o.uses() for o in node.outputs[1:]):
        raise Unsupported("training-mode BatchNormalization (running statistics outputs are used)")
    x = node.inputs[0]
    assert x is not None
    y = ctx.op("BatchNormalization", [ctx.frames(x), *node.inputs[1:]], node.attributes)
    ctx.set_frames(node.outputs[0], y)
    return "BatchNormalization on frames"


@register("InstanceNormalization")
def lower_instance_norm(ctx: LowerContext, node: ir.Node) -> str:
    """Statistics over T, H, W per (batch, channel): the time layout keeps them on axes 2, 3."""
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    b, c, t, h, w = ctx.clip_dims(x)
    y = ctx.op("InstanceNormalization", [ctx.time(x), *node.inputs[1:]], node.attributes)
    ctx.set_canonical(out, y, (b, c, t, h * w))
    return "InstanceNormalization on the time layout"


@register("Softmax", "LogSoftmax", "Hardmax", "LpNormalization")
def lower_softmax(ctx: LowerContext, node: ir.Node) -> str:
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    dims = ctx.clip_dims(x)
    default = 1 if node.op_type == "LpNormalization" else -1
    axis = node.attributes.get_int("axis", default) % 5
    if node.op_type != "LpNormalization" and ctx.opset < 13:
        raise Unsupported(f"{node.op_type} before opset 13 normalises over flattened axes; re-export at opset ≥ 13")
    attrs = {**node.attributes, "axis": None}
    if axis == 2:
        b, c, t, h, w = dims
        y = ctx.op(node.op_type, [ctx.time(x)], {**attrs, "axis": 2})
        ctx.set_canonical(out, y, (b, c, t, h * w))
        return f"{node.op_type} over T on the time layout"
    if axis == 0:
        raise Unsupported(f"{node.op_type} over the batch axis")
    y = ctx.op(node.op_type, [ctx.frames(x)], {**attrs, "axis": {1: 1, 3: 2, 4: 3}[axis]})
    ctx.set_frames(out, y)
    return f"{node.op_type} on frames"
