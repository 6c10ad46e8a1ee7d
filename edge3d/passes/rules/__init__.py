"""Lowering rules, one module per op family; importing this package registers them all."""

from . import (  # noqa: F401
    channel_last,
    conv,
    conv_transpose,
    einsum,
    elementwise,
    merged_axes,
    movement,
    norm,
    pool,
    reduce,
    resize,
    shape,
)
