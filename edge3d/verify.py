"""Differential verification: a reference and a candidate run on the same seeded inputs.

Every export step checks its artifact against the original PyTorch model with this, and the
figures go into the bundle's manifest. Errors are taken per sample and the worst sample counts,
so one bad clip among many cannot hide behind an average.

The lowering is measured against two references (``verify(..., plain=...)``): the plain 5D ONNX
model in the same runtime, which isolates the error the lowering itself adds (tight: fp32
accumulation order is all that may differ), and the PyTorch model, held to a bound relative to
what the plain 5D export achieves on the same inputs (a deep model's plain export already differs
from PyTorch by more than 1e-4, and the lowering cannot do better than the export it lowers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

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

# The lowering's own error: the lowered model against the plain 5D ONNX model, same runtime.
LOWERING_TOLERANCE = Tolerance(rel_l2=1e-5)
# Against PyTorch, each output may differ by this many times the plain 5D export's own error
# (and always by TOLERANCES[precision]): only error the lowering adds fails the check.
PLAIN_EXPORT_FACTOR = 2.0


@dataclass
class OutputMetrics:
    name: str
    max_abs: float
    rel_l2: float
    cosine: float
    top1: float | None  # None where the output is not (batch, classes)
    tolerance: float | None = None  # the relative L2 bound this output was held to, where one was
    top1_rows: int | None = None  # how many rows top-1 agreement was counted on
    top1_ci95: tuple[float, float] | None = None  # Wilson 95% interval of the agreement
    top1_margin: float | None = None  # median gap of the reference's top two scores, in standard deviations of a row


@dataclass
class Comparison:
    """One more pair of runners compared on the same inputs: its figures and, where it is
    checked, its tolerance."""

    reference: str
    outputs: list[OutputMetrics] = field(default_factory=list)
    tolerance: Tolerance | None = None

    def to_dict(self) -> dict:
        doc: dict = {"reference": self.reference, "outputs": [asdict(o) for o in self.outputs]}
        if self.tolerance is not None:
            doc["tolerance"] = asdict(self.tolerance)
        return doc


@dataclass
class Verification:
    """``outputs``: the candidate against the reference, each held to its ``tolerance`` (the
    largest of which is ``tolerance``). For a lowering, ``lowering`` is the candidate against the
    plain 5D ONNX model and ``plain_export`` that model against the reference (PyTorch)."""

    precision: str
    samples: int
    seed: int
    tolerance: Tolerance
    outputs: list[OutputMetrics] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    # said but not failed: top-1 agreement, whose flips on a few clips with close top scores (a
    # model with random weights) say little where the cosine, the robust figure, holds
    warnings: list[str] = field(default_factory=list)
    lowering: Comparison | None = None
    plain_export: Comparison | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        doc = {
            "precision": self.precision, "samples": self.samples, "seed": self.seed,
            "tolerance": asdict(self.tolerance), "passed": self.passed, "failures": self.failures,
            "warnings": self.warnings,
            "outputs": [asdict(o) for o in self.outputs],
        }
        if self.lowering is not None:
            doc["lowering"] = self.lowering.to_dict()
            doc["plain_export"] = self.plain_export.to_dict() if self.plain_export is not None else None
        return doc

    def headline(self) -> str:
        """One line: the lowering's error and, where there is a PyTorch reference, the error
        against it beside the plain export's; the worst output of each (named where several)."""
        line = f"verified on {self.samples} seeded inputs: "
        if self.lowering is None:
            worst = max(self.outputs, key=lambda o: o.rel_l2)
            return line + f"max relative L2 error {worst.rel_l2:.2e} (tolerance {_fmt(self.tolerance.rel_l2)})"
        several = len(self.outputs) > 1
        own = max(self.lowering.outputs, key=lambda o: o.rel_l2)
        line += (f"lowering error {own.rel_l2:.2e}{f' ({own.name})' if several else ''} "
                 f"(vs the 5D ONNX model, tolerance {_fmt(LOWERING_TOLERANCE.rel_l2)})")
        if self.plain_export is None:
            return line
        i, worst = max(enumerate(self.outputs), key=lambda o: o[1].rel_l2 / (o[1].tolerance or 1.0))
        return line + (f"; vs PyTorch {worst.rel_l2:.2e}, the plain export {self.plain_export.outputs[i].rel_l2:.2e} "
                       f"(tolerance {_fmt(worst.tolerance)}{f', {worst.name}' if several else ''})")

    def summary(self) -> str:
        parts = [f"{o.name}: rel-L2 {o.rel_l2:.2e}, max-abs {o.max_abs:.2e}, cosine {o.cosine:.6f}"
                 + (f", top-1 {o.top1:.0%}" if o.top1 is not None else "") for o in self.outputs]
        return "; ".join(parts)


