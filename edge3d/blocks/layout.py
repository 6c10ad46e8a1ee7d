"""4D views of a clip used inside the blocks; only the block boundary is rank 5.

frames ``(B·T, C, H, W)`` and time ``(B, C, T, H·W)``; both come from the clip through rank-4
reshapes and one rank-4 transpose, never through a rank-5 permute.
"""

from __future__ import annotations

import torch


def clip_to_time(x: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = x.shape
    return x.reshape(b, c, t, h * w)


def time_to_clip(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, c, t, _ = y.shape
    return y.reshape(b, c, t, h, w)


def time_to_frames(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, c, t, _ = y.shape
    return y.transpose(1, 2).reshape(b * t, c, h, w)


def frames_to_time(f: torch.Tensor, batch: int) -> torch.Tensor:
    n, c, h, w = f.shape
    return f.reshape(batch, n // batch, c, h * w).transpose(1, 2)


def subsample_pixels(y: torch.Tensor, h: int, w: int, sh: int, sw: int) -> torch.Tensor:
    """Keep pixels (i·sh, j·sw) of every frame of a time-layout tensor: the aligned stride."""
    if sh == sw == 1:
        return y
    b, c, t, _ = y.shape
    kept = y.reshape(b, c * t, h, w)[:, :, ::sh, ::sw]
    return kept.reshape(b, c, t, kept.shape[-2] * kept.shape[-1])
