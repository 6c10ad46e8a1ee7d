"""Feeding a lowered model and reading its outputs: the frames layout at the model boundary.

A lowered model takes a rank-5 clip ``(B, C, T, H, W)`` as a stack of frames ``(B·T, C, H, W)``
(batch-major) and returns rank-5 outputs the same way. An output of rank 6 to 8 leaves as its
elements in row-major order (layout ``row-major``): a reshape to its original shape restores it.
``manifest.json`` records the layout and original shape of every input and output; these helpers
apply them.
"""

from __future__ import annotations

import numpy as np


def _swap_c_t(x):
    """Axes 1 and 2 swapped, contiguous: a numpy array stays numpy, a torch tensor stays torch."""
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x.transpose(0, 2, 1, 3, 4))
    return x.permute(0, 2, 1, 3, 4).contiguous()  # a torch.Tensor (no torch import for numpy users)


def clip_to_frames(clip):
    """(B, C, T, H, W) → (B·T, C, H, W), for a numpy array or a torch tensor."""
    b, c, t, h, w = clip.shape
    return _swap_c_t(clip).reshape(b * t, c, h, w)


def frames_to_clip(frames, batch: int):
    """(B·T, C, H, W) → (B, C, T, H, W), for a numpy array or a torch tensor."""
    n, c, h, w = frames.shape
    return _swap_c_t(frames.reshape(batch, n // batch, c, h, w))


def row_major_to_tensor(y: np.ndarray, original_shape, batch: int) -> np.ndarray:
    """A ``row-major`` output back in its original shape (a symbolic batch taken as ``batch``)."""
    return y.reshape([batch if not isinstance(d, int) else d for d in original_shape])


def adapt_runner(runner, input_layouts: list[str], output_layouts: list[str], output_shapes=None):
    """Wrap a runner of the lowered model so it takes and returns the original high-rank tensors
    (``output_shapes``: the original shape of each output, needed for ``row-major`` ones)."""
    shapes = output_shapes or [None] * len(output_layouts)

    def restored(y: np.ndarray, layout: str, shape, size: int) -> np.ndarray:
        if layout == "frames":
            return frames_to_clip(y, size)
        return row_major_to_tensor(y, shape, size) if layout == "row-major" else y

    def fed(batch: list[np.ndarray]) -> list[np.ndarray]:
        return [clip_to_frames(x) if layout == "frames" else x for x, layout in zip(batch, input_layouts)]

    def back(batch: list[np.ndarray], outputs: list[np.ndarray]) -> list[np.ndarray]:
        size = batch[0].shape[0] if batch else 1
        return [restored(y, layout, shape, size) for y, layout, shape in zip(outputs, output_layouts, shapes)]

    def run(batch: list[np.ndarray]) -> list[np.ndarray]:
        return back(batch, runner(fed(batch)))

    if hasattr(runner, "many"):  # keep the runner's one-call form for many batches
        run.many = lambda batches: [back(b, out) for b, out in  # type: ignore[attr-defined]
                                    zip(batches, runner.many([fed(b) for b in batches]))]
    return run
