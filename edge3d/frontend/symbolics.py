"""ONNX symbolics for ATen ops the TorchScript exporter lacks at opsets 13 to 22.

``aten::rms_norm`` (``nn.RMSNorm``, used by most recent video transformers and VAEs) has a
symbolic only from opset 23, where ONNX has RMSNormalization. Below that, it is written as the
ops of its definition: ``x / sqrt(mean(x², normalized axes) + eps) · weight``.

``aten::_upsample_nearest_exact{1,2,3}d`` (``mode="nearest-exact"``, e.g. Wan's VAE upsampler) has
none at all. PyTorch reads source pixel ``floor((i + 0.5) · in / out)``: ONNX Resize's
``half_pixel`` coordinates rounded with ``round_prefer_ceil``. It is torch's own nearest symbolic
with those two attributes.
"""

from __future__ import annotations

import functools


@functools.cache
def register() -> None:
    """Register the symbolics, once per process, for every opset the exporter is asked for."""
    import torch
    from torch.onnx import symbolic_helper

    def rms_norm(g, x, normalized_shape, weight, eps):
        shape = symbolic_helper._get_const(normalized_shape, "is", "normalized_shape")
        axes = list(range(-len(shape), 0))
        value = symbolic_helper._maybe_get_const(eps, "f")
        if value is None or not isinstance(value, float):
            value = float(torch.finfo(torch.float32).eps)  # torch's default for a float32 input
        squares = g.op("Mul", x, x)
        if g.opset >= 18:
            mean = g.op("ReduceMean", squares, g.op("Constant", value_t=torch.tensor(axes)), keepdims_i=1)
        else:
            mean = g.op("ReduceMean", squares, axes_i=axes, keepdims_i=1)
        scale = g.op("Sqrt", g.op("Add", mean, g.op("Constant", value_t=torch.tensor(value))))
        out = g.op("Div", x, scale)
        if not symbolic_helper._is_none(weight):
            out = g.op("Mul", out, weight)
        out.setType(x.type())
        return out

    def nearest_exact(dims: int):
        def symbolic(g, x, output_size, *scales):
            out = symbolic_helper._interpolate_helper(f"upsample_nearest{dims}d", dims + 2, "nearest")(
                g, x, output_size, *scales)
            out.node().s_("coordinate_transformation_mode", "half_pixel")
            out.node().s_("nearest_mode", "round_prefer_ceil")
            return out
        return symbolic

    for opset in range(13, 23):
        torch.onnx.register_custom_op_symbolic("aten::rms_norm", rms_norm, opset)
        for dims in (1, 2, 3):
            torch.onnx.register_custom_op_symbolic(f"aten::_upsample_nearest_exact{dims}d", nearest_exact(dims), opset)
