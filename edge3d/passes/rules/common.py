"""Attribute helpers shared by the lowering rules."""

from __future__ import annotations

import math

from ..context import Unsupported


def attr(node, name: str, default=None):
    a = node.attributes.get(name)
    return default if a is None else a.value


def all_attrs(node) -> dict:
    """The node's attributes, to re-emit them unchanged on a rank-4 node of the same op."""
    return {name: a.value for name, a in node.attributes.items()}


def window(node, spatial: tuple[int, ...], kernel: tuple[int, ...]):
    """Strides, dilations and explicit (begin, end) pads of a conv/pool node, auto_pad resolved."""
    n = len(kernel)
    strides = tuple(attr(node, "strides", None) or (1,) * n)
    dilations = tuple(attr(node, "dilations", None) or (1,) * n)
    pads = tuple(attr(node, "pads", None) or (0,) * (2 * n))
    auto_pad = attr(node, "auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
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
