"""ConvTranspose3d as one ConvTranspose2d over temporal taps gathered into channels.

In time, a transposed conv is a correlation of the stride-dilated input (``st - 1`` zero frames
between frames) with the taps reversed: output frame ``o`` reads dilated frame
``o + pt_begin - i·dt`` through tap ``i``. Zero-inserting and padding the ``(B, T, C·H·W)``
view, slicing one shifted window per tap and concatenating them on channels leaves a single
spatial ConvTranspose2d, whose kernel is the 3D kernel with taps moved into input channels.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..context import LowerContext, Unsupported
from ..registry import register


@register("ConvTranspose")
def lower_conv_transpose(ctx: LowerContext, node: ir.Node) -> str:
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    dims, out_dims = ctx.clip_dims(x), ctx.high_dims(out)
    weight = ctx.const_array(node.inputs[1])
    if weight is None:
        raise Unsupported("the ConvTranspose3d weight is not a constant")
    bias = [node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] is not None else []
    attrs = node.attributes
    auto_pad = attrs.get_string("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        raise Unsupported("ConvTranspose with auto_pad SAME_*; export with explicit padding")
    cin, cog, kt, kh, kw = weight.shape
    group = attrs.get_int("group", 1)
    st, sh, sw = attrs.get_ints("strides") or (1, 1, 1)
    dt, dh, dw = attrs.get_ints("dilations") or (1, 1, 1)
    pads = attrs.get_ints("pads") or (0,) * 6
    if auto_pad == "VALID":
        pads = (0,) * 6
    tb, hb, wb, _te, he, we = pads
    oph, opw = (attrs.get_ints("output_padding") or (0, 0, 0))[1:]
    b, c, t, h, w = dims
    t_out = out_dims[2]

    # Stride-dilate T: (B, T, K) → (B, T, st, K) with zeros → (B, T·st, K), cut to (T-1)·st + 1.
    view = ctx.bt_view(x)
    k = c * h * w
    if st > 1:
        if b is None:
            raise Unsupported("ConvTranspose3d with a temporal stride and a symbolic batch dim")
        frames4 = ctx.reshape(view, (b, t, 1, k))
        zeros = ctx.op("Expand", [ctx.const(np.zeros((1, 1, st - 1, 1), dtype=weight.dtype)),
                                  ctx.ints([b, t, st - 1, k])])
        view = ctx.reshape(ctx.op("Concat", [frames4, zeros], {"axis": 2}), (b, t * st, k))
        view = ctx.op("Slice", [view, ctx.ints([0]), ctx.ints([(t - 1) * st + 1]), ctx.ints([1])])
    dilated = (t - 1) * st + 1
    left = (kt - 1) * dt - tb
    right = t_out + (kt - 1) * dt - left - dilated
    if left < 0 or right < 0:
        start = max(-left, 0)
        view = ctx.op("Slice", [view, ctx.ints([start]), ctx.ints([dilated - max(-right, 0)]), ctx.ints([1])])
        left, right = max(left, 0), max(right, 0)
    if left or right:
        view = ctx.op("Pad", [view, ctx.ints([0, left, 0, 0, right, 0])])
    taps = [ctx.op("Slice", [view, ctx.ints([(kt - 1 - i) * dt]), ctx.ints([(kt - 1 - i) * dt + t_out]), ctx.ints([1])])
            for i in range(kt)]
    gathered = taps[0] if kt == 1 else ctx.op("Concat", taps, {"axis": 2})
    n = None if b is None else b * t_out
    if group > 1 and kt > 1:
        gathered = ctx.transpose(ctx.reshape(gathered, (n, kt, group, (c // group) * h * w)), (0, 2, 1, 3))
    gathered = ctx.reshape(gathered, (n, kt * c, h, w))
    cg = cin // group
    w2 = weight.reshape(group, cg, cog, kt, kh, kw).transpose(0, 3, 1, 2, 4, 5).reshape(kt * cin, cog, kh, kw)
    y = ctx.op("ConvTranspose", [gathered, ctx.const(np.ascontiguousarray(w2))] + bias, {
        "strides": [sh, sw], "dilations": [dh, dw], "pads": [hb, wb, he, we],
        "output_padding": [oph, opw], "group": group})
    ctx.set_frames(out, y)
    return f"ConvTranspose3d → {kt} temporal taps gathered, one ConvTranspose2d"
