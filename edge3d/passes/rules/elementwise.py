"""Elementwise ops, with numpy broadcasting of operands such as an SE gate ``(B, C, 1, 1, 1)``.

A unary op runs on whichever representation its input already has. An op with several
operands runs on frames; each operand is brought to a 4D tensor that broadcasts against the
output's frames ``(B·T, C, H, W)``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx_ir as ir

from ..context import Dims, LowerContext, Unsupported, default_grouping, frames_dims
from ..registry import register
from ..views import View

UNARY = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
    "Celu", "Softplus", "Softsign", "Gelu", "Mish", "ThresholdedRelu", "Neg", "Abs", "Exp", "Log",
    "Sqrt", "Reciprocal", "Erf", "Floor", "Ceil", "Round", "Sign", "Not", "Cast", "Sin", "Cos",
    "IsNaN", "IsInf",
)
BROADCASTING = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal",
    "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Mod", "Clip",
    "BitShift",
)


@register(*UNARY)
def lower_unary(ctx: LowerContext, node: ir.Node) -> str:
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    rep = ctx.rep(x)
    known = rep.clip_frames()
    if known is not None:
        p, frames = known
        ctx.set_permuted(out, p, ctx.op(node.op_type, [frames], node.attributes))
        return f"{node.op_type} on frames"
    if not rep.canonical and rep.view is not None:  # elementwise: on the view's tensor, the view kept
        ctx.set_view(out, replace(rep.view, base=ctx.op(node.op_type, [rep.view.base], node.attributes)))
        return f"{node.op_type} on a view's tensor"
    shape, source = next(iter(rep.canonical.items()))
    ctx.set_canonical(out, ctx.op(node.op_type, [source], node.attributes), shape)
    return f"{node.op_type} on the time layout"


@register(*BROADCASTING)
def lower_broadcasting(ctx: LowerContext, node: ir.Node) -> str:
    out = node.outputs[0]
    out_dims = ctx.high_dims(out)
    lazy = _shared_view(ctx, node, out_dims)
    if lazy is not None:
        bases = [v if v is None or not ctx.is_high(v) else ctx.rep(v).view.base for v in node.inputs]  # type: ignore[union-attr]
        ctx.set_view(out, replace(lazy, base=ctx.op(node.op_type, bases, node.attributes)))
        return f"{node.op_type} on the tensor of views alike"
    if len(out_dims) != 5:
        raise Unsupported(f"elementwise {node.op_type} on a rank-{len(out_dims)} value")
    permuted = _shared_permutation(ctx, node, out_dims)
    if permuted is not None:
        p = permuted
        u_dims = tuple(out_dims[a] for a in p)
        operands = [None if v is None else _permuted_operand(ctx, v, p, u_dims) for v in node.inputs]
        ctx.set_permuted(out, p, ctx.op(node.op_type, operands, node.attributes))
        return f"{node.op_type} on the frames of a permuted clip"
    shared = _shared_canonical(ctx, node, out_dims)
    if shared is not None:
        inputs, shape = shared
        ctx.set_canonical(out, ctx.op(node.op_type, inputs, node.attributes), shape)
        return f"{node.op_type} on the time layout"
    operands = [None if v is None else broadcast_operand(ctx, v, out_dims) for v in node.inputs]
    ctx.set_frames(out, ctx.op(node.op_type, operands, node.attributes))
    return f"{node.op_type} on frames"


def _shared_view(ctx: LowerContext, node: ir.Node, out_dims: Dims) -> View | None:
    """The view when every high-rank operand is a full-size lazy view of the same layout (``x *
    sigmoid(x)`` after a permute) and the others are scalars: the op runs on the views' tensors
    and the result is that view again."""
    found: View | None = None
    for v in node.inputs:
        if v is None:
            continue
        if ctx.is_high(v):
            rep = ctx.reps.get(v)
            if rep is None or rep.view is None or rep.frames is not None or rep.canonical or ctx.dims(v) != out_dims:
                return None
            if found is not None and found.layout != rep.view.layout:
                return None
            found = rep.view
        elif not _is_scalar(ctx, v):
            return None
    return found


def _shared_canonical(ctx: LowerContext, node: ir.Node, out_dims: Dims) -> tuple[list[ir.Value | None], Dims] | None:
    """Stay in a canonical layout when every high-rank operand is full-size and row-major already
    or a lazy view (made row-major here, as it would be anyway), none in frames, and the others
    are scalars: no conversion to frames needed."""
    reps = []
    for v in node.inputs:
        if v is None:
            continue
        if ctx.is_high(v):
            rep = ctx.reps.get(v)
            if rep is None or rep.frames is not None or ctx.dims(v) != out_dims or \
                    not (rep.canonical or rep.view is not None):
                return None
            reps.append((v, rep))
        elif not _is_scalar(ctx, v):
            return None
    if not reps:
        return None
    common = set.intersection(*(set(rep.canonical) for _, rep in reps))
    if common:
        shape = min(common)
    else:  # a reshape of a row-major tensor is free: view them all as the first one's shape
        first = reps[0][1]
        shape = next(iter(first.canonical)) if first.canonical else default_grouping(out_dims)
    return [ctx.canonical(v, shape) if v is not None and ctx.is_high(v) else v for v in node.inputs], shape


def _shared_permutation(ctx: LowerContext, node: ir.Node, out_dims: Dims) -> tuple[int, ...] | None:
    """The permutation ``p`` when every high-rank operand is a full-size permuted clip with that
    same ``p`` (and no frames of its own) and the other operands are constants: the op then runs
    on the clip's frames."""
    found: tuple[int, ...] | None = None
    for v in node.inputs:
        if v is None:
            continue
        if ctx.is_high(v):
            rep = ctx.reps.get(v)
            if rep is None or rep.permuted is None or rep.frames is not None or ctx.dims(v) != out_dims:
                return None
            if found is not None and rep.permuted[0] != found:
                return None
            found = rep.permuted[0]
        elif ctx.const_array(v) is None and not _is_scalar(ctx, v):
            return None
    return found


