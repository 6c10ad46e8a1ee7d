"""The runtime protocol every backend implements, its registry, and the one place that times.

``build`` turns the bundle's rank-4 ``model.onnx`` into the runtime's artifact (or, where it
cannot be built here, into what the device needs to build it); ``load`` gives a session whose
``run`` takes and returns numpy arrays. Building and running are separate so that an artifact
built here can be run elsewhere, and every heavy import happens inside a method. Callers loop
over runtimes without naming any: what differs between them (is it required, which model it
builds from, is it timed) is said by the runtime class.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CheckFailed, Edge3dError, InputError
from ..latency import summarize


@dataclass
class Artifact:
    runtime: str
    precision: str
    files: list[str]  # relative to the bundle
    built_here: bool  # False: the bundle carries what the device needs to build it
    runnable_here: bool
    notes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    device_steps: list[str] = field(default_factory=list)  # shell lines that finish it on the device (bundle folder)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class IOSpec:
    """A session's input or output, the same type for every runtime. ``shape`` holds ints, and a
    dim's name (str) or None where it is not fixed."""

    name: str
    shape: tuple
    dtype: np.dtype

    @classmethod
    def from_value_info(cls, value) -> IOSpec:
        """From an ONNX ValueInfoProto (runtimes that read names and shapes from the graph)."""
        from onnx.helper import tensor_dtype_to_np_dtype

        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        dtype = tensor_dtype_to_np_dtype(tensor.elem_type) if tensor.elem_type else np.float32
        return cls(value.name, dims, np.dtype(dtype))


def onnx_io(path: Path) -> tuple[list[IOSpec], list[IOSpec]]:
    """The inputs and outputs of an ONNX file, without reading its weights."""
    import onnx

    from ..onnx_tensors import graph_inputs

    graph = onnx.load(str(path), load_external_data=False).graph
    return [IOSpec.from_value_info(v) for v in graph_inputs(graph)], [IOSpec.from_value_info(v) for v in graph.output]