def seeded_inputs(shapes: Sequence[tuple[int, ...]], dtypes: Sequence, seed: int) -> list[np.ndarray]:
    """Standard-normal floats; random booleans; integers 0 or 1, which any index input (a class
    label, an embedding's row, a timestep) and any mask accepts — a negative or large integer
    would be out of range for most."""
    rng = np.random.default_rng(seed)
    made: list[np.ndarray] = []
    for shape, dtype in zip(shapes, dtypes):
        kind = np.dtype(dtype).kind
        if kind == "b":
            made.append(rng.random(shape) < 0.5)
        elif kind in "iu":
            made.append(rng.integers(0, 2, shape).astype(dtype))
        elif np.dtype(dtype) == np.float32:  # drawn as float32: no float64 clip twice its size on the way
            made.append(rng.standard_normal(shape, dtype=np.float32))
        else:
            made.append(rng.standard_normal(shape, dtype=np.float32).astype(dtype))
    return made


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
    *,
    plain: Runner | None = None,
    lowering: bool = False,
) -> Verification:
    """Compare two runners; ``inputs`` (e.g. calibration clips) replace the seeded ones.

    For a lowered ``candidate``: ``plain`` runs the plain 5D ONNX model the candidate was lowered
    from, and ``reference`` the PyTorch model. Each sample then runs all three once: the
    candidate is held to LOWERING_TOLERANCE against ``plain`` (``result.lowering``) and, per
    output, to max(TOLERANCES[precision], PLAIN_EXPORT_FACTOR × the plain export's own error)
    against ``reference`` (``result.outputs``; ``result.plain_export``: ``plain`` against
    ``reference``). ``lowering=True`` without ``plain``: the reference is itself the plain
    5D ONNX model (an ONNX source), so both checks are the one, at LOWERING_TOLERANCE.
    """
    lowering = lowering or plain is not None
    base = LOWERING_TOLERANCE if lowering and plain is None else TOLERANCES[precision]
    if lowering and base.rel_l2 is None:
        raise ValueError(f"a lowering is verified by relative L2 error, which {precision} does not bound")
    dtypes = dtypes or [np.float32] * len(shapes)
    # one sample in memory at a time: --verify-samples N must not cost N clips (or N outputs) of memory
    batches = iter(inputs) if inputs is not None else (seeded_inputs(shapes, dtypes, seed + i) for i in range(samples))
    result = Verification(precision, len(inputs) if inputs is not None else samples, seed, base)
    # per output: the candidate against the reference, and for a lowering with a PyTorch
    # reference the candidate against the plain export and the plain export against the reference
    per_output: dict[int, tuple[_Accumulator, ...]] = {}
    # given inputs and a candidate that runs many at once (a simulator), it runs them in one call
    ahead = iter(candidate.many(list(inputs))) if inputs is not None and hasattr(candidate, "many") else None
    for batch in batches:
        # each runs once per sample; the candidate first, while no other output is held (recorded
        # references only read theirs back)
        got = next(ahead) if ahead is not None else candidate(batch)
        expected = reference(batch)
        exported = plain(batch) if plain is not None else None
        if len(expected) != len(got):
            result.failures.append(f"the candidate has {len(got)} outputs, the reference {len(expected)}")
            return result
        if exported is not None and len(exported) != len(expected):
            result.failures.append(f"the plain 5D ONNX model has {len(exported)} outputs, the reference "
                                   f"{len(expected)}")
            return result
        failure = _accumulate(per_output, expected, got, exported)
        if failure:
            result.failures.append(failure)
            return result
        # nothing of this sample may stay alive while the next one is drawn: held over, its four
        # clips were most of the export's peak on a 200 MB clip
        del batch, expected, got, exported
    name_of = lambda i: names[i] if names and i < len(names) else f"output_{i}"  # noqa: E731
    if not lowering:
        for i, (acc,) in per_output.items():
            metrics = acc.metrics(name_of(i))
            result.outputs.append(metrics)
            result.failures.extend(_check(metrics, base))
            result.warnings.extend(_top1_warning(metrics, base))
        return result
    if plain is None:  # the reference is the 5D ONNX model: the lowering's error is the one figure
        result.lowering = Comparison("the 5D ONNX model (ONNX Runtime)", tolerance=LOWERING_TOLERANCE)
        for i, (acc,) in per_output.items():
            metrics = acc.metrics(name_of(i))
            metrics.tolerance = LOWERING_TOLERANCE.rel_l2
            result.outputs.append(metrics)
            result.lowering.outputs.append(metrics)
            result.failures.extend(_check(metrics, LOWERING_TOLERANCE, "the lowering's relative L2 error",
                                          " (the lowered model against the 5D ONNX model)"))
        return result
    result.lowering = Comparison("the 5D ONNX model (ONNX Runtime)", tolerance=LOWERING_TOLERANCE)
    result.plain_export = Comparison("pytorch")
    bounds: list[float] = []
    for i, (vs_reference, vs_plain, plain_vs_reference) in per_output.items():
        name = name_of(i)
        own = vs_plain.metrics(name)
        own.tolerance = LOWERING_TOLERANCE.rel_l2
        result.lowering.outputs.append(own)
        result.failures.extend(_check(own, LOWERING_TOLERANCE, "the lowering's relative L2 error",
                                      " (the lowered model against the 5D ONNX model)",
                                      "the lowered model's or the 5D ONNX model's output"))
        exported_metrics = plain_vs_reference.metrics(name)
        result.plain_export.outputs.append(exported_metrics)
        tolerance = _relative_to_plain(base, exported_metrics)
        metrics = vs_reference.metrics(name)
        metrics.tolerance = tolerance.rel_l2
        bounds.append(tolerance.rel_l2 or 0.0)  # not None: checked on entry
        result.outputs.append(metrics)
        why = (f" (against PyTorch; {PLAIN_EXPORT_FACTOR:g} × the plain 5D export's own {exported_metrics.rel_l2:.2e},"
               f" at least {base.rel_l2:.0e})")
        result.failures.extend(_check(metrics, tolerance, suffix=why,
                                      nonfinite="the lowered model's or PyTorch's output"))
    if bounds:
        result.tolerance = Tolerance(rel_l2=max(bounds), cosine=base.cosine, top1=base.top1)
    return result


