"""The paired latency statistics of benchmarks/paired.py: the ratio of medians and its bootstrap interval."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.paired import alternate, ratio_interval  # noqa: E402


def test_a_constant_factor_gives_that_ratio_and_no_spread():
    base = list(np.random.default_rng(1).uniform(1.0, 2.0, 25))
    assert ratio_interval([2 * t for t in base], base) == pytest.approx((2.0, 2.0, 2.0))


def test_the_interval_holds_the_ratio_and_narrows_with_more_rounds():
    rng = np.random.default_rng(2)

    def width(n):
        noise = rng.lognormal(0, 0.2, n)  # shared by both models in a round, as alternating runs are
        a, b = 0.9 * noise * rng.lognormal(0, 0.05, n), noise * rng.lognormal(0, 0.05, n)
        ratio, low, high = ratio_interval(list(a), list(b))
        assert low <= ratio <= high
        return high - low

    assert width(200) < width(10)


def test_rounds_alternate_the_order():
    order = []
    times = alternate({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=1, iters=3)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert [len(t) for t in times.values()] == [3, 3]
