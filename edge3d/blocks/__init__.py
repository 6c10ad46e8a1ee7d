"""The paper's spatial/temporal blocks and the structures it compares them with.

The block classes need torch, so they are imported on first use: ``edge3d.blocks.names`` (the
blocks' names and stride modes, for the command line) stays light.
"""

from __future__ import annotations

from .names import BLOCK_NAMES, STRIDE_MODES

__all__ = ["BLOCKS", "BLOCK_NAMES", "STRIDE_MODES", "Block", "Geometry"]

_LAZY = ("BLOCKS", "Block", "Geometry")


def __getattr__(name: str):
    if name in _LAZY:
        from . import structures

        return getattr(structures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