def _permuted_operand(ctx: LowerContext, value: ir.Value, p: tuple[int, ...], u_dims: Dims) -> ir.Value:
    """An operand of an op on the frames of the clip ``u = out.transpose(p)``."""
    if ctx.is_high(value):
        return ctx.rep(value).permuted[1]  # type: ignore[index]
    dims = ctx.dims(value)
    if dims is not None and all(d == 1 for d in dims):
        return value
    array = ctx.const_array(value)
    assert array is not None and dims is not None
    clip = array.reshape((1,) * (5 - len(dims)) + tuple(dims)).transpose(p)
    return broadcast_array(ctx, clip, u_dims)


def _is_scalar(ctx: LowerContext, value: ir.Value) -> bool:
    dims = ctx.dims(value)
    return dims is not None and all(d == 1 for d in dims)


def broadcast_operand(ctx: LowerContext, value: ir.Value, out_dims: Dims) -> ir.Value:
    """A 4D tensor that broadcasts against the output's frames (B·T, C, H, W)."""
    b, c, t, h, w = out_dims
    dims = ctx.dims(value)
    if dims is None:
        raise Unsupported(f"the rank of operand {value.name!r} is unknown")
    if len(dims) < 5 and all(d == 1 for d in dims):
        return value  # scalars broadcast as they are
    if len(dims) > 5:
        raise Unsupported(f"operand {value.name!r} has rank {len(dims)}")
    padded = (1,) * (5 - len(dims)) + tuple(dims)
    ob, oc, ot, oh, ow = padded
    constant = ctx.const_array(value)
    if constant is not None:
        return broadcast_array(ctx, constant.reshape(padded), out_dims)
    if ctx.is_high(value):
        frames = ctx.frames(value)
    else:
        if ot == 1:
            frames = ctx.reshape(value, (ob, oc, oh, ow))
        else:  # (C, T, H, W)-like operand of rank ≤ 4: move T in front of C
            frames = ctx.transpose(ctx.reshape(value, (oc, ot, oh, ow)), (1, 0, 2, 3))
    return _over_batch_and_time(ctx, frames, padded, out_dims)


def broadcast_array(ctx: LowerContext, array: np.ndarray, out_dims: Dims) -> ir.Value:
    """A constant ``(B', C', T', H', W')`` operand as a 4D tensor that broadcasts against the
    output's frames."""
    ob, oc, ot, oh, ow = array.shape
    frames = ctx.const(np.ascontiguousarray(array.transpose(0, 2, 1, 3, 4).reshape(ob * ot, oc, oh, ow)))
    return _over_batch_and_time(ctx, frames, array.shape, out_dims)


def _over_batch_and_time(ctx: LowerContext, frames: ir.Value, padded: Dims, out_dims: Dims) -> ir.Value:
    b, c, t, h, w = out_dims
    ob, oc, ot, oh, ow = padded
    if (ob, ot) == (b, t) or (ob == 1 and ot == 1) or (ob == 1 and b == 1):
        return frames
    # Broadcast over batch or time: repeat it in the (B, T, ·) view, then back to frames.
    if b is None and ob != b:
        raise Unsupported("broadcasting an operand over a symbolic batch dim")
    flat = ctx.reshape(frames, (ob, ot, oc * oh * ow))
    expanded = ctx.op("Expand", [flat, ctx.ints([b if b is not None else 1, t, 1])])
    return ctx.reshape(expanded, frames_dims((b, oc, t, oh, ow)))
