"""The paper's spatial/temporal blocks and the structures it compares them with."""

from .structures import BLOCKS, STRIDE_MODES, Block, Geometry

__all__ = ["BLOCKS", "STRIDE_MODES", "Block", "Geometry"]
