"""Resize over T, H, W as a spatial resize on frames, then a temporal one on the time layout.

Nearest, linear and cubic interpolation are separable per axis, and a resize with an unchanged
axis is the identity on it for every coordinate mode except tf_crop_and_resize.
"""

from __future__ import annotations

import onnx_ir as ir

from ..context import LowerContext, Rep, Unsupported
from ..registry import register


@register("Resize", "Upsample")
def lower_resize(ctx: LowerContext, node: ir.Node) -> str:
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    dims, out_dims = ctx.clip_dims(x), ctx.high_dims(out)
    if out_dims[0] != dims[0] or out_dims[1] != dims[1]:
        raise Unsupported("Resize over the batch or channel axis")
    mode = node.attributes.get_string("coordinate_transformation_mode", "half_pixel")
    if mode == "tf_crop_and_resize":
        raise Unsupported("tf_crop_and_resize takes a region of interest over all axes")
    if node.op_type == "Upsample" or ctx.opset < 11:
        raise Unsupported("Resize before opset 11 (Upsample); re-export at opset ≥ 11")
    attrs = {name: a for name, a in node.attributes.items() if name != "axes"}
    b, c, t, h, w = dims
    _, _, t2, h2, w2 = out_dims
    if b is None:
        raise Unsupported("Resize with a symbolic batch dim")
    steps = []
    if (h2, w2) != (h, w):
        y = ctx.op("Resize", [ctx.frames(x), None, None, ctx.ints([b * t, c, h2, w2])], attrs)
        steps.append("spatial on frames")
        if t2 == t:
            ctx.set_frames(out, y)
            return "Resize spatial on frames"
        source = ctx.time_from_frames(Rep((b, c, t, h2, w2), frames=y))
    else:
        source = ctx.time(x)
    z = ctx.op("Resize", [source, None, None, ctx.ints([b, c, t2, h2 * w2])], attrs)
    ctx.set_canonical(out, z, (b, c, t2, h2 * w2))
    steps.append("temporal on the time layout")
    return "Resize " + " then ".join(steps)
