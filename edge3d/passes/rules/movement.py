"""Concat, Slice, Gather, Split and Pad on rank-5 values.

Along C, H or W these run on frames (axes 1, 2, 3). Along T — or B — they run on the
``(B, T, C·H·W)`` view, where batch and time have axes of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from ..context import LowerContext, Rep, Unsupported, frames_dims
from ..registry import register
from ..transposes import transpose_count
from ..views import View

FRAME_AXIS = {1: 1, 3: 2, 4: 3}  # rank-5 axis → frames axis
VIEW_AXIS = {0: 0, 2: 1}  # rank-5 axis → (B, T, C·H·W) axis


def _const(ctx: LowerContext, value: ir.Value | None, what: str) -> np.ndarray:
    array = ctx.const_array(value)
    if array is None:
        raise Unsupported(f"the {what} are not constant")
    return array


@register("Concat")
def lower_concat(ctx: LowerContext, node: ir.Node) -> str:
    out = node.outputs[0]
    dims = ctx.clip_dims(out)
    axis = node.attributes["axis"].as_int() % 5
    if axis in FRAME_AXIS or axis == 0:
        y = ctx.op("Concat", [ctx.frames(v) for v in _present(node.inputs)], {"axis": FRAME_AXIS.get(axis, 0)})
        ctx.set_frames(out, y)
        return "Concat on frames"
    y = ctx.op("Concat", [ctx.bt_view(v) for v in _present(node.inputs)], {"axis": 1})
    ctx.set_frames(out, ctx.reshape(y, frames_dims(dims)))
    return "Concat over T on the (B, T, C·H·W) view"


def _present(values: Sequence[ir.Value | None]) -> list[ir.Value]:
    """Node inputs that must be given: a missing one is an error in the model."""
    assert all(v is not None for v in values), "a required input is missing"
    return [v for v in values if v is not None]


def _optional(node: ir.Node, index: int) -> ir.Value | None:
    """The node's input ``index``, None when it is not given (left out or empty)."""
    return node.inputs[index] if len(node.inputs) > index else None


@register("Slice")
def lower_slice(ctx: LowerContext, node: ir.Node) -> str:
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    dims = ctx.clip_dims(x)
    starts = _const(ctx, node.inputs[1], "slice starts")
    ends = _const(ctx, node.inputs[2], "slice ends")
    given_axes, given_steps = _optional(node, 3), _optional(node, 4)
    axes = np.arange(len(starts)) if given_axes is None else _const(ctx, given_axes, "slice axes")
    steps = np.ones(len(starts), np.int64) if given_steps is None else _const(ctx, given_steps, "slice steps")
    parts = {int(a) % 5: (int(s), int(e), int(st)) for a, s, e, st in zip(axes, starts, ends, steps)}
    out_dims = ctx.high_dims(out)
    y = None
    if parts.keys() & VIEW_AXIS.keys():
        view_parts = {VIEW_AXIS[a]: p for a, p in parts.items() if a in VIEW_AXIS}
        sliced = _slice(ctx, ctx.bt_view(x), view_parts)
        b2, t2 = out_dims[0], out_dims[2]
        y = ctx.reshape(sliced, frames_dims((b2, dims[1], t2, dims[3], dims[4])))
    frame_parts = {FRAME_AXIS[a]: p for a, p in parts.items() if a in FRAME_AXIS}
    if frame_parts:
        y = _slice(ctx, y if y is not None else ctx.frames(x), frame_parts)
    ctx.set_frames(out, y if y is not None else ctx.frames(x))
    return "Slice on frames and the (B, T, C·H·W) view"


def _slice(ctx: LowerContext, x: ir.Value, parts: dict[int, tuple[int, int, int]]) -> ir.Value:
    axes = sorted(parts)
    return ctx.op("Slice", [x, ctx.ints([parts[a][0] for a in axes]), ctx.ints([parts[a][1] for a in axes]),
                            ctx.ints(axes), ctx.ints([parts[a][2] for a in axes])])


@register("Gather")
def lower_gather(ctx: LowerContext, node: ir.Node) -> str:
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    if (done := _gather_view(ctx, node)) is not None:
        return done
    dims = ctx.clip_dims(x)
    indices = _const(ctx, node.inputs[1], "gather indices")
    axis = node.attributes.get_int("axis", 0) % 5
    if indices.ndim > 1:
        raise Unsupported("Gather with multi-dimensional indices")
    flat = ctx.ints(np.atleast_1d(indices).tolist())
    kept = tuple(int(np.atleast_1d(indices).size) if i == axis else d for i, d in enumerate(dims))
    if axis in VIEW_AXIS:
        y = ctx.op("Gather", [ctx.bt_view(x), flat], {"axis": VIEW_AXIS[axis]})
        frames = ctx.reshape(y, frames_dims(kept))
    else:
        frames = ctx.op("Gather", [ctx.frames(x), flat], {"axis": FRAME_AXIS[axis]})
    if indices.ndim == 1:
        ctx.set_frames(out, frames)
    else:  # a scalar index drops the axis: the result leaves through its row-major form
        b, c, t, h, w = kept
        ctx.emit(out, ctx.time_from_frames(Rep(kept, frames=frames)), (b, c, t, h * w))
    return "Gather on frames or the (B, T, C·H·W) view"


