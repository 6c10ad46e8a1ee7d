"""Timing: the lowered model and its baseline, alternating run by run in one process.

Alternating spreads machine noise (other processes, frequency changes) over both models alike,
so their ratio means something even on a noisy machine. Ctrl-C ends the loop early; what was
measured so far is kept.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np

from ..latency import summarize


@dataclass
class Candidate:
    name: str  # "lowered" or "original"
    load: object  # () -> session with run(feeds)
    feeds: dict
    frames_per_clip: int
    clips_per_run: int
    session: object = None
    load_s: float = 0.0
    cold_ms: float = 0.0
    times_ms: list[float] = field(default_factory=list)


def run_alternating(candidates: list[Candidate], warmup: int, iters: int | None, duration: float | None,
                    tick=None) -> bool:
    """Load, cold run, warm-up, then alternate. Returns False if interrupted (Ctrl-C)."""
    try:
        for c in candidates:
            start = time.perf_counter()
            c.session = c.load()
            c.load_s = time.perf_counter() - start
            start = time.perf_counter()
            c.session.run(c.feeds)
            c.cold_ms = (time.perf_counter() - start) * 1e3
        for _ in range(warmup):
            for c in candidates:
                c.session.run(c.feeds)
        deadline = time.perf_counter() + duration if duration else None
        i = 0
        while (iters is None or i < iters) and (deadline is None or time.perf_counter() < deadline):
            order = candidates if i % 2 == 0 else candidates[::-1]
            for c in order:
                if hasattr(c.session, "timed_run"):  # a remote board measures itself
                    c.times_ms.append(c.session.timed_run(c.feeds))
                    continue
                start = time.perf_counter()
                c.session.run(c.feeds)
                c.times_ms.append((time.perf_counter() - start) * 1e3)
            i += 1
            if tick:
                tick(i)
    except KeyboardInterrupt:
        return False
    return True


def summary(times_ms: list[float], frames_per_clip: int, clips_per_run: int) -> dict:
    """``edge3d.latency.summarize`` plus throughput at the median."""
    stats = summarize(times_ms)
    if not stats["iters"]:
        return stats
    median = stats["median_ms"]
    return {**stats, "clips_per_s": clips_per_run * 1e3 / median,
            "frames_per_s": clips_per_run * frames_per_clip * 1e3 / median}


def ratio_interval(numerator: list[float], denominator: list[float], samples: int = 2000, level: float = 0.95,
                   seed: int = 0) -> dict:
    """Ratio of medians with a bootstrap confidence interval (runs resampled in pairs)."""
    a, b = np.asarray(numerator), np.asarray(denominator)
    n = min(len(a), len(b))
    if n == 0:
        return {}
    a, b = a[:n], b[:n]
    rng = random.Random(seed)
    ratios = []
    for _ in range(samples):
        idx = [rng.randrange(n) for _ in range(n)]
        ratios.append(float(np.median(a[idx]) / np.median(b[idx])))
    low, high = np.percentile(ratios, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return {"ratio": float(np.median(a) / np.median(b)), "low": float(low), "high": float(high), "level": level,
            "bootstrap_samples": samples, "significant": bool(high < 1 or low > 1)}


def streaming(times_ms: list[float], window: int, hop: int, camera_fps: float) -> dict:
    """A clip of ``window`` frames every ``hop`` new frames: does inference keep up with the camera?"""
    budget_ms = hop * 1e3 / camera_fps
    arr = np.asarray(times_ms)
    return {
        "window": window, "hop": hop, "camera_fps": camera_fps, "budget_ms_per_clip": budget_ms,
        "amortised_ms_per_frame": float(np.median(arr)) / hop,
        "p99_ms_per_clip": float(np.percentile(arr, 99)),
        "keeps_up": bool(np.percentile(arr, 99) <= budget_ms),
        "keeps_up_median": bool(np.median(arr) <= budget_ms),
        "max_camera_fps": hop * 1e3 / float(np.median(arr)),
        "dropped_clip_fraction": float((arr > budget_ms).mean()),
    }
