"""Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Identity, Dropout and Shape.

A reshape keeps the row-major element order, so it is a Reshape of the value's canonical
tensor. A transpose merges the runs of axes it keeps together (a channel shuffle
``(B, g, C/g, T, H, W)`` → perm ``(0, 2, 1, 3, 4, 5)`` becomes a rank-4 transpose of
``(B, g, C/g, T·H·W)``) and fails only if more than four runs remain.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..context import Dims, LowerContext, Unsupported, default_grouping, prod
from ..registry import register


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
    ctx.emit(out, _source(ctx, x, shape), shape)
    return f"{node.op_type} of the canonical (row-major) tensor"


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
    rank = len(dims)
    perm = list(node.attributes.get_ints("perm") or reversed(range(rank)))
    # Size-1 axes can go anywhere: drop them, then merge runs of consecutive axes.
    keep = [a for a in range(rank) if dims[a] != 1]
    kept_perm = [a for a in perm if a in keep]
    runs: list[list[int]] = []
    for a in kept_perm:
        if runs and keep.index(a) == keep.index(runs[-1][-1]) + 1:
            runs[-1].append(a)
        else:
            runs.append([a])
    if len(runs) > 4:
        raise Unsupported(f"perm {perm} of shape {list(dims)} moves {len(runs)} separate axis groups; "
                          "at most 4 fit in rank 4")
    by_input_order = sorted(runs)
    grouped = tuple(prod([dims[a] for a in run]) for run in by_input_order) or (1,)
    source = _source(ctx, x, grouped)
    order = [by_input_order.index(run) for run in runs]
    moved = source if order == sorted(order) else ctx.transpose(source, order)
    ctx.emit(out, moved, tuple(grouped[i] for i in order) or (1,))
    return f"Transpose as a rank-{len(grouped)} transpose of merged axes"


@register("Shape")
def lower_shape(ctx: LowerContext, node: ir.Node) -> str:
    dims = ctx.dims(node.inputs[0])
    if dims is None or any(d is None for d in dims):
        raise Unsupported("Shape of a value with symbolic dims")
    start, end = node.attributes.get_int("start", 0), node.attributes.get_int("end")
    ctx.replace(node.outputs[0], ctx.const(np.asarray(dims[start:end], dtype=np.int64)))
    return "Shape folded to a constant"