def _relative_to_plain(base: Tolerance, plain: OutputMetrics) -> Tolerance:
    """The bound against PyTorch: what the plain 5D export achieves, with room to spare, and never
    tighter than the precision's own tolerance."""
    rel = base.rel_l2
    if rel is not None and np.isfinite(plain.rel_l2):
        rel = max(rel, PLAIN_EXPORT_FACTOR * plain.rel_l2)
    return Tolerance(rel_l2=rel, cosine=base.cosine, top1=base.top1)


def _match_shape(a: np.ndarray, b: np.ndarray):
    """Outputs may differ only by size-1 axes (a squeezed head); anything else is an error."""
    if a.shape == b.shape:
        return b
    if a.size == b.size and [d for d in a.shape if d != 1] == [d for d in b.shape if d != 1]:
        return b.reshape(a.shape)
    return None


def _accumulate(per_output: dict[int, tuple[_Accumulator, ...]], expected, got, exported) -> str | None:
    """Add one sample's outputs to the running figures; a shape mismatch is returned as the failure."""
    for i, (a, b) in enumerate(zip(expected, got)):
        a, b = np.asarray(a), np.asarray(b)  # compared in float64 chunk by chunk (_Accumulator)
        b = _match_shape(a, b)
        if b is None:
            return f"output {i} has shape {np.shape(got[i])}, expected {np.shape(expected[i])}"
        accs = per_output.setdefault(i, tuple(_Accumulator() for _ in range(3 if exported is not None else 1)))
        accs[0].add(a, b)
        if exported is not None:
            p = _match_shape(a, np.asarray(exported[i]))
            if p is None:
                return (f"output {i} of the plain 5D ONNX model has shape {np.shape(exported[i])}, expected "
                        f"{np.shape(expected[i])}")
            accs[1].add(p, b)  # the lowering's own error
            accs[2].add(a, p)  # the plain export's own error
    return None


