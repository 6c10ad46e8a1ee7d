"""Paired latency comparison: two models run alternately in one process, and the ratio of their
medians with a bootstrap 95% interval.

Alternating (A B, B A, A B, …) puts machine noise on both models alike; resampling the run
indices jointly keeps those pairs together, so the interval reflects the noise that remains
in the comparison rather than in each model alone.

Within one process the interval can be tight and still wrong: where a sub-millisecond model's
buffers land (alignment, cache sets) differs from process to process and moves its time by 10–30%
while each process's runs agree to 1%. ``nested_ratio_interval`` takes several processes and
resamples processes first, then rounds within each, so the interval covers that too.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

MAX_ROUNDS = 5000


def alternate(runs: dict[str, Callable[[], object]], warmup: int, iters: int,
              seconds: float = 0.0) -> dict[str, list[float]]:
    """Seconds per run of each callable, rounds alternating their order, after ``warmup``: at
    least ``iters`` rounds, and more until ``seconds`` have passed (at most ``MAX_ROUNDS``), so a
    fast model gets as many runs as its noise needs."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {key: [] for key in runs}
    start_all = time.perf_counter()
    i = 0
    while i < iters or (time.perf_counter() - start_all < seconds and i < MAX_ROUNDS):
        for key in (list(runs) if i % 2 == 0 else list(reversed(runs))):
            start = time.perf_counter()
            runs[key]()
            times[key].append(time.perf_counter() - start)
        i += 1
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


def nested_ratio_interval(processes: list[tuple[list[float], list[float]]], confidence: float = 0.95,
                          resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """The ratio over several processes (each a pair of alternated time lists): the median of the
    processes' ratios of medians, and a two-level bootstrap interval (processes resampled, then
    each one's rounds), which widens where processes disagree."""
    if len(processes) == 1:
        return ratio_interval(*processes[0], confidence=confidence, resamples=resamples, seed=seed)
    pairs = [(np.asarray(a), np.asarray(b)) for a, b in processes]
    point = float(np.median([statistics.median(a) / statistics.median(b) for a, b in pairs]))
    rng = np.random.default_rng(seed)
    ratios = np.empty(resamples)
    for r in range(resamples):
        picked = rng.integers(0, len(pairs), size=len(pairs))
        per_process = []
        for p in picked:
            a, b = pairs[p]
            rounds = rng.integers(0, len(a), size=len(a))
            per_process.append(np.median(a[rounds]) / np.median(b[rounds]))
        ratios[r] = np.median(per_process)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return point, float(low), float(high)
