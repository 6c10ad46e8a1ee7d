"""Conv3d as 2D convolutions (DESIGN §3), exact for every kernel, stride, pad, dilation and group.

Three forms, all on rank-≤4 tensors:

- spatial (kt = 1, no temporal stride or pad): one Conv2d on frames;
- temporal (kh = kw = 1, no spatial stride or pad): one ``(kt, 1)`` Conv2d on the time layout;
- general: the kt temporal taps of each output frame are strided slices of the (padded)
  ``(B, T, C·H·W)`` view. *Gathered*: the taps are concatenated on channels and one Conv2d runs
  with the kernel ``W.permute(0, 2, 1, 3, 4).reshape(S, kt·C/g, kh, kw)``; for groups the
  channels are put group-major first. *Summed*: one Conv2d per tap, added — no kt-times larger
  input, which pays off for depthwise kernels (see ``choose_strategy``).
"""

from __future__ import annotations

import numpy as np

from ..layout import LowerContext, Unsupported
from ..registry import register
from .common import attr, window

STRATEGIES = ("auto", "gathered", "summed")


def choose_strategy(kt: int, channels: int, group: int) -> str:
    """Taps gathered unless the conv is depthwise with several taps.

    Measured with ``benchmarks/conv_strategy.py`` (ONNX Runtime CPU): for dense and grouped
    kernels one Conv2d over kt·C channels beats kt Conv2d + adds; for depthwise kernels the
    gathered form needs a group-major transpose of a kt-times larger tensor, and the summed
    form is faster.
    """
    depthwise = group == channels and group > 1
    return "summed" if depthwise and kt > 1 else "gathered"


class ConvSpec:
    """Everything about a Conv3d node the lowering needs, with pads resolved."""

    def __init__(self, ctx: LowerContext, node):
        x, w = node.inputs[0], node.inputs[1]
        self.bias = node.inputs[2] if len(node.inputs) > 2 else None
        self.dims = ctx.high_dims(x)
        if len(self.dims) != 5:
            raise Unsupported(f"Conv on a rank-{len(self.dims)} input; only Conv3d is lowered")
        self.weight = ctx.const_array(w)
        if self.weight is None:
            raise Unsupported("the Conv3d weight is not a constant")
        self.out_dims = ctx.high_dims(node.outputs[0])
        self.kernel = tuple(self.weight.shape[2:])
        self.strides, self.dilations, self.begin, self.end = window(node, self.dims[2:], self.kernel)
        self.group = int(attr(node, "group", 1))


@register("Conv")
def lower_conv(ctx: LowerContext, node, strategy: str = "auto") -> str:
    spec = ConvSpec(ctx, node)
    x, out = node.inputs[0], node.outputs[0]
    kt, kh, kw = spec.kernel
    (st, sh, sw), (dt, dh, dw) = spec.strides, spec.dilations
    (tb, hb, wb), (te, he, we) = spec.begin, spec.end
    bias = [spec.bias] if spec.bias is not None else []
    spatial = {"strides": [sh, sw], "pads": [hb, wb, he, we], "dilations": [dh, dw], "group": spec.group}

    if kt == 1 and st == 1 and tb == te == 0:
        w2 = ctx.const(spec.weight[:, :, 0])
        ctx.set_frames(out, ctx.op("Conv", [ctx.frames(x), w2] + bias, spatial))
        return "Conv3d → Conv2d on frames"

    if kh == kw == 1 and sh == sw == 1 and hb == wb == he == we == 0:
        w2 = ctx.const(spec.weight[:, :, :, :, 0])  # (S, C/g, kt, 1)
        y = ctx.op("Conv", [ctx.time(x), w2] + bias, {
            "strides": [st, 1], "pads": [tb, 0, te, 0], "dilations": [dt, 1], "group": spec.group})
        b, s, t_out, h, w = spec.out_dims
        ctx.set_canonical(out, y, (b, s, t_out, h * w))
        return "Conv3d → (kt, 1) Conv2d on the time layout"

    if strategy == "auto":
        strategy = choose_strategy(kt, spec.dims[1], spec.group)
    taps = temporal_taps(ctx, x, spec)
    b, c, _t, h, w = spec.dims
    t_out = spec.out_dims[2]
    n = None if b is None else b * t_out
    if strategy == "summed":
        y = None
        for i, tap in enumerate(taps):
            frames = ctx.reshape(tap, (n, c, h, w))
            conv = ctx.op("Conv", [frames, ctx.const(spec.weight[:, :, i])] + (bias if i == 0 else []), spatial)
            y = conv if y is None else ctx.op("Add", [y, conv])
        ctx.set_frames(out, y)
        return f"Conv3d → {kt} Conv2d on temporal taps, summed"

    gathered = taps[0] if kt == 1 else ctx.op("Concat", taps, {"axis": 2})  # (B, T', kt·C·H·W)
    g = spec.group
    if g > 1 and kt > 1:  # group-major channels: per group, its C/g channels for each tap
        gathered = ctx.transpose(ctx.reshape(gathered, (n, kt, g, (c // g) * h * w)), (0, 2, 1, 3))
    gathered = ctx.reshape(gathered, (n, kt * c, h, w))
    s, cg = spec.weight.shape[:2]
    w2 = ctx.const(np.ascontiguousarray(spec.weight.transpose(0, 2, 1, 3, 4)).reshape(s, kt * cg, kh, kw))
    ctx.set_frames(out, ctx.op("Conv", [gathered, w2] + bias, spatial))
    return f"Conv3d → {kt} temporal taps gathered into channels, one Conv2d"


def temporal_taps(ctx: LowerContext, x, spec: ConvSpec) -> list:
    """The kt strided slices of the zero-padded (B, T, C·H·W) view, one per temporal tap."""
    kt = spec.kernel[0]
    st, dt = spec.strides[0], spec.dilations[0]
    tb, te = spec.begin[0], spec.end[0]
    t_out = spec.out_dims[2]
    view = ctx.bt_view(x)
    if tb or te:
        view = ctx.op("Pad", [view, ctx.ints([0, tb, 0, 0, te, 0])])
    taps = []
    for i in range(kt):
        start = i * dt
        stop = start + (t_out - 1) * st + 1
        taps.append(ctx.op("Slice", [view, ctx.ints([start]), ctx.ints([stop]), ctx.ints([1]), ctx.ints([st])]))
    return taps