def _blocks(a: np.ndarray, b: np.ndarray, size: int):
    """``a`` and ``b`` (same shape) in matching pieces of about ``size`` elements, flattened. A
    non-contiguous view (frames turned back into a clip) is cut along its leading axes, so no
    piece copies more than ``size`` elements; ``reshape(-1)`` would copy the whole tensor."""
    if a.flags.c_contiguous and b.flags.c_contiguous or a.ndim == 0:
        flat_a, flat_b = a.reshape(-1), b.reshape(-1)
        for start in range(0, flat_a.size, size):
            yield flat_a[start:start + size], flat_b[start:start + size]
        return
    lead, inner = 0, a.size
    while lead < a.ndim - 1 and inner > size:
        inner //= max(a.shape[lead], 1)
        lead += 1
    for index in np.ndindex(*a.shape[:lead]):
        yield a[index].reshape(-1), b[index].reshape(-1)


class _Accumulator:
    """The worst figures of one output over the samples seen so far (each sample counts alone)."""

    def __init__(self) -> None:
        self.max_abs, self.rel, self.cos, self.agree, self.rows = 0.0, 0.0, 1.0, 0, 0
        self.margins: list[float] = []
        self.finite = True

    CHUNK = 1 << 20  # elements converted to float64 at a time: a 200 MB output is not copied whole, twice

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        max_abs = sq_diff = sq_a = sq_b = dot = 0.0
        for part_a, part_b in _blocks(a, b, self.CHUNK):
            x, y = np.asarray(part_a, np.float64), np.asarray(part_b, np.float64)
            if not (np.isfinite(x).all() and np.isfinite(y).all()):  # max()/min() below would skip a NaN
                self.finite = False
                return
            diff = x - y
            max_abs = max(max_abs, float(np.max(np.abs(diff))))
            sq_diff += float(diff @ diff)
            sq_a, sq_b, dot = sq_a + float(x @ x), sq_b + float(y @ y), dot + float(x @ y)
        self.max_abs = max(self.max_abs, max_abs)
        norm_a, norm_diff, norm_b = sq_a ** 0.5, sq_diff ** 0.5, sq_b ** 0.5
        self.rel = max(self.rel, norm_diff / norm_a if norm_a > 0 else norm_diff)
        denom = norm_a * norm_b
        self.cos = min(self.cos, float(dot) / denom if denom > 0 else float(norm_a == norm_b))
        if a.ndim == 2 and a.shape[1] > 1:
            self.agree += int(np.sum(np.argmax(a, 1) == np.argmax(b, 1)))
            self.rows += a.shape[0]
            top2 = np.sort(np.asarray(a, np.float64), axis=1)[:, -2:]
            spread = np.asarray(a, np.float64).std(axis=1)
            self.margins += [float(g / s) if s > 0 else 0.0 for g, s in zip(top2[:, 1] - top2[:, 0], spread)]

    def metrics(self, name: str) -> OutputMetrics:
        if not self.finite:
            nan = float("nan")
            return OutputMetrics(name, nan, nan, nan, None)
        if not self.rows:
            return OutputMetrics(name, self.max_abs, self.rel, self.cos, None)
        return OutputMetrics(name, self.max_abs, self.rel, self.cos, self.agree / self.rows, top1_rows=self.rows,
                             top1_ci95=wilson_interval(self.agree, self.rows),
                             top1_margin=float(np.median(self.margins)))


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion: honest at the small counts (8 clips) and at
    0 or n hits, where the normal approximation is not."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _check(m: OutputMetrics, tol: Tolerance, what: str = "relative L2 error", suffix: str = "",
           nonfinite: str = "the candidate's output") -> list[str]:
    failures = []
    if not np.isfinite([m.max_abs, m.rel_l2, m.cosine]).all():
        return [f"{m.name}: non-finite values in {nonfinite}"]
    if tol.rel_l2 is not None and m.rel_l2 > tol.rel_l2:
        failures.append(f"{m.name}: {what} {m.rel_l2:.2e} exceeds {_fmt(tol.rel_l2)}{suffix}")
    if tol.cosine is not None and m.cosine < tol.cosine:
        failures.append(f"{m.name}: cosine similarity {m.cosine:.4f} below {tol.cosine}")
    return failures


