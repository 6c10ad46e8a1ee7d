"""A procedural video action dataset whose classes differ only in motion.

Each clip shows a textured "actor" on a smoothed-noise background, a few small distractor blobs
that drift at random, and per-pixel noise. The actor's shape, texture, colours, size, angle and
position are drawn independently of the class; the class decides only how the actor moves. The
image wraps around (a torus), so the actor's position and angle are uniform in every frame
whatever the motion, and the scale classes share their per-frame size distribution with all the
others: a single frame says nothing about the class, and a model must look across frames.

    from benchmarks.actions import make_clips
    x, y = make_clips(1000, seed=0)   # x: float32 (1000, 3, 8, 56, 56), y: int64 (1000,)
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from torch import nn

CLASSES = (
    "move right", "move left", "move down", "move up",
    "rotate clockwise", "rotate counter-clockwise", "expand", "contract",
    "shake horizontally", "shake vertically",
)
# The class a clip shows when played backwards, and when mirrored left to right: label maps for augmentation.
REVERSED = (1, 0, 3, 2, 5, 4, 7, 6, 8, 9)
MIRRORED = (1, 0, 2, 3, 5, 4, 6, 7, 8, 9)
NOISE = 0.04
DISTRACTORS = 2
CHUNK = 128


def make_clips(n: int, classes: int = len(CLASSES), frames: int = 8, size: int = 56,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` normalised clips ``(n, 3, frames, size, size)`` and their labels, balanced over ``classes``.

    The same seed gives the same clips; the labels cycle through the classes and are then shuffled."""
    if not 1 <= classes <= len(CLASSES):
        raise ValueError(f"classes must be 1..{len(CLASSES)}, got {classes}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % classes)
    out = np.empty((n, 3, frames, size, size), dtype=np.float32)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        clip = _render(labels[start:stop], frames, size, rng)
        out[start:stop] = _standardise(clip).transpose(0, 4, 1, 2, 3)
    return torch.from_numpy(out), torch.from_numpy(labels.astype(np.int64))


def _standardise(clip: np.ndarray) -> np.ndarray:
    """Each frame's channels to zero mean and unit variance, as a camera's auto-exposure would.

    This removes the background's overall colour, which otherwise swamps the motion early in
    training; it is a function of the frame alone, so it cannot carry the class into a frame."""
    mean = clip.mean(axis=(2, 3), keepdims=True)
    return (clip - mean) / (clip.std(axis=(2, 3), keepdims=True) + 1e-3)


def _render(labels: np.ndarray, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Raw clips ``(n, T, H, W, 3)`` in [0, 1]: background, distractors, then the actor on top."""
    n = len(labels)
    clip = np.broadcast_to(_background(n, size, rng)[:, None], (n, frames, size, size, 3)).copy()
    for _ in range(DISTRACTORS):
        _paint(clip, _distractor(n, frames, size, rng))
    _paint(clip, _actor(labels, frames, size, rng))
    clip += NOISE * rng.standard_normal(clip.shape, dtype=np.float32)
    return np.clip(clip, 0.0, 1.0, out=clip)


def _background(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Static smoothed colour noise ``(n, H, W, 3)``: a random 6×6 grid, bilinearly upsampled."""
    up = _upsampler(6, size)
    grid = rng.uniform(0.3, 0.7, (n, 1, 1, 3)) + rng.uniform(0.03, 0.1, (n, 1, 1, 1)) * rng.normal(size=(n, 6, 6, 3))
    return np.einsum("hi,nijc,wj->nhwc", up, grid, up, optimize=True).astype(np.float32)


def _upsampler(low: int, high: int) -> np.ndarray:
    """The ``(high, low)`` matrix of linear interpolation weights from ``low`` to ``high`` samples."""
    pos = np.linspace(0, low - 1, high)
    return np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(low)[None, :]))