class Session:
    """A loaded model. ``close()`` (or leaving a ``with`` block) releases what it holds (an ORT
    session, a TVM VM, a CUDA engine) when the caller is done rather than when the garbage
    collector gets to it; a closed session does not run again."""

    inputs: list[IOSpec]
    outputs: list[IOSpec]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def run_many(self, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """Several runs at once: a runtime whose every call has a fixed cost (a simulator that
        rebuilds the model) pays it once."""
        return [self.run(f) for f in feeds]

    def close(self) -> None:
        """Release the session's resources; closing twice is harmless."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Runtime:
    """A backend. The class attributes tell ``bundle.artifacts.build_all`` how to treat it."""

    name: str = ""
    # the InputError raised when is_available() is False; None: the artifact is built without it
    missing_hint: str | None = None
    # build_all times its runnable artifacts (a simulator's or a one-off's time would mislead)
    timed_here: bool = False
    speed_hint: str = ""  # what makes the artifact faster, said when it runs far slower than ONNX Runtime
    # each call has a large fixed cost (a simulator rebuilds the model): verify all samples in one run_many
    batched_verification: bool = False

    def is_available(self) -> bool:
        return True

    def where(self, target) -> str:
        """What of this runtime's artifact for ``target`` is built, checked or timed here, what is
        estimated, and what only the device does (``edge3d targets`` lists it)."""
        return "built, verified and timed here"

    def is_timed(self, precision: str) -> bool:
        """Whether build_all times a runnable ``precision`` artifact (``timed_here`` by default)."""
        return self.timed_here

    def require(self, target=None) -> None:
        """Raise the InputError that says how to install the runtime, if it is needed and missing
        (and, given the ``target``, what else building for it needs)."""
        if self.missing_hint is not None and not self.is_available():
            raise InputError(self.missing_hint)

    def input_model(self, bundle: Path, precision: str) -> Path:
        """The bundle's ONNX model this runtime builds a ``precision`` artifact from."""
        return bundle / "model.onnx"

    def build_label(self, precision: str, **options) -> str:
        """The progress line for ``build(..., **options)``."""
        return f"Building {self.name} ({precision})"

    def build(self, model: Path, target, bundle: Path, precision: str, calib: list | None = None,
              **options) -> Artifact:
        """``calib``: calibration feeds (INT8); ``options`` a runtime does not know are ignored."""
        raise NotImplementedError

    def load(self, artifact: Artifact, bundle: Path, calib: list | None = None) -> Session:
        """``calib``: the feeds an INT8 artifact was calibrated on, for runtimes that rebuild it."""
        raise NotImplementedError


RUNTIMES: dict[str, type[Runtime]] = {}


def register(name: str):
    def decorate(cls):
        cls.name = name
        RUNTIMES[name] = cls
        return cls

    return decorate


def runtime(name: str) -> Runtime:
    from . import ort_runtime, rknn_runtime, tensorrt_runtime, tflite_runtime, tvm_runtime  # noqa: F401 - registers them

    return RUNTIMES[name]()


class SessionCache:
    """Sessions built on first use and reused while the cache is open, then closed together (in
    the spirit of Polygraphy's lazy loaders): one export verifies, times and compares the same
    original and lowered models, and building a session costs more than most of those runs.
    Keyed on the model object (or path); the model is held so its id is not reused."""

    def __init__(self, make: Callable[[object], Session]):
        self._make = make
        self._open: dict = {}

    def __call__(self, model) -> Session:
        key = str(model) if isinstance(model, (str, Path)) else id(model)
        if key not in self._open:
            self._open[key] = (model, self._make(model))
        return self._open[key][1]

    def release(self, model) -> None:
        """Close ``model``'s session now (a later call builds it again). Its memory goes with the
        collection run here, not whenever the collector next runs: runners built on a session
        can sit in reference cycles."""
        import gc

        entry = self._open.pop(str(model) if isinstance(model, (str, Path)) else id(model), None)
        if entry is not None:
            entry[1].close()
            del entry
            gc.collect()

    def close(self) -> None:
        for _, session in self._open.values():
            session.close()
        self._open.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def measure(session: Session, feeds: dict[str, np.ndarray], warmup: int = 3, iters: int = 20,
            budget_s: float | None = None, min_iters: int = 3) -> dict:
    """Latency of ``session.run`` in milliseconds: warm-up, then ``iters`` timed runs, summarised
    by ``edge3d.latency.summarize``. With ``budget_s``, a slow model stops early: warm-up ends once
    it has used a quarter of the budget, timing once the budget is spent and ``min_iters`` ran."""
    begin = time.perf_counter()
    for _ in range(warmup):
        session.run(feeds)
        if budget_s is not None and time.perf_counter() - begin > budget_s / 4:
            break
    begin, times = time.perf_counter(), []
    for _ in range(iters):
        start = time.perf_counter()
        session.run(feeds)
        times.append((time.perf_counter() - start) * 1e3)
        if budget_s is not None and len(times) >= min_iters and time.perf_counter() - begin > budget_s:
            break
    return summarize(times)


def run_tool(command: list, what: str, timeout: float, error: type[Edge3dError] = CheckFailed, hint: str = "",
             check: bool = False, capture_output: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` with a time limit: a hung tool (a wedged GPU driver, a stalled download,
    a toolkit stuck on a model) becomes one error line naming it instead of a run that never ends.
    The tool runs in a process group of its own, and the whole group is killed when it runs out
    of time or edge3d is interrupted: a worker's own children (onnx2tf under the LiteRT worker)
    do not live on at several GB each."""
    if capture_output:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc = subprocess.Popen(command, start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as exc:  # the time limit, Ctrl-C, a signal edge3d turned into an exception
        _kill_group(proc)
        if isinstance(exc, subprocess.TimeoutExpired):
            raise error(f"{what} did not finish within {timeout:g} s" + (f"; {hint}" if hint else "")) from None
        raise
    done = subprocess.CompletedProcess(command, proc.returncode, out, err)
    if check:
        done.check_returncode()
    return done


def make_venv(venv: Path, steps: list[tuple[str, list[str]]], label: str, echo=print,
              venv_timeout: float = 300, pip_timeout: float = 1800) -> Path:
    """A virtual environment for a backend whose packages pin versions edge3d's own cannot share
    (rknn-toolkit2, TensorFlow with onnx2tf): create it, then one pip install per (what, args)
    step; returns its interpreter. pip's output is kept for a failure only: on success its
    resolver may print an "ERROR:" note about packages installed --no-deps against pinned ones."""
    import sys

    python = venv / "bin" / "python"
    run_tool([sys.executable, "-m", "venv", str(venv)], f"creating the virtual environment {venv}", venv_timeout,
             InputError, check=True)
    for what, args in [("pip", ["--upgrade", "pip"]), *steps]:
        echo(f"installing {what} into {venv}")
        run_tool([str(python), "-m", "pip", "install", "-q", *args], f"setting up {label}: installing {what}",
                 pip_timeout, InputError, hint="check the network to the package registry and rerun", check=True,
                 capture_output=True, text=True)
    return python


def _kill_group(proc: subprocess.Popen) -> None:
    import os
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.communicate()
