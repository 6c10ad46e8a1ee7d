"""The paired latency statistics of benchmarks/paired.py: the ratio of medians and its bootstrap interval."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.paired import MAX_ROUNDS, alternate, nested_ratio_interval, ratio_interval  # noqa: E402


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


def test_a_time_budget_adds_rounds_up_to_the_cap():
    times = alternate({"a": lambda: None, "b": lambda: None}, warmup=0, iters=3, seconds=0.05)
    assert 3 < len(times["a"]) <= MAX_ROUNDS


def test_processes_that_disagree_widen_the_interval():
    """Three processes, each tight on its own (0.8, 1.0, 1.2): one process's interval excludes
    the others' ratios; the nested interval covers them, and one process gives the plain one."""
    rng = np.random.default_rng(3)
    processes = []
    for factor in (0.8, 1.0, 1.2):
        b = rng.uniform(1.0, 1.01, 200)
        processes.append((list(factor * b), list(b)))
    ratio, low, high = nested_ratio_interval(processes)
    assert ratio == pytest.approx(1.0, abs=0.01)
    assert low < 0.85 and high > 1.15
    single = ratio_interval(*processes[1])
    assert single[2] - single[1] < 0.02
    assert nested_ratio_interval(processes[1:2]) == single
