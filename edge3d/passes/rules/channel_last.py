"""Channel-last ops on the frames of the clip they permute: no layout round trip.

Video transformers and ConvNeXt-style blocks permute a clip to channel-last ``(B, T, H, W, C)``,
apply a LayerNorm and Linear layers over C, and permute back. The Transpose rule keeps such a
value as a permuted view of the clip's frames (``Rep.permuted``); here a LayerNorm over the last
axis becomes a normalisation over the frames' channel axis, and a Linear a 1×1 Conv on frames.
Anything else refuses, and the op's general (merged-axes) lowering takes over.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..context import LowerContext, Unsupported
from ..registry import register
from .reduce import reduce_op


def _channel_last_frames(ctx: LowerContext, x: ir.Value) -> tuple[tuple[int, ...], ir.Value]:
    """(p, frames) of a rank-5 value whose last axis is its clip's channel axis."""
    rep = ctx.reps.get(x)
    permuted = rep.permuted if rep is not None and rep.frames is None else None
    if permuted is None or permuted[0][1] != 4:
        raise Unsupported("the value is not a channel-last view of a clip's frames")
    if x.dtype != ir.DataType.FLOAT:
        raise Unsupported("channel-last ops on frames are lowered in float32 only")
    return permuted


def _per_channel(ctx: LowerContext, value: ir.Value | None, channels: int) -> ir.Value | None:
    """A (C,) parameter as (1, C, 1, 1), to broadcast over frames."""
    if value is None:
        return None
    array = ctx.const_array(value)
    if array is None or array.size != channels:
        raise Unsupported("the per-channel parameter is not a constant of C values")
    return ctx.const(np.ascontiguousarray(array.reshape(1, channels, 1, 1)))


@register("LayerNormalization", since=17)
def lower_layer_norm(ctx: LowerContext, node: ir.Node) -> str:
    """LayerNorm over C of a channel-last clip: mean and variance over the frames' axis 1."""
    if any(o is not None and (o.uses() or o.is_graph_output()) for o in node.outputs[1:]):
        raise Unsupported("LayerNormalization's mean or inverse deviation output is used")
    x = node.inputs[0]
    assert x is not None
    if node.attributes.get_int("axis", -1) % 5 != 4:
        raise Unsupported("a LayerNorm over more than the last axis")
    p, frames = _channel_last_frames(ctx, x)
    channels = ctx.high_dims(x)[4]
    eps = ctx.const(np.asarray(node.attributes.get_float("epsilon", 1e-5), np.float32))
    mean = reduce_op(ctx, "ReduceMean", frames, [1])
    centred = ctx.op("Sub", [frames, mean])
    var = reduce_op(ctx, "ReduceMean", ctx.op("Mul", [centred, centred]), [1])
    y = ctx.op("Div", [centred, ctx.op("Sqrt", [ctx.op("Add", [var, eps])])])
    scale = _per_channel(ctx, node.inputs[1], channels)
    bias = _per_channel(ctx, node.inputs[2] if len(node.inputs) > 2 else None, channels)
    if scale is not None:
        y = ctx.op("Mul", [y, scale])
    if bias is not None:
        y = ctx.op("Add", [y, bias])
    ctx.set_permuted(node.outputs[0], p, y)
    return "LayerNormalization over the channels of frames (channel-last view)"


@register("MatMul")
def lower_linear(ctx: LowerContext, node: ir.Node) -> str:
    """``x @ W`` over C of a channel-last clip, W constant ``(C, K)``: a 1×1 Conv on frames."""
    x, weight = node.inputs[0], node.inputs[1]
    assert x is not None and weight is not None
    p, frames = _channel_last_frames(ctx, x)
    array = ctx.const_array(weight)
    if array is None or array.ndim != 2:
        raise Unsupported("the right operand is not a constant matrix")
    kernel = ctx.const(np.ascontiguousarray(array.T.reshape(array.shape[1], array.shape[0], 1, 1)))
    ctx.set_permuted(node.outputs[0], p, ctx.op("Conv", [frames, kernel], {"kernel_shape": [1, 1]}))
    return "MatMul over the channels of a channel-last clip as a 1×1 Conv on frames"
