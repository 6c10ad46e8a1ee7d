"""The runtime protocol every backend implements, its registry, and the one place that times.

``build`` turns the bundle's rank-4 ``model.onnx`` into the runtime's artifact (or, where it
cannot be built here, into what the device needs to build it); ``load`` gives a session whose
``run`` takes and returns numpy arrays. Building and running are separate so that an artifact
built here can be run elsewhere, and every heavy import happens inside a method.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass
class Artifact:
    runtime: str
    precision: str
    files: list[str]  # relative to the bundle
    built_here: bool  # False: the bundle carries what the device needs to build it
    runnable_here: bool
    notes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Session(Protocol):
    inputs: list  # IOSpec-like: name, shape, dtype

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


class Runtime(Protocol):
    name: str

    def is_available(self) -> bool: ...

    def build(self, model: Path, target, bundle: Path, precision: str, calib: list | None = None) -> Artifact: ...

    def load(self, artifact: Artifact, bundle: Path) -> Session: ...


RUNTIMES: dict[str, type] = {}


def register(name: str):
    def decorate(cls):
        cls.name = name
        RUNTIMES[name] = cls
        return cls

    return decorate


def runtime(name: str) -> Runtime:
    from . import ort_runtime, rknn_runtime, tensorrt_runtime, tvm_runtime  # noqa: F401 - registers them

    return RUNTIMES[name]()


def measure(session: Session, feeds: dict[str, np.ndarray], warmup: int = 3, iters: int = 20) -> dict:
    """Latency of ``session.run`` in milliseconds: warm-up, then ``iters`` timed runs."""
    for _ in range(warmup):
        session.run(feeds)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        session.run(feeds)
        times.append((time.perf_counter() - start) * 1e3)
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]  # noqa: E731
    return {"iters": iters, "min_ms": ordered[0], "p50_ms": statistics.median(times), "p90_ms": pick(0.9),
            "p99_ms": pick(0.99), "mean_ms": statistics.fmean(times),
            "std_ms": statistics.stdev(times) if len(times) > 1 else 0.0, "max_ms": ordered[-1]}