def _top1_warning(m: OutputMetrics, tol: Tolerance) -> list[str]:
    """Top-1 agreement well below ``tol.top1`` — even the upper end of its 95% interval (one flip
    in 8 is 88%, within chance of 90%) — is said with how close the reference's top two scores
    were: flips among near-equal scores mean little (an untrained model's), flips of clear
    decisions mean the quantised model classifies differently."""
    if tol.top1 is None or m.top1 is None:
        return []
    upper = m.top1_ci95[1] if m.top1_ci95 is not None else m.top1
    if upper >= tol.top1:
        return []
    margin = (f"; the reference's top two scores were a median {m.top1_margin:.2f} standard deviations of its "
              "scores apart" if m.top1_margin is not None else "")
    return [f"{m.name}: top-1 agreement {m.top1:.0%} on {m.top1_rows} clips (95% interval up to {upper:.0%}) "
            f"below {tol.top1:.0%} at cosine {m.cosine:.4f}{margin}"]


def _fmt(tolerance: float | None) -> str:
    """1e-04 as before; a bound derived from a measured error keeps its digits (3.04e-04)."""
    if tolerance is None:
        return "none"
    return f"{tolerance:.0e}" if float(f"{tolerance:.0e}") == tolerance else f"{tolerance:.2e}"


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
    """Run a session (any runtime's) on positional inputs; ``run.many`` runs a list of batches in
    one ``run_many``."""
    names = [i.name for i in session.inputs]

    def run(batch: list[np.ndarray]) -> list[np.ndarray]:
        return session.run(dict(zip(names, batch)))

    run.many = lambda batches: session.run_many([dict(zip(names, b)) for b in batches])  # type: ignore[attr-defined]
    return run


def recorded_runner(run: Runner, batches, folder: Path) -> Runner:
    """``run``'s outputs on ``batches``, computed now and kept in ``folder``; the runner returned
    gives them back for the same inputs (read from disk, one sample at a time), so the model
    behind ``run`` can be closed before the next one is loaded."""
    import hashlib

    def key(batch) -> str:
        digest = hashlib.sha1()
        for x in batch:
            digest.update(np.ascontiguousarray(x).tobytes())
        return digest.hexdigest()

    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for batch in batches:
        outputs = run(batch)
        counts[key(batch)] = len(outputs)
        for i, y in enumerate(outputs):
            np.save(folder / f"{key(batch)}-{i}.npy", np.asarray(y), allow_pickle=False)

    def replay(batch: list[np.ndarray]) -> list[np.ndarray]:
        k = key(batch)
        if k not in counts:
            raise KeyError("no recorded outputs for these inputs")
        return [np.load(folder / f"{k}-{i}.npy", allow_pickle=False) for i in range(counts[k])]

    replay.recorded = True  # type: ignore[attr-defined]
    return replay


def _flatten(out) -> list:
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flatten(v)]
    return [out]
