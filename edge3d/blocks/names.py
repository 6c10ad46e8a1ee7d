"""The blocks' names and stride modes, importable without torch (for the command line's options).

``edge3d.blocks.structures.BLOCKS`` registers the block classes under these names, in this order
(tests/test_lint_startup.py checks that they agree).
"""

from __future__ import annotations

BLOCK_NAMES = ("st-add", "st-cat", "r2plus1d", "p3d-a", "p3d-b", "p3d-c", "rank1", "fsb")
STRIDE_MODES = ("aligned", "paper")
