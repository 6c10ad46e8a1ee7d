"""The window of a conv or pool node (strides, dilations, pads), shared by the lowering rules."""

from __future__ import annotations

import math
from collections.abc import Sequence

import onnx_ir as ir

from ..context import Unsupported

Ints = tuple[int, ...]


def window(node: ir.Node, spatial: Sequence[int], kernel: Sequence[int]) -> tuple[Ints, Ints, Ints, Ints]:
    """Strides, dilations and explicit (begin, end) pads of a conv/pool node, auto_pad resolved."""
    n = len(kernel)
    attrs = node.attributes
    strides = tuple(attrs.get_ints("strides") or (1,) * n)
    dilations = tuple(attrs.get_ints("dilations") or (1,) * n)
    pads = tuple(attrs.get_ints("pads") or (0,) * (2 * n))
    auto_pad = attrs.get_string("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
        pads = tuple(begins + ends)
    elif auto_pad == "VALID":
        pads = (0,) * (2 * n)
    elif auto_pad not in ("NOTSET", ""):
        raise Unsupported(f"auto_pad={auto_pad} is not an ONNX value")
    return strides, dilations, pads[:n], pads[n:]
