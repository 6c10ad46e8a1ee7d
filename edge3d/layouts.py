"""Feeding a lowered model and reading its outputs: the frames layout at the model boundary.

A lowered model takes a rank-5 clip ``(B, C, T, H, W)`` as a stack of frames ``(B·T, C, H, W)``
(batch-major) and returns rank-5 outputs the same way. ``manifest.json`` records the layout and
original shape of every input and output; these helpers apply them.
"""

from __future__ import annotations

import numpy as np


def clip_to_frames(clip: np.ndarray) -> np.ndarray:
    """(B, C, T, H, W) → (B·T, C, H, W)."""
    b, c, t, h, w = clip.shape
    return np.ascontiguousarray(clip.transpose(0, 2, 1, 3, 4)).reshape(b * t, c, h, w)


def frames_to_clip(frames: np.ndarray, batch: int) -> np.ndarray:
    """(B·T, C, H, W) → (B, C, T, H, W)."""
    n, c, h, w = frames.shape
    return np.ascontiguousarray(frames.reshape(batch, n // batch, c, h, w).transpose(0, 2, 1, 3, 4))


def adapt_runner(runner, input_layouts: list[str], output_layouts: list[str]):
    """Wrap a runner of the lowered model so it takes and returns the original rank-5 tensors."""
    def run(batch: list[np.ndarray]) -> list[np.ndarray]:
        size = batch[0].shape[0] if batch else 1
        feeds = [clip_to_frames(x) if layout == "frames" else x for x, layout in zip(batch, input_layouts)]
        outputs = runner(feeds)
        return [frames_to_clip(y, size) if layout == "frames" else y for y, layout in zip(outputs, output_layouts)]

    return run
