"""Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Identity, Dropout and Shape.

A reshape or transpose of a high-rank value emits nothing: its result is a lazy ``View`` of the
tensor its input already has (``views``), and the chain's data moves once, when a consumer reads
it. A result of rank ≤ 4 is made at once. Where no view applies (a symbolic dim, a reshape no
split expresses), a reshape is a Reshape of the value's canonical tensor, and a transpose merges
the runs of axes it keeps together (a channel shuffle ``(B, g, C/g, T, H, W)`` → perm
``(0, 2, 1, 3, 4, 5)`` is a rank-4 transpose of ``(B, g, C/g, T·H·W)``), failing only if more
than four runs remain and no short chain of rank-4 transposes moves them.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..context import Dims, LowerContext, Unsupported, default_grouping, prod
from ..registry import register
from ..transposes import merged_transpose, transpose_count
from ..views import View
from .norm import instance_norm_groups


def _source(ctx: LowerContext, value: ir.Value, shape: Dims) -> ir.Value:
    """``value``'s elements viewed as ``shape`` (rank ≤ 4), whether it is high-rank or not."""
    if ctx.is_high(value):
        return ctx.canonical(value, shape)
    dims = ctx.dims(value)
    return value if dims is not None and tuple(dims) == tuple(shape) else ctx.reshape(value, shape)


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def lower_reshape(ctx: LowerContext, node: ir.Node) -> str:
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    if node.op_type == "Reshape" and (fused := instance_norm_groups(ctx, node)) is not None:
        return fused
    out_dims = ctx.dims(out)
    if out_dims is None or sum(d is None for d in out_dims) > 1:
        raise Unsupported("the output shape is not static (pass a static input shape)")
    if ctx.is_high(out):
        shape = default_grouping(out_dims)
    else:
        shape = out_dims
    in_dims = ctx.dims(x)
    if ctx.is_high(x) and in_dims is not None:
        before, after = prod(in_dims), prod(shape)
        if before is not None and after is not None and before != after:
            raise Unsupported(f"reshape of {in_dims} into {out_dims} changes the element count")
    lazy = ctx.view_of(x)
    reshaped = lazy.reshaped(out_dims) if lazy is not None else None
    if reshaped is not None and _settled(ctx, out, reshaped):
        return f"{node.op_type} as a view of the tensor its input has"
    ctx.emit(out, _source(ctx, x, shape), shape)
    return f"{node.op_type} of the canonical (row-major) tensor"


def _settled(ctx: LowerContext, out: ir.Value, view: View) -> bool:
    """Give ``out`` the view: kept lazy when it is high-rank, made at once when not. False when
    no chain of rank-4 transposes makes it (the caller then moves the data step by step)."""
    if transpose_count(view.axes, view.order) is None:
        return False
    if ctx.is_high(out):
        ctx.set_view(out, view)
    else:
        tensor, shape = ctx.materialize(view)
        ctx.emit(out, tensor, shape)
    return True


@register("Identity", "Dropout")
def lower_identity(ctx: LowerContext, node: ir.Node) -> str:
    if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
        raise Unsupported("Dropout's mask output is used")
    x = node.inputs[0]
    assert x is not None
    ctx.alias(node.outputs[0], x)
    return f"{node.op_type} removed"


@register("Transpose")
def lower_transpose(ctx: LowerContext, node: ir.Node) -> str:
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    dims = ctx.dims(x)
    if dims is None:
        raise Unsupported(f"the shape of {x.name!r} is unknown after shape inference")
    perm = list(node.attributes.get_ints("perm") or reversed(range(len(dims))))
    if ctx.is_high(x) and ctx.move_layout(x, out, perm):
        return "Transpose kept as a layout of the same frames (no nodes)"
    lazy = ctx.view_of(x)
    if lazy is not None and _settled(ctx, out, lazy.transposed(perm)):
        return "Transpose as a view of the tensor its input has"
    moved, shape, count = merged_transpose(ctx, lambda grouped: _source(ctx, x, grouped), dims, perm)
    ctx.emit(out, moved, shape)
    return f"Transpose of merged axes as {count} rank-≤4 transpose(s)"


@register("Shape")
def lower_shape(ctx: LowerContext, node: ir.Node) -> str:
    dims = ctx.dims(node.inputs[0])
    if dims is None or any(d is None for d in dims):
        raise Unsupported("Shape of a value with symbolic dims")
    start, end = node.attributes.get_int("start", 0), node.attributes.get_int("end")
    ctx.replace(node.outputs[0], ctx.const(np.asarray(dims[start:end], dtype=np.int64)))
    return "Shape folded to a constant"
