"""Calibration clips for block fitting and INT8 quantization: random, .npy folders or videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import InputError, first_line

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
KINETICS_MEAN, KINETICS_STD = 0.45, 0.225


def calibration_clips(source: str | Path | None, shape: tuple[int, ...], count: int = 8, seed: int = 0):
    """Calibration clips of ``shape``: ``random`` (seeded normal), or a folder of ``.npy`` clips
    ``(C, T, H, W)`` or of videos (decoded with PyAV, resized, scaled to [0, 1] and normalised
    with the Kinetics mean 0.45 and std 0.225; save ``.npy`` clips for another normalisation)."""
    if source is None:
        return []
    if str(source) == "random":
        gen = torch.Generator().manual_seed(seed)
        return [torch.randn(*shape, generator=gen) for _ in range(count)]
    folder = Path(source)
    files = sorted(folder.iterdir()) if folder.is_dir() else []
    arrays = [f for f in files if f.suffix == ".npy"]
    videos = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
    if not arrays and not videos:
        raise InputError(f"--calib {source}: not 'random' and not a folder of .npy clips or videos; give one of those")
    clips = [_npy_clip(path, shape) for path in arrays[:count]]
    for path in videos:
        if len(clips) >= count:
            break
        clips.extend(_video_clips(path, shape, count - len(clips)))
    return clips


def _npy_clip(path: Path, shape) -> torch.Tensor:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # a pickled object array, or not an .npy at all
        raise InputError(f"{path} is not a numeric .npy array ({first_line(exc)}); save clips with np.save") from None
    if array.dtype.kind not in "fiub":
        raise InputError(f"{path} holds {array.dtype} values; calibration clips must be numbers")
    array = array.astype(np.float32)
    if array.ndim == 4:
        array = array[None]
    if array.ndim != 5 or tuple(array.shape[1:]) != tuple(shape[1:]):
        raise InputError(f"{path} has shape {array.shape}; calibration clips must be (C, T, H, W) = {tuple(shape[1:])}")
    return torch.from_numpy(array)


def _video_clips(path: Path, shape, limit: int) -> list[torch.Tensor]:
    """Consecutive runs of T frames from a video, as (1, 3, T, H, W) clips."""
    try:
        import av
    except ImportError:
        raise InputError("decoding calibration videos needs PyAV: pip install 'edge3d[video]'") from None
    _, channels, t, h, w = shape
    if channels != 3:
        raise InputError(f"the model takes {channels}-channel clips; video frames are RGB: give .npy clips")
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(width=w, height=h, format="rgb24") for f in container.decode(video=0)]
    except av.FFmpegError as exc:
        raise InputError(f"cannot decode {path} ({exc}); check the file") from None
    clips = []
    for start in range(0, len(frames) - t + 1, t):
        if len(clips) == limit:
            break
        clip = np.stack(frames[start:start + t]).astype(np.float32) / 255.0  # (T, H, W, 3)
        clip = (clip - KINETICS_MEAN) / KINETICS_STD
        clips.append(torch.from_numpy(clip.transpose(3, 0, 1, 2).copy())[None])
    if not clips:
        raise InputError(f"{path} has {len(frames)} frames, fewer than the {t} a clip needs")
    return clips
