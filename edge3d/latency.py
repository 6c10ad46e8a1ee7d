"""Latency statistics: the one definition the manifest (export) and the bench report share.

Both used to compute their own, with different percentile rules (nearest rank against linear
interpolation) and different names (``p50_ms`` against ``median_ms``), so the same runs gave two
sets of figures. Percentiles interpolate linearly between the sorted runs (numpy's default), and
the spread is the sample standard deviation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KEYS = ("iters", "min_ms", "mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "std_ms")


def summarize(times_ms: Sequence[float]) -> dict:
    """``times_ms``: one entry per timed run. No runs give ``{"iters": 0}`` (an interrupted bench)."""
    if len(times_ms) == 0:
        return {"iters": 0}
    times = np.sort(np.asarray(times_ms, dtype=np.float64))
    p90, p95, p99 = (float(v) for v in np.percentile(times, [90, 95, 99]))
    return {"iters": len(times), "min_ms": float(times[0]), "mean_ms": float(times.mean()),
            "median_ms": float(np.median(times)), "p90_ms": p90, "p95_ms": p95, "p99_ms": p99,
            "max_ms": float(times[-1]), "std_ms": float(times.std(ddof=1)) if len(times) > 1 else 0.0}