def _log_radius(n: int, frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A base log-radius, a per-frame log-scale rate, and the log-scale offset of an actor that keeps its size.

    Expanding and contracting actors move through ``rate · (t - centre)`` over the clip; a still
    actor is frozen at one such offset, picked at a uniformly random frame, so in a random frame
    every class has the same size distribution."""
    base = np.log(rng.uniform(8.0, 13.0, n))
    rate = rng.uniform(0.06, 0.10, n)
    frozen = rate * (rng.integers(0, frames, n) - (frames - 1) / 2)
    return base, rate, frozen


def _actor(labels: np.ndarray, frames: int, size: int, rng: np.random.Generator) -> dict:
    """Per-frame centre, angle and radius of each clip's actor, moved as its class says."""
    n = len(labels)
    t = np.arange(frames)[None, :]
    centred = t - (frames - 1) / 2
    x0, y0 = rng.uniform(0, size, (2, n, 1))
    angle0 = rng.uniform(0, 2 * np.pi, (n, 1))
    speed = rng.uniform(1.5, 3.0, (n, 1))
    spin = np.deg2rad(rng.uniform(12.0, 22.0, (n, 1)))
    amplitude = rng.uniform(3.0, 5.0, (n, 1))
    wave = 2 * np.pi * t / rng.uniform(3.5, 5.5, (n, 1)) + rng.uniform(0, 2 * np.pi, (n, 1))
    base, rate, frozen = _log_radius(n, frames, rng)
    c = labels[:, None]
    dx = np.select([c == 0, c == 1, c == 8], [speed * t, -speed * t, amplitude * np.sin(wave)], 0.0)
    dy = np.select([c == 2, c == 3, c == 9], [speed * t, -speed * t, amplitude * np.sin(wave)], 0.0)
    angle = angle0 + np.select([c == 4, c == 5], [spin * t, -spin * t], 0.0)
    log_scale = np.select([c == 6, c == 7], [rate[:, None] * centred, -rate[:, None] * centred], frozen[:, None])
    radius = np.exp(base[:, None] + log_scale)
    return _looks(n, rng) | {"x": x0 + dx, "y": y0 + dy, "angle": angle, "radius": radius}


def _distractor(n: int, frames: int, size: int, rng: np.random.Generator) -> dict:
    """A small blob drifting in a random direction at a random speed, whatever the class."""
    t = np.arange(frames)[None, :]
    x0, y0 = rng.uniform(0, size, (2, n, 1))
    heading = rng.uniform(0, 2 * np.pi, (n, 1))
    speed = rng.uniform(0.0, 2.0, (n, 1))
    angle = rng.uniform(0, 2 * np.pi, (n, 1)) + np.deg2rad(rng.uniform(-20, 20, (n, 1))) * t
    radius = np.broadcast_to(rng.uniform(2.0, 4.0, (n, 1)), (n, frames))
    return _looks(n, rng) | {"x": x0 + speed * np.cos(heading) * t, "y": y0 + speed * np.sin(heading) * t,
                             "angle": angle, "radius": radius}


def _looks(n: int, rng: np.random.Generator) -> dict:
    """Shape (a superellipse: diamond, ellipse or rounded box), grating texture and two colours."""
    return {
        "power": rng.choice([1.0, 2.0, 6.0], n),
        "aspect": rng.uniform(0.55, 1.0, n),
        "freq": rng.uniform(1.0, 2.5, (n, 2)),
        "orient": rng.uniform(0, np.pi, (n, 2)),
        "phase": rng.uniform(0, 2 * np.pi, (n, 2)),
        "colours": np.stack([first := rng.uniform(0.0, 1.0, (n, 3)), (first + 0.5) % 1.0], axis=1),
    }


def _paint(clip: np.ndarray, obj: dict) -> None:
    """Alpha-blend the object into ``clip`` in place, in a window around it that wraps around the edges."""
    n, frames, size = clip.shape[:3]
    f32 = {k: np.asarray(v, dtype=np.float32) for k, v in obj.items()}
    span = min(size, 2 * int(np.ceil(f32["radius"].max() * np.sqrt(2))) + 3)
    offsets = np.arange(span, dtype=np.float32) - span // 2
    corner_x, corner_y = np.floor(f32["x"])[..., None] + offsets, np.floor(f32["y"])[..., None] + offsets
    dx, dy = corner_x - f32["x"][..., None], corner_y - f32["y"][..., None]  # (n, T, span)
    cos, sin = np.cos(f32["angle"])[..., None, None], np.sin(f32["angle"])[..., None, None]
    radius = f32["radius"][..., None, None]
    u = (cos * dx[:, :, None, :] + sin * dy[:, :, :, None]) / radius
    v = (-sin * dx[:, :, None, :] + cos * dy[:, :, :, None]) / radius
    p = f32["power"][:, None, None, None]
    rho = (np.abs(u) ** p + np.abs(v / f32["aspect"][:, None, None, None]) ** p) ** (1 / p)
    alpha = np.clip((1.0 - rho) * radius + 0.5, 0.0, 1.0)[..., None]
    texture = np.zeros_like(u)
    for k in range(2):
        o, f, ph = (f32[key][:, k, None, None, None] for key in ("orient", "freq", "phase"))
        texture += np.cos(2 * np.pi * f * (u * np.cos(o) + v * np.sin(o)) + ph)
    a, b = f32["colours"][:, 0, None, None, None, :], f32["colours"][:, 1, None, None, None, :]
    colour = a + (b - a) * ((texture[..., None] + 2) / 4)
    index = (np.arange(n)[:, None, None, None], np.arange(frames)[None, :, None, None],
             corner_y.astype(np.int64)[:, :, :, None] % size, corner_x.astype(np.int64)[:, :, None, :] % size)
    under = clip[index]
    clip[index] = under + alpha * (colour - under)


class _FrameNet(nn.Module):
    """A small 2D CNN that sees one frame."""

    def __init__(self, classes: int):
        super().__init__()
        layers, cin = [], 3
        for cout in (32, 64, 128):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def single_frame_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, heldout_x: torch.Tensor,
                          heldout_y: torch.Tensor, epochs: int = 8, seed: int = 0) -> float:
    """Held-out accuracy of a 2D CNN trained and tested on one random frame per clip.

    The dataset's claim is that this stays at chance (1 / classes): any motion class is
    equally likely to produce any single frame."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    classes = int(max(train_y.max(), heldout_y.max())) + 1
    model = _FrameNet(classes)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * -(-len(train_x) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        frames, total = _random_frames(train_x, gen), 0.0
        for idx in torch.randperm(len(frames), generator=gen).split(64):
            loss = nn.functional.cross_entropy(model(frames[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"single-frame epoch {epoch + 1}/{epochs}  loss {total / len(frames):.3f}  "
              f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    model.eval()
    with torch.no_grad():
        frames = _random_frames(heldout_x, gen)
        pred = torch.cat([model(b).argmax(1) for b in frames.split(256)])
    return (pred == heldout_y).float().mean().item()


def _random_frames(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One uniformly random frame ``(C, H, W)`` of each clip ``(C, T, H, W)``."""
    t = torch.randint(0, x.shape[2], (len(x),), generator=gen)
    return x[torch.arange(len(x)), :, t]