def _gather_view(ctx: LowerContext, node: ir.Node) -> str | None:
    """A Gather along one axis of a lazy view (any rank; ``views``), with constant indices of
    rank ≤ 1: gathered on the axis of the view's tensor that axis is, so the view is kept and
    the permutation waits for the consumer (``qkv.permute(2, 0, 3, 1, 4)[0]`` moves a third of
    the data, once). Only where the part takes fewer rank-4 transposes than the whole: each
    part's transposes together move what one of the whole's does, so otherwise the whole is made
    once and every Gather reads it. None where the input is no view or the axis spans several of
    its axes."""
    x, out = node.inputs[0], node.outputs[0]
    rep = ctx.reps.get(x) if x is not None and ctx.is_high(x) else None
    indices = ctx.const_array(node.inputs[1])
    if rep is None or rep.view is None or rep.canonical or rep.frames is not None or indices is None \
            or indices.ndim > 1:
        return None
    lazy = rep.view
    axis = node.attributes.get_int("axis", 0) % len(rep.dims)
    run = [a for a in lazy.runs()[axis] if lazy.axes[a] != 1]
    if len(run) != 1:
        return None
    a = run[0]
    size = lazy.axes[a]
    picked = np.atleast_1d(indices).astype(np.int64)
    if ((picked < -size) | (picked >= size)).any():
        return None
    picked = picked % size
    pre, post = math.prod(lazy.axes[:a]), math.prod(lazy.axes[a + 1:])
    shape: tuple[int, ...]
    if indices.ndim:  # the axis keeps its place, with len(indices) elements
        axes = lazy.axes[:a] + (len(picked),) + lazy.axes[a + 1:]
        order, groups, shape = lazy.order, lazy.groups, (pre, len(picked), post)
    else:  # a scalar index drops the axis, and with it the value's axis
        axes = lazy.axes[:a] + lazy.axes[a + 1:]
        order = tuple(o - (o > a) for o in lazy.order if o != a)
        groups, shape = lazy.groups[:axis] + lazy.groups[axis + 1:], (pre, post)
    part, whole = transpose_count(axes, order), transpose_count(lazy.axes, lazy.order)
    if part is None or (whole is not None and part >= whole):
        return None  # no fewer transposes for the part than for the whole: make the whole once, shared
    source = lazy.base if lazy.base_shape == (pre, size, post) else ctx.reshape(lazy.base, (pre, size, post))
    index = ctx.const(picked if indices.ndim else picked.reshape(()))
    gathered = View(ctx.op("Gather", [source, index], {"axis": 1}), shape, axes, order, groups)
    if ctx.is_high(out):
        ctx.set_view(out, gathered)
    else:
        tensor, shape = ctx.materialize(gathered)
        ctx.emit(out, tensor, shape)
    return "Gather on the tensor of a view (the view kept)"


@register("Split")
def lower_split(ctx: LowerContext, node: ir.Node) -> str:
    x = node.inputs[0]
    assert x is not None
    ctx.clip_dims(x)
    axis = node.attributes.get_int("axis", 0) % 5
    sizes = [ctx.high_dims(o)[axis] for o in node.outputs]
    split = ctx.ints(sizes)
    n = len(node.outputs)
    if axis in FRAME_AXIS:
        parts = ctx.multi_op("Split", [ctx.frames(x), split], {"axis": FRAME_AXIS[axis]}, num_outputs=n)
        for out, part in zip(node.outputs, parts):
            ctx.set_frames(out, part)
        return "Split on frames"
    parts = ctx.multi_op("Split", [ctx.bt_view(x), split], {"axis": VIEW_AXIS[axis]}, num_outputs=n)
    for out, part in zip(node.outputs, parts):
        ctx.set_frames(out, ctx.reshape(part, frames_dims(ctx.high_dims(out))))
    return "Split over T on the (B, T, C·H·W) view"


@register("Pad")
def lower_pad(ctx: LowerContext, node: ir.Node) -> str:
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    dims = ctx.clip_dims(x)
    given = node.attributes.get_ints("pads")  # before opset 11 the pads are an attribute
    pads = [int(p) for p in (_const(ctx, node.inputs[1], "pads") if given is None else given)]
    given_axes = _optional(node, 3)
    if given_axes is not None:
        axes = [int(a) % 5 for a in _const(ctx, given_axes, "pad axes")]
        full = [0] * 10
        for i, a in enumerate(axes):
            full[a], full[a + 5] = pads[i], pads[i + len(axes)]
        pads = full
    mode = node.attributes.get_string("mode", "constant")
    value = [node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] is not None else []
    begin, end = pads[:5], pads[5:]
    y = None
    if begin[0] or end[0] or begin[2] or end[2]:
        padded = ctx.op("Pad", [ctx.bt_view(x), ctx.ints([begin[0], begin[2], 0, end[0], end[2], 0])] + value,
                        {"mode": mode})
        t2 = dims[2] + begin[2] + end[2]
        y = ctx.reshape(padded, frames_dims((None if dims[0] is None else dims[0] + begin[0] + end[0],
                                             dims[1], t2, dims[3], dims[4])))
    if any(begin[a] or end[a] for a in (1, 3, 4)):
        frame_pads = [0, begin[1], begin[3], begin[4], 0, end[1], end[3], end[4]]
        y = ctx.op("Pad", [y if y is not None else ctx.frames(x), ctx.ints(frame_pads)] + value, {"mode": mode})
    ctx.set_frames(out, y if y is not None else ctx.frames(x))
    return f"Pad ({mode}) on frames and the (B, T, C·H·W) view"
