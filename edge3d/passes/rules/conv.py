"""Conv3d as 2D convolutions on rank-≤4 tensors, exact for every kernel, stride, pad, dilation and group.

Three forms, all on rank-≤4 tensors:

- spatial (kt = 1, no temporal stride or pad): one Conv2d on frames;
- temporal (kh = kw = 1, no spatial stride or pad): one ``(kt, 1)`` Conv2d on the time layout;
- general: the frame each temporal tap of each output frame reads is known statically, so one
  Gather on the ``(B, T, C·H·W)`` view (with a zero frame appended for taps that read padding)
  collects them. A tap that reads padding for every output frame (a kt = 3 kernel on a
  one-frame clip) is dropped with its weights: exact, fewer MACs, and no Pad on a size-1 axis,
  which rknn-toolkit2 2.5 computes wrongly. *Gathered*: the taps go into channels and one
  Conv2d runs with the kernel ``W.permute(0, 2, 1, 3, 4).reshape(S, kt·C/g, kh, kw)``; for
  groups the channels are put group-major first. *Summed*: one Conv2d per tap, added — no
  kt-times larger input, which pays off for depthwise kernels (see ``choose_strategy``). *Chunked*:
  summed a few output frames at a time, each tap a strided Slice of the clip (no padded copy,
  no Gather), so a run holds one chunk's taps rather than the clip's; for large clips.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from ..context import LowerContext, Unsupported
from ..registry import register
from .common import window

log = logging.getLogger(__name__)


GATHER_BUDGET = 16 * 2**20  # bytes: a gathered input (kt frames per output frame) above this is chunked instead
PEAK_RATIO = 1.2  # a form's extra tensors may not take the activations beyond this times the 5D model's peak


def choose_strategy(kt: int, channels: int, group: int, gathered_bytes: int = 0, raises_peak: bool = False) -> str:
    """Taps summed for depthwise kernels with several taps; chunked where the gathered input
    (``gathered_bytes``: kt times the frames' size) would exceed ``GATHER_BUDGET`` or where the
    form's extra tensors would take the activations alive at that layer above ``PEAK_RATIO``
    times the 5D model's peak (``raises_peak``, from ``live_memory``); else gathered.

    Measured on ONNX Runtime CPU (``benchmarks/conv_strategy.py`` per layer, speed and the
    memory a run adds; ``benchmarks/lowering.py --conv-strategy`` per model): for depthwise
    kernels the summed form is 1.6-6x faster than gathering, whose group-major transpose moves a
    kt-times larger tensor. For dense kernels on small clips gathering is 1.3-1.4x faster and
    every form needs little memory. On large clips the kt-times larger input and im2col buffer
    of gathering cost more than its single Conv2d saves; the chunked form, which slices each
    tap's frames a few output frames at a time, is within a few percent of the fastest form there
    and needs the least memory of the three. The peak test is what keeps a model's activation
    memory near the 5D model's: a layer whose gathered taps fit beside what is alive anyway
    costs no peak memory, whatever its size; the layers that set the peak are chunked.
    """
    depthwise = group == channels and group > 1
    if depthwise and kt > 1:
        return "chunked" if raises_peak else "summed"
    return "chunked" if gathered_bytes > GATHER_BUDGET or raises_peak else "gathered"


def _strategy(requested: str, kt: int, channels: int, group: int, gathered_bytes: int,
              raises_peak: bool) -> tuple[str, str]:
    """The strategy for a general Conv3d with ``kt`` live taps, and why, for the debug log."""
    if kt == 1:  # one tap left: gathering into channels would only add a Gather
        return "summed", "one temporal tap left, so no Gather into channels"
    if requested != "auto":
        return requested, "requested (--conv-strategy)"
    if group == channels and group > 1:
        return (choose_strategy(kt, channels, group, raises_peak=raises_peak),
                f"auto: depthwise kernel with {kt} taps" + (", above the activation peak" if raises_peak else ""))
    kind = "dense" if group == 1 else f"grouped ({group} groups)"
    size = f", gathered input {gathered_bytes / 2**20:.0f} MiB" + (", above the activation peak" if raises_peak else "")
    return choose_strategy(kt, channels, group, gathered_bytes, raises_peak), f"auto: {kind} kernel{size}"


def _raises_peak(ctx: LowerContext, node: ir.Node, extra: int) -> bool:
    """Whether ``extra`` bytes beside what is alive at ``node`` in the 5D graph pass the allowed
    peak. Up to ``CHUNK_BUDGET``, no: the chunked form's own taps take as much."""
    if ctx.live is None or extra <= CHUNK_BUDGET:
        return False
    return ctx.live.after.get(node, 0) + extra > PEAK_RATIO * ctx.live.peak


class ConvSpec:
    """Everything about a Conv3d node the lowering needs, with pads resolved."""

    def __init__(self, ctx: LowerContext, node: ir.Node):
        x, w = node.inputs[0], node.inputs[1]
        assert x is not None and w is not None, "Conv has an input and a weight"
        self.bias = node.inputs[2] if len(node.inputs) > 2 else None
        self.dims = ctx.clip_dims(x)
        weight = ctx.const_array(w)
        if weight is None:
            raise Unsupported("the Conv3d weight is not a constant")
        self.weight: np.ndarray = weight
        self.out_dims = ctx.high_dims(node.outputs[0])
        self.kernel = tuple(weight.shape[2:])
        self.strides, self.dilations, self.begin, self.end = window(node, self.dims[2:], self.kernel)
        self.group = node.attributes.get_int("group", 1)


@register("Conv")
def lower_conv(ctx: LowerContext, node: ir.Node) -> str:
    spec = ConvSpec(ctx, node)
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    name = node.name or node.op_type
    kt, kh, kw = spec.kernel
    (st, sh, sw), (dt, dh, dw) = spec.strides, spec.dilations
    (tb, hb, wb), (te, he, we) = spec.begin, spec.end
    bias = [spec.bias] if spec.bias is not None else []
    spatial = {"strides": [sh, sw], "pads": [hb, wb, he, we], "dilations": [dh, dw], "group": spec.group}

    if kt == 1 and st == 1 and tb == te == 0:
        log.debug("%s: spatial form (kt=1, no temporal stride or padding): one Conv2d on frames", name)
        w2 = ctx.const(spec.weight[:, :, 0])
        ctx.set_frames(out, ctx.op("Conv", [ctx.frames(x), w2] + bias, spatial))
        return "Conv3d → Conv2d on frames"

    if kh == kw == 1 and sh == sw == 1 and hb == wb == he == we == 0:
        log.debug("%s: temporal form (1x1 spatial kernel, no spatial stride or padding): "
                  "one (%d, 1) Conv2d on the time layout", name, kt)
        w2 = ctx.const(spec.weight[:, :, :, :, 0])  # (S, C/g, kt, 1)
        y = ctx.op("Conv", [ctx.time(x), w2] + bias, {
            "strides": [st, 1], "pads": [tb, 0, te, 0], "dilations": [dt, 1], "group": spec.group})
        b, s, t_out, h, w = spec.out_dims
        ctx.set_canonical(out, y, (b, s, t_out, h * w))
        return "Conv3d → (kt, 1) Conv2d on the time layout"

    b, c, t, h, w = spec.dims
    t_out = spec.out_dims[2]
    n = None if b is None else b * t_out
    index = tap_index(t, t_out, kt, st, dt, tb)
    live = (index < t).any(axis=0)
    live[0] |= not live.any()  # every output frame in the padding: one tap keeps the shapes
    pruned = int(kt - live.sum())
    if pruned:
        log.debug("%s: %d of %d temporal taps read only padding (T=%d, T'=%d, stride %d, dilation %d, "
                  "pads %d/%d); dropped with their weights", name, pruned, kt, t, t_out, st, dt, tb, te)
    weight, index, kt = spec.weight[:, :, live], index[:, live], int(live.sum())
    gathered_bytes = kt * (b or 1) * t_out * c * (h or 1) * (w or 1) * weight.itemsize  # unknown dims as 1
    frame_bytes = (b or 1) * c * (h or 1) * (w or 1) * weight.itemsize
    padded_bytes = (t + 1) * frame_bytes if (index == t).any() else 0  # tap_source's copy with a zero frame
    depthwise = spec.group == c and c > 1  # summed under auto: one tap and a partial sum beside the input
    extra = padded_bytes + (2 * gathered_bytes // kt if depthwise else gathered_bytes)
    strategy, why = _strategy(ctx.conv_strategy, kt, c, spec.group, gathered_bytes, _raises_peak(ctx, node, extra))
    if strategy == "chunked" and not ctx.allows("Concat", axis=0):  # its chunks are concatenated on frames
        strategy, why = "summed", "the target concatenates only on channels, so no chunks"
    elif strategy == "chunked" and ctx.conv_strategy == "auto" and not ctx.chunk_convs:
        strategy = "summed" if depthwise else "gathered"
        why = "the target runs one large kernel faster than many small ones, so no chunks"
    log.debug("%s: general form, %d temporal %s, strategy %s (%s)", name, kt, "tap" if kt == 1 else "taps",
              strategy, why)
    note = f" ({pruned} taps that only read padding dropped)" if pruned else ""
    sliced = not ctx.allows("Gather")  # a profile without Gather (a DLA): each tap a strided slice
    if sliced:
        note += "; taps sliced, the target has no Gather"
    if strategy == "chunked":  # slices only: no Gather, so for every target
        out_frame_bytes = (b or 1) * weight.shape[0] * spec.out_dims[3] * spec.out_dims[4] * weight.itemsize
        headroom = _headroom(ctx, node)
        fitting = None if headroom is None else headroom // (2 * (frame_bytes + out_frame_bytes))
        chunk = chunk_frames(frame_bytes, t_out, fitting)
        ctx.set_frames(out, chunked_taps(ctx, x, spec, weight, index, bias, spatial, chunk))
        return f"Conv3d → {kt} Conv2d on temporal taps, summed, {chunk} output frames at a time{note}"
    if strategy == "summed":
        total: ir.Value | None = None
        taps = tap_slices(ctx, x, spec, live) if sliced else gathered_taps(ctx, x, index, t)
        for i, tap in enumerate(taps):
            conv = ctx.op("Conv", [ctx.reshape(tap, (n, c, h, w)), ctx.const(weight[:, :, i])]
                          + (bias if i == 0 else []), spatial)
            total = conv if total is None else ctx.op("Add", [total, conv])
        assert total is not None
        ctx.set_frames(out, total)
        return f"Conv3d → {kt} Conv2d on temporal taps, summed{note}"

    if sliced:  # (B·T', kt·C, H, W): the Gather's element order, concatenated on channels (as a DLA can)
        taps = tap_slices(ctx, x, spec, live)
        gathered = ctx.op("Concat", [ctx.reshape(tap, (n, c, h, w)) for tap in taps], {"axis": 1})
    else:
        view, _ = tap_source(ctx, x, index, t)
        gathered = ctx.op("Gather", [view, ctx.const(index.astype(np.int64))], {"axis": 1})  # (B, T', kt, C·H·W)
    g = spec.group
    if g > 1 and kt > 1:  # group-major channels: per group, its C/g channels for each tap
        gathered = ctx.transpose(ctx.reshape(gathered, (n, kt, g, (c // g) * h * w)), (0, 2, 1, 3))
    gathered = ctx.reshape(gathered, (n, kt * c, h, w))
    s, cg = weight.shape[:2]
    w2 = ctx.const(np.ascontiguousarray(weight.transpose(0, 2, 1, 3, 4)).reshape(s, kt * cg, kh, kw))
    ctx.set_frames(out, ctx.op("Conv", [gathered, w2] + bias, spatial))
    return f"Conv3d → {kt} temporal taps gathered into channels, one Conv2d{note}"


CHUNK_BUDGET = 4 * 2**20  # bytes of input frames one chunk of a chunked Conv3d reads per tap: on 64- and
# 256-channel layers over 56×56 frames, 4 MiB ran as fast as 16 MiB or faster, with 0.5x the memory


def chunk_frames(frame_bytes: int, t_out: int, fitting: int | None = None) -> int:
    """Output frames per chunk: as many as keep one tap's input within ``CHUNK_BUDGET``, and no
    more than ``fitting``, the frames whose working set fits under the model's allowed peak."""
    frames = min(t_out, CHUNK_BUDGET // max(frame_bytes, 1))
    return max(1, frames if fitting is None else min(frames, fitting))


def _headroom(ctx: LowerContext, node: ir.Node) -> int | None:
    """Bytes a chunk's working set may take at ``node`` (a tap's frames and their padded copy,
    a tap's output and the running sum: about 2 × (input + output) bytes per output frame)
    without passing ``PEAK_RATIO`` times the 5D model's activation peak, and never less than
    ``CHUNK_BUDGET`` (below it memory is not worth smaller chunks); None without a model."""
    if ctx.live is None:
        return None
    return max(CHUNK_BUDGET, int(PEAK_RATIO * ctx.live.peak) - ctx.live.after.get(node, 0))


def chunked_taps(ctx: LowerContext, x: ir.Value, spec: ConvSpec, weight: np.ndarray, index: np.ndarray,
                 bias: list[ir.Value], spatial: dict[str, object], chunk: int) -> ir.Value:
    """The summed form over ``chunk`` output frames at a time, the chunks concatenated on time.

    Within a chunk, the frames a tap reads are a strided run of the clip, with padding frames
    only before or after it (``tap_index`` is monotonic): one Slice, and a Pad of that chunk's
    few zero frames, instead of a padded copy of the clip and a Gather. Each chunk's nodes come
    one chunk after another, so ONNX Runtime frees a chunk's taps and partial sums before the
    next chunk's exist: beyond the input and the output, a run holds one chunk's working set."""
    b, c, t, h, w = spec.dims
    s, t_out, ho, wo = spec.out_dims[1], spec.out_dims[2], spec.out_dims[3], spec.out_dims[4]
    stride = spec.strides[0]
    view = ctx.bt_view(x)  # (B, T, C·H·W)
    pieces = []
    for start in range(0, t_out, chunk):
        rows = index[start:start + chunk]
        k = len(rows)
        total: ir.Value | None = None
        for i in range(rows.shape[1]):
            valid = np.flatnonzero(rows[:, i] < t)
            if not len(valid) and (total is not None or i < rows.shape[1] - 1):
                continue  # this tap reads only padding for these output frames
            if len(valid):
                first, end = int(rows[valid[0], i]), int(rows[valid[-1], i]) + 1
                before, after = int(valid[0]), k - 1 - int(valid[-1])
            else:  # no tap reads a frame here: the bias alone, from k zero frames (an empty slice, padded)
                first, end, before, after = 0, 0, k, 0
            tap = ctx.op("Slice", [view, ctx.ints([first]), ctx.ints([end]), ctx.ints([1]), ctx.ints([stride])])
            if before or after:
                tap = ctx.op("Pad", [tap, ctx.ints([0, before, 0, 0, after, 0])])
            conv = ctx.op("Conv", [ctx.reshape(tap, (None if b is None else b * k, c, h, w)),
                                   ctx.const(weight[:, :, i])] + (bias if total is None else []), spatial)
            total = conv if total is None else ctx.op("Add", [total, conv])
        assert total is not None, "the last tap runs when no other did"
        pieces.append(total if b == 1 else ctx.reshape(total, (b, k, s * ho * wo)))
    joined = pieces[0] if len(pieces) == 1 else ctx.op("Concat", pieces, {"axis": 0 if b == 1 else 1})
    return joined if b == 1 else ctx.reshape(joined, (None if b is None else b * t_out, s, ho, wo))


def tap_index(t: int, t_out: int, kt: int, stride: int, dilation: int, pad_begin: int) -> np.ndarray:
    """(T', kt) frame indices: output frame o reads input frame o·st + i·dt - pt through tap i;
    a tap that falls in the temporal padding reads frame T, an appended zero frame."""
    o = np.arange(t_out)[:, None]
    i = np.arange(kt)[None, :]
    source = o * stride + i * dilation - pad_begin
    return np.where((source >= 0) & (source < t), source, t)


def gathered_taps(ctx: LowerContext, x: ir.Value, index: np.ndarray, t: int) -> Iterator[ir.Value]:
    """Each tap's (B, T', C·H·W) frames by a Gather of its column of ``index`` (none where a tap
    reads every frame in order). A generator: each tap's nodes are emitted when it is taken, so
    a consumer that uses each tap before taking the next keeps one tap alive, not all."""
    view, frames = tap_source(ctx, x, index, t)
    for i in range(index.shape[1]):
        column = index[:, i]
        yield view if _is_identity(column, frames) else ctx.op("Gather", [view, ctx.ints(column)], {"axis": 1})


def tap_slices(ctx: LowerContext, x: ir.Value, spec: ConvSpec, live: np.ndarray) -> Iterator[ir.Value]:
    """Each live tap's (B, T', C·H·W) frames without a Gather: with the temporal padding added as
    zero frames, tap ``i`` reads frames ``i·dt, i·dt + st, …``: one strided Slice (a generator,
    as ``gathered_taps``)."""
    t_out = spec.out_dims[2]
    (st, _, _), (dt, _, _) = spec.strides, spec.dilations
    tb, te = spec.begin[0], spec.end[0]
    view = ctx.bt_view(x)
    if tb or te:
        view = ctx.op("Pad", [view, ctx.ints([0, tb, 0, 0, te, 0])])
    for i in np.flatnonzero(live):
        start = int(i) * dt
        yield ctx.op("Slice", [view, ctx.ints([start]), ctx.ints([start + (t_out - 1) * st + 1]),
                               ctx.ints([1]), ctx.ints([st])])


def _is_identity(column: np.ndarray, frames: int) -> bool:
    """The tap reads every frame of the view in order: no Gather needed."""
    return len(column) == frames and bool((column == np.arange(frames)).all())


def tap_source(ctx: LowerContext, x: ir.Value, index: np.ndarray, t: int) -> tuple[ir.Value, int]:
    """The (B, T, C·H·W) view of ``x``, with a zero frame appended when some tap reads padding,
    and the view's frame count: one Gather with ``index`` then collects every tap at once."""
    view = ctx.bt_view(x)
    if (index == t).any():
        return ctx.op("Pad", [view, ctx.ints([0, 0, 0, 0, 1, 0])]), t + 1
    return view, t
