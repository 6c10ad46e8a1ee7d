"""Differential verification: a reference and a candidate run on the same seeded inputs.

Every export step checks its artifact against the original PyTorch model with this, and the
figures go into the bundle's manifest. Errors are taken per sample and the worst sample counts,
so one bad clip among many cannot hide behind an average.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class Tolerance:
    rel_l2: float | None = None  # max relative L2 error (||a-b|| / ||a||)
    cosine: float | None = None  # min cosine similarity
    top1: float | None = None  # min top-1 agreement, for classifier outputs


TOLERANCES = {
    "fp32": Tolerance(rel_l2=1e-4),
    "fp16": Tolerance(rel_l2=1e-2),
    "int8": Tolerance(cosine=0.98, top1=0.9),
}


@dataclass
class OutputMetrics:
    name: str
    max_abs: float
    rel_l2: float
    cosine: float
    top1: float | None  # None where the output is not (batch, classes)


@dataclass
class Verification:
    precision: str
    samples: int
    seed: int
    tolerance: Tolerance
    outputs: list[OutputMetrics] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {
            "precision": self.precision, "samples": self.samples, "seed": self.seed,
            "tolerance": asdict(self.tolerance), "passed": self.passed, "failures": self.failures,
            "outputs": [asdict(o) for o in self.outputs],
        }

    def summary(self) -> str:
        parts = [f"{o.name}: rel-L2 {o.rel_l2:.2e}, max-abs {o.max_abs:.2e}, cosine {o.cosine:.6f}"
                 + (f", top-1 {o.top1:.0%}" if o.top1 is not None else "") for o in self.outputs]
        return "; ".join(parts)


def seeded_inputs(shapes: Sequence[tuple[int, ...]], dtypes: Sequence, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape, dtype in zip(shapes, dtypes)]


def verify(
    reference: Runner,
    candidate: Runner,
    shapes: Sequence[tuple[int, ...]],
    dtypes: Sequence | None = None,
    names: Sequence[str] | None = None,
    samples: int = 4,
    seed: int = 0,
    precision: str = "fp32",
    inputs: Sequence[list[np.ndarray]] | None = None,
) -> Verification:
    """Compare two runners; ``inputs`` (e.g. calibration clips) replace the seeded ones."""
    tolerance = TOLERANCES[precision]
    dtypes = dtypes or [np.float32] * len(shapes)
    # one sample in memory at a time: --verify-samples N must not cost N clips (or N outputs) of memory
    batches = iter(inputs) if inputs is not None else (seeded_inputs(shapes, dtypes, seed + i) for i in range(samples))
    result = Verification(precision, len(inputs) if inputs is not None else samples, seed, tolerance)
    per_output: dict[int, _Accumulator] = {}
    for batch in batches:
        expected, got = reference(batch), candidate(batch)
        if len(expected) != len(got):
            result.failures.append(f"the candidate has {len(got)} outputs, the reference {len(expected)}")
            return result
        for i, (a, b) in enumerate(zip(expected, got)):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            if a.shape != b.shape:
                b = _match_shape(a, b)
                if b is None:
                    result.failures.append(f"output {i} has shape {np.shape(got[i])}, expected {np.shape(expected[i])}")
                    return result
            per_output.setdefault(i, _Accumulator()).add(a, b)
    for i, acc in per_output.items():
        name = names[i] if names and i < len(names) else f"output_{i}"
        metrics = acc.metrics(name)
        result.outputs.append(metrics)
        result.failures.extend(_check(metrics, tolerance))
    return result


def _match_shape(a: np.ndarray, b: np.ndarray):
    """Outputs may differ only by size-1 axes (a squeezed head); anything else is an error."""
    if a.size == b.size and [d for d in a.shape if d != 1] == [d for d in b.shape if d != 1]:
        return b.reshape(a.shape)
    return None


class _Accumulator:
    """The worst figures of one output over the samples seen so far (each sample counts alone)."""

    def __init__(self) -> None:
        self.max_abs, self.rel, self.cos, self.agree, self.rows = 0.0, 0.0, 1.0, 0, 0
        self.finite = True

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        if not np.isfinite(b).all():  # max()/min() below would skip a NaN
            self.finite = False
            return
        diff = a - b
        self.max_abs = max(self.max_abs, float(np.max(np.abs(diff))) if diff.size else 0.0)
        norm_a, norm_diff, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(diff)), float(np.linalg.norm(b))
        self.rel = max(self.rel, norm_diff / norm_a if norm_a > 0 else norm_diff)
        denom = norm_a * norm_b
        self.cos = min(self.cos, float(np.dot(a.ravel(), b.ravel())) / denom if denom > 0 else float(norm_a == norm_b))
        if a.ndim == 2 and a.shape[1] > 1:
            self.agree += int(np.sum(np.argmax(a, 1) == np.argmax(b, 1)))
            self.rows += a.shape[0]

    def metrics(self, name: str) -> OutputMetrics:
        if not self.finite:
            nan = float("nan")
            return OutputMetrics(name, nan, nan, nan, None)
        return OutputMetrics(name, self.max_abs, self.rel, self.cos, self.agree / self.rows if self.rows else None)


def _check(m: OutputMetrics, tol: Tolerance) -> list[str]:
    failures = []
    if not np.isfinite([m.max_abs, m.rel_l2, m.cosine]).all():
        return [f"{m.name}: non-finite values in the candidate's output"]
    if tol.rel_l2 is not None and m.rel_l2 > tol.rel_l2:
        failures.append(f"{m.name}: relative L2 error {m.rel_l2:.2e} exceeds {tol.rel_l2:.0e}")
    if tol.cosine is not None and m.cosine < tol.cosine:
        failures.append(f"{m.name}: cosine similarity {m.cosine:.4f} below {tol.cosine}")
    if tol.top1 is not None and m.top1 is not None and m.top1 < tol.top1:
        failures.append(f"{m.name}: top-1 agreement {m.top1:.0%} below {tol.top1:.0%}")
    return failures


def torch_runner(module) -> Runner:
    """Run a PyTorch module (or ScriptModule) on numpy inputs; outputs flattened to a list."""
    import torch

    def run(batch: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*[_to_torch(x) for x in batch])
        return [t.detach().cpu().numpy() for t in _flatten(out)]

    return run


def _to_torch(x: np.ndarray):
    import torch

    x = np.ascontiguousarray(x)
    if x.dtype.name == "bfloat16":  # ml_dtypes' bfloat16, which torch.from_numpy does not know
        return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(x)


def ort_runner(session) -> Runner:
    names = [i.name for i in session.inputs]

    def run(batch: list[np.ndarray]) -> list[np.ndarray]:
        return session.run(dict(zip(names, batch)))

    return run


def _flatten(out) -> list:
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flatten(v)]
    return [out]
