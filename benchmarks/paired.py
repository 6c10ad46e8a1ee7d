"""Paired latency comparison: two models run alternately in one process, and the ratio of their
medians with a bootstrap 95% interval.

Alternating (A B, B A, A B, …) puts machine noise on both models alike; resampling the run
indices jointly keeps those pairs together, so the interval reflects the noise that remains
in the comparison rather than in each model alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np


def alternate(runs: dict[str, Callable[[], object]], warmup: int, iters: int) -> dict[str, list[float]]:
    """Seconds per run of each callable, ``iters`` rounds alternating their order, after ``warmup``."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {key: [] for key in runs}
    for i in range(iters):
        for key in (list(runs) if i % 2 == 0 else list(reversed(runs))):
            start = time.perf_counter()
            runs[key]()
            times[key].append(time.perf_counter() - start)
    return times


def ratio_interval(numerator: list[float], denominator: list[float], confidence: float = 0.95,
                   resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """median(numerator) / median(denominator) and the percentile bootstrap interval of that
    ratio, resampling the rounds (index i of both lists) together."""
    a, b = np.asarray(numerator), np.asarray(denominator)
    assert len(a) == len(b) and len(a) > 0
    ratio = statistics.median(a) / statistics.median(b)
    picks = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    ratios = np.median(a[picks], axis=1) / np.median(b[picks], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(ratio), float(low), float(high)
