"""3D pools as a 2D pool on frames followed by a ``(kt, 1)`` pool over time: on the frames viewed
as ``(B, 1, T, C·H·W)`` (no transpose), or on the time layout where the input is already there.

Both max and average pooling are separable over a box window: the max of maxes is the max, and
the window's element count (with or without pads, clipped by ``ceil_mode``) is the product of
per-axis counts, so the mean of per-axis means is the mean.
"""

from __future__ import annotations

import onnx_ir as ir

from ..context import LowerContext, Unsupported, frames_dims, prod
from ..registry import register
from .common import window


def pooled_size(size: int, k: int, s: int, d: int, pb: int, pe: int) -> int:
    """Output length in ceil mode as the ONNX spec and ONNX Runtime define it: a last window
    that would start in the end padding is dropped."""
    out = -(-(size + pb + pe - d * (k - 1) - 1) // s) + 1
    return out - 1 if (out - 1) * s >= size + pb else out


@register("MaxPool", "AveragePool")
def lower_pool(ctx: LowerContext, node: ir.Node) -> str:
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    dims = ctx.clip_dims(x)
    if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
        raise Unsupported("MaxPool's Indices output has no rank-4 equivalent")
    attrs = node.attributes
    kernel = attrs["kernel_shape"].as_ints()
    strides, dilations, begin, end = window(node, dims[2:], kernel)
    common = {"ceil_mode": attrs.get_int("ceil_mode")}
    if node.op_type == "AveragePool":
        common["count_include_pad"] = attrs.get_int("count_include_pad")
    use_dilations = node.op_type == "MaxPool" or ctx.opset >= 19
    if not use_dilations and any(d != 1 for d in dilations):
        raise Unsupported("dilated AveragePool needs opset 19")

    out_dims = ctx.high_dims(out)
    if attrs.get_int("ceil_mode", 0):
        runtime = [pooled_size(*args) for args in zip(dims[2:], kernel, strides, dilations, begin, end)]
        if tuple(runtime) != tuple(out_dims[2:]):
            raise Unsupported(
                f"ceil_mode window that starts in the padding: ONNX shape inference gives {list(out_dims[2:])}, "
                f"ONNX Runtime computes {runtime}; export the pool with ceil_mode=False or other padding")
    b, c, t, h, w = dims
    kt, kh, kw = kernel
    y: ir.Value | None = None
    steps = []
    if (kh, kw, strides[1], strides[2], begin[1], begin[2], end[1], end[2]) != (1, 1, 1, 1, 0, 0, 0, 0):
        spatial = {"kernel_shape": [kh, kw], "strides": list(strides[1:]), "pads": [begin[1], begin[2], end[1], end[2]],
                   **common}
        if use_dilations:
            spatial["dilations"] = list(dilations[1:])
        y = ctx.op(node.op_type, [ctx.frames(x)], spatial)
        steps.append(f"{kh}x{kw} on frames")
    _, _, t_out, h_out, w_out = out_dims
    if (kt, strides[0], begin[0], end[0]) == (1, 1, 0, 0):
        ctx.set_frames(out, y if y is not None else ctx.frames(x))
        return f"{node.op_type}3d → " + (" then ".join(steps) or "identity")
    temporal = {"kernel_shape": [kt, 1], "strides": [strides[0], 1], "pads": [begin[0], 0, end[0], 0], **common}
    if use_dilations:
        temporal["dilations"] = [dilations[0], 1]
    if y is None and ctx.row_major_only(x):  # already in the time layout: pool there
        z = ctx.op(node.op_type, [ctx.time(x)], temporal)
        ctx.set_canonical(out, z, (b, c, t_out, h_out * w_out))
        steps.append(f"{kt}x1 on the time layout")
    else:  # frames viewed as (B, 1, T, C·H·W): the same window over T, and no transpose either way
        source = y if y is not None else ctx.frames(x)
        view = ctx.reshape(source, (b, 1, t, prod([c, h_out, w_out])))
        z = ctx.op(node.op_type, [view], temporal)
        ctx.set_frames(out, ctx.reshape(z, frames_dims((b, c, t_out, h_out, w_out))))
        steps.append(f"{kt}x1 on the frames viewed as (B, 1, T, C·H·W)")
    return f"{node.op_type}3d → " + " then ".join(steps)


@register("GlobalAveragePool", "GlobalMaxPool")
def lower_global_pool(ctx: LowerContext, node: ir.Node) -> str:
    x, out = node.inputs[0], node.outputs[0]
    assert x is not None
    dims = ctx.clip_dims(x)
    b, c = dims[:2]
    y = ctx.op(node.op_type, [ctx.time(x)])  # (B, C, 1, 1): the canonical form of (B, C, 1, 1, 1)
    ctx.set_canonical(out, y, (b, c, 1, 1))
    return f"{node.op_type} on the time layout"
