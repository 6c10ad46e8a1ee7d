"""Reductions over any of C, T, H, W of a rank-5 value, keepdims either way.

Over H and/or W: on frames. Over T (with both or neither of H, W): on the time layout, where
H·W is one axis. Over T and just one of H, W: the spatial axis first on frames, then T — valid
for the reductions that compose (mean, max, min, sum, prod over a box).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from ..context import LowerContext, Rep, Unsupported
from ..registry import register

COMPOSABLE = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd")
REDUCES = COMPOSABLE + ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


def reduce_op(ctx: LowerContext, op_type: str, x: ir.Value, axes: Sequence[int]) -> ir.Value:
    """Emit a reduction with keepdims=1 in the form the graph's opset wants (axes attr or input)."""
    if ctx.opset >= 18 or (op_type == "ReduceSum" and ctx.opset >= 13):
        return ctx.op(op_type, [x, ctx.ints(axes)], {"keepdims": 1})
    return ctx.op(op_type, [x], {"keepdims": 1, "axes": list(axes)})


def _axes(ctx: LowerContext, node: ir.Node, rank: int) -> set[int]:
    axes: Sequence[int] | None = node.attributes.get_ints("axes")  # an attribute before opset 18
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        given = ctx.const_array(node.inputs[1])
        if given is None:
            raise Unsupported("the reduction axes are not constant")
        axes = given.tolist()
    if axes is None or len(axes) == 0:
        if node.attributes.get_int("noop_with_empty_axes", 0):
            return set()
        return set(range(rank))
    return {int(a) % rank for a in axes}


@register(*REDUCES)
def lower_reduce(ctx: LowerContext, node: ir.Node) -> str:
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    dims = ctx.clip_dims(x)
    axes = _axes(ctx, node, 5)
    keepdims = node.attributes.get_int("keepdims", 1)
    if 0 in axes:
        raise Unsupported("a reduction over the batch axis")
    b, c, t, h, w = dims
    kept = tuple(1 if i in axes else d for i, d in enumerate(dims))  # the keepdims shape
    if not axes:
        ctx.alias(out, x)
        return "empty reduction → identity"

    if 2 in axes and (3 in axes) != (4 in axes):
        if node.op_type not in COMPOSABLE:
            raise Unsupported(f"{node.op_type} over T and one of H, W does not split into two steps")
        spatial = [{3: 2, 4: 3}[a] for a in sorted(axes & {3, 4})] + ([1] if 1 in axes else [])
        partial = reduce_op(ctx, node.op_type, ctx.frames(x), sorted(spatial))
        mid = (b, 1 if 1 in axes else c, t, kept[3], kept[4])
        time = ctx.reshape(ctx.time_from_frames(Rep(mid, frames=partial)), (b, mid[1], t, kept[3] * kept[4]))
        y, layout = reduce_op(ctx, node.op_type, time, [2]), "time"
        how = "over H or W on frames, then over T on the time layout"
    elif 2 in axes:
        mapped = sorted({{1: 1, 2: 2, 3: 3, 4: 3}[a] for a in axes})
        y, layout = reduce_op(ctx, node.op_type, ctx.time(x), mapped), "time"
        how = "on the time layout"
    else:
        mapped = sorted({1: 1, 3: 2, 4: 3}[a] for a in axes)
        y, layout = reduce_op(ctx, node.op_type, ctx.frames(x), mapped), "frames"
        how = "on frames"

    if keepdims:
        if layout == "frames":
            ctx.set_frames(out, y)
        else:
            ctx.set_canonical(out, y, (b, kept[1], kept[2], kept[3] * kept[4]))
    else:
        time = y if layout == "time" else ctx.time_from_frames(Rep(kept, frames=y))
        ctx.emit(out, time, (b, kept[1], kept[2], kept[3] * kept[4]))
    return f"{node.op_type} {how}"
