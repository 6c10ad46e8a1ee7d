"""Normalisations and softmax over one axis of a rank-5 value."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..context import LowerContext, Unsupported, frames_dims
from ..registry import register
from .reduce import reduce_op


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


def group_norm_frames(ctx: LowerContext, x: ir.Value, groups: int, eps: float,
                      scale: np.ndarray | None, bias: np.ndarray | None) -> ir.Value:
    """GroupNorm of a clip on its frames: statistics over (T, C/G·H·W) of the (B, T, G, C/G·H·W)
    view of the frames, so neither the input nor the output changes layout. ``scale`` and
    ``bias`` hold one value per group (None: 1 and 0)."""
    b, c, t, h, w = ctx.clip_dims(x)
    if c % groups:
        raise Unsupported(f"{c} channels do not split into {groups} groups")
    grouped = ctx.reshape(ctx.frames(x), (b, t, groups, c // groups * h * w))
    mean = _frame_then_time_mean(ctx, grouped, t)
    centred = ctx.op("Sub", [grouped, mean])
    var = _frame_then_time_mean(ctx, ctx.op("Mul", [centred, centred]), t)
    eps_value = ctx.const(np.asarray(eps, np.float32))
    y = ctx.op("Div", [centred, ctx.op("Sqrt", [ctx.op("Add", [var, eps_value])])])
    if scale is not None:
        y = ctx.op("Mul", [y, ctx.const(scale.reshape(1, 1, groups, 1).astype(np.float32))])
    if bias is not None:
        y = ctx.op("Add", [y, ctx.const(bias.reshape(1, 1, groups, 1).astype(np.float32))])
    return ctx.reshape(y, frames_dims((b, c, t, h, w)))


def _frame_then_time_mean(ctx: LowerContext, grouped: ir.Value, t: int) -> ir.Value:
    """The mean over axes 1 and 3 of (B, T, G, N): within each frame, then over frames. ONNX
    Runtime's ReduceMean over both axes at once sums them in one float32 run, ~30× less
    accurate on a 32k-value group than two short sums; the second is a ReduceSum and a scale,
    so graph simplifiers do not fuse the two back into one."""
    per_frame = reduce_op(ctx, "ReduceMean", grouped, [3])
    total = reduce_op(ctx, "ReduceSum", per_frame, [1])
    return ctx.op("Mul", [total, ctx.const(np.asarray(1.0 / t, np.float32))])


def instance_norm_groups(ctx: LowerContext, node: ir.Node) -> str | None:
    """``Reshape(x, (B, G, -1))`` → ``InstanceNormalization`` → ``Reshape`` back to x's shape —
    how exporters write GroupNorm — lowered as one GroupNorm on frames (the nodes after this
    Reshape are absorbed). None when ``node`` does not start that pattern."""
    x, out = node.inputs[0], node.outputs[0]
    if x is None or ctx.dims(x) is None or len(ctx.dims(x) or ()) != 5 or x.dtype != ir.DataType.FLOAT:
        return None
    rep = ctx.reps.get(x)
    out_dims = ctx.dims(out)
    uses = list(out.uses())
    if rep is None or rep.frames is None or out_dims is None or len(out_dims) != 3 or len(uses) != 1:
        return None
    norm = uses[0].node
    if norm.op_type != "InstanceNormalization" or uses[0].idx != 0 or out.is_graph_output():
        return None
    norm_uses = list(norm.outputs[0].uses())
    if len(norm_uses) != 1 or norm.outputs[0].is_graph_output():
        return None
    back = norm_uses[0].node
    if back.op_type != "Reshape" or ctx.dims(back.outputs[0]) != ctx.dims(x):
        return None
    groups = out_dims[1]
    scale, bias = ctx.const_array(norm.inputs[1]), ctx.const_array(norm.inputs[2])
    if groups is None or scale is None or bias is None or scale.size != groups or bias.size != groups:
        return None
    eps = norm.attributes.get_float("epsilon", 1e-5)
    ctx.set_frames(back.outputs[0], group_norm_frames(ctx, x, groups, eps, scale, bias))
    ctx.absorb(norm)
    ctx.absorb(back)
    return "GroupNorm (Reshape → InstanceNormalization → Reshape) on frames"


@register("GroupNormalization", since=18)
def lower_group_norm(ctx: LowerContext, node: ir.Node) -> str:
    """Opset 18 gives scale and bias per group; from opset 21, per channel."""
    x = node.inputs[0]
    assert x is not None
    groups = node.attributes.get_int("num_groups")
    if groups is None:
        raise Unsupported("GroupNormalization without num_groups")
    scale, bias = ctx.const_array(node.inputs[1]), ctx.const_array(node.inputs[2])
    if scale is None or bias is None:
        raise Unsupported("GroupNormalization's scale or bias is not constant")
    eps = node.attributes.get_float("epsilon", 1e-5)
    channels = ctx.clip_dims(x)[1]
    if scale.size == groups and channels != groups:
        ctx.set_frames(node.outputs[0], group_norm_frames(ctx, x, groups, eps, scale, bias))
    else:
        per_channel = [ctx.const(a.reshape(1, channels, 1, 1).astype(np.float32)) for a in (scale, bias)]
        y = ctx.op("Mul", [group_norm_frames(ctx, x, groups, eps, None, None), per_channel[0]])
        ctx.set_frames(node.outputs[0], ctx.op("Add", [y, per_channel[1]]))
    return "GroupNormalization on frames"
