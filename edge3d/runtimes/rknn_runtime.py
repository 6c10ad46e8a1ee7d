"""RKNN (Rockchip NPU) through rknn-toolkit2, in an interpreter of its own.

rknn-toolkit2 2.5 pins numpy ≤ 1.26.4 and onnx ≤ 1.18, so it lives in its own virtual
environment (``edge3d setup rknn``) and edge3d drives ``rknn_worker.py`` there through a
subprocess. It builds ``.rknn`` files for the device and runs the toolkit's simulator here.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import CheckFailed, InputError
from .base import Artifact, Runtime, Session, make_venv, onnx_io, register, run_tool

WORKER = Path(__file__).with_name("rknn_worker.py")
# rknn-toolkit2 imports torch (and pins torch ≤ 2.4, which would pull GBs of CUDA packages):
# the local CPU torch satisfies its import for ONNX models, so its dependencies are installed
# one by one instead of through its metadata.
PACKAGES = ["protobuf>=4.21.6,<=4.25.4", "psutil>=5.9", "ruamel.yaml>=0.17.21", "scipy>=1.9.3", "tqdm>=4.64.1",
            "opencv-python-headless>=4.5.5.64", "fast-histogram>=0.11", "numpy<=1.26.4", "onnx>=1.16.1,<=1.18.0",
            "onnxruntime>=1.17", "setuptools<70"]
# time limits: a venv is quick; one pip step downloads torch; the toolkit's import pulls in torch;
# one build or simulated run of a large model with INT8 calibration takes minutes
VENV_TIMEOUT_S, PIP_TIMEOUT_S, IMPORT_TIMEOUT_S, WORKER_TIMEOUT_S = 300, 1800, 120, 1800
# the toolkit's own conversion of the 5D model is a comparison, not the artifact: it may not hold
# the export up for long (on some models the toolkit's Conv3d rule runs for many minutes)
ESTIMATE_TIMEOUT_S = 240


def venv_dir() -> Path:
    return Path(os.environ.get("EDGE3D_RKNN_VENV", Path.home() / ".cache" / "edge3d" / "rknn"))


def python() -> Path:
    return venv_dir() / "bin" / "python"


def setup(torch_spec: str = "torch==2.13.0", toolkit: str = "rknn-toolkit2==2.5.0", echo=print) -> Path:
    """Create the toolkit's virtual environment; returns its interpreter."""
    return make_venv(venv_dir(), [(torch_spec, [torch_spec]), ("dependencies", PACKAGES),
                                  (toolkit, ["--no-deps", toolkit])], "rknn-toolkit2", echo, VENV_TIMEOUT_S,
                     PIP_TIMEOUT_S)


def call(*args: str, timeout: float | None = None) -> dict:
    """``timeout``: seconds, WORKER_TIMEOUT_S by default (read at the call)."""
    # -P: the worker's folder (with modules named like onnxruntime and tvm) stays off sys.path;
    # a folder of its own: the toolkit's verbose build writes files into the working folder
    with tempfile.TemporaryDirectory(prefix="edge3d-rknn-") as cwd:
        done = run_tool([str(python()), "-P", str(WORKER), *args],
                        f"rknn-toolkit2's {args[0]} of {Path(args[1]).name}", timeout or WORKER_TIMEOUT_S,
                        capture_output=True, text=True, cwd=cwd)
        lines = done.stdout.strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):  # the toolkit ended the process: its last words
            log = Path(cwd, "worker.log")
            said = [line.strip() for line in done.stderr.splitlines()
                    + (log.read_text(errors="replace") if log.exists() else "").splitlines()
                    if line.strip() and not line.startswith(("D ", "I "))]
            return {"ok": False, "error": " ".join(said[-2:]) or "no output", "log": []}


@register("rknn")
class RknnRuntime(Runtime):
    missing_hint = "the rknn target needs rknn-toolkit2 in its own interpreter: run `edge3d setup rknn` first"
    batched_verification = True

    def where(self, target) -> str:
        return ("RKNN: FP16 and INT8 built and run in the toolkit's simulator here (fidelity); "
                "speed only on the board")

    def is_available(self) -> bool:
        if not python().exists():
            return False
        return run_tool([str(python()), "-c", "import rknn.api"], f"importing rknn-toolkit2 in {python()}",
                        IMPORT_TIMEOUT_S, InputError, capture_output=True).returncode == 0

    def build(self, model: Path, target, bundle: Path, precision: str, calib: list | None = None,
              original=None, original_calib: list | None = None, **options) -> Artifact:
        """``original``: the 5D ONNX model (a path or a ModelProto) and ``original_calib`` its
        calibration feeds: the toolkit converts it too, with its own Conv3d rule, so that the
        bundle compares the lowered model's estimated cost with what the toolkit makes of the
        original (``rknn_perf``)."""
        platform = target.rknn.get("platform", "rk3588")
        out = bundle / f"model.{platform}.{precision}.rknn"
        with tempfile.TemporaryDirectory() as tmp:
            dataset = _dataset(calib or [], Path(tmp)) if precision == "int8" else None
            result = call("build", str(model.resolve()), str(out.resolve()), platform, precision,
                          *([str(dataset)] if dataset else []))
        if not result["ok"]:
            raise RuntimeError(f"rknn-toolkit2 could not build {out.name}: {result['error']}")
        meta = {"platform": platform, "model": model.name, "calib": len(calib or [])}
        notes = [f"toolkit: {line}" for line in result["log"]]
        if result.get("perf"):
            meta["npu_estimate"] = self._estimate(result["perf"], original, original_calib, platform, precision)
        return Artifact("rknn", precision, [out.name], built_here=True, runnable_here=True, notes=notes, meta=meta)

    @staticmethod
    def _estimate(perf: list[str], original, original_calib, platform: str, precision: str) -> dict:
        import onnx

        from .rknn_perf import compare, parse

        lowered, toolkit, originals, error = parse(perf), None, [], None
        if original is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(original) if isinstance(original, (str, Path)) else Path(tmp) / "original.onnx"
                if not isinstance(original, (str, Path)):
                    onnx.save(original, str(path))
                originals = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]
                dataset = _dataset(original_calib or [], Path(tmp)) if precision == "int8" else None
                try:
                    done = call("estimate", str(path.resolve()), platform, precision,
                                *([str(dataset)] if dataset else []), timeout=ESTIMATE_TIMEOUT_S)
                except CheckFailed:
                    done = {"ok": False, "error": f"it did not finish within {ESTIMATE_TIMEOUT_S} s"}
            if done["ok"] and done.get("perf"):
                toolkit = parse(done["perf"])
            else:
                error = done.get("error") or "no estimate printed"
        summary = compare(lowered, toolkit, originals)
        summary["tool"] = "rknn-toolkit2 verbose build (offline estimate; convolutions only)"
        if error:
            summary["toolkit_5d"] = {"error": f"the toolkit could not build the 5D model: {error}"}
        return summary

    def load(self, artifact: Artifact, bundle: Path, calib: list | None = None) -> RknnSimulator:
        return RknnSimulator(bundle / artifact.meta["model"], artifact, calib)


def _dataset(feeds: list[dict[str, np.ndarray]], folder: Path) -> Path:
    """rknn's calibration list: one line per sample, the .npy file of each input."""
    lines = []
    for i, feed in enumerate(feeds):
        paths = []
        for array in feed.values():
            path = folder / f"calib_{i}_{len(paths)}.npy"
            np.save(path, array)
            paths.append(str(path))
        lines.append(" ".join(paths))
    dataset = folder / "dataset.txt"
    dataset.write_text("\n".join(lines) + "\n")
    return dataset


class RknnSimulator(Session):
    """The toolkit's simulator: it rebuilds from the ONNX model in the worker for every run, so
    an INT8 artifact needs the feeds it was calibrated on (``calib``) to be rebuilt alike."""

    def __init__(self, model: Path, artifact: Artifact, calib: list | None = None):
        self.model, self.artifact = model, artifact
        self.inputs, self.outputs = onnx_io(model)
        self.calib: list = list(calib or [])

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.run_many([feeds])[0]

    def run_many(self, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """Every feed in one worker call: one build of the simulated model for all of them."""
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for n, feed in enumerate(feeds):
                np.savez(tmp / f"in_{n}.npz", **{f"i{k:03d}": feed[v.name] for k, v in enumerate(self.inputs)})
            dataset = _dataset(self.calib, tmp) if self.artifact.precision == "int8" else "-"
            result = call("infer", str(self.model.resolve()), self.artifact.meta["platform"], self.artifact.precision,
                          str(dataset), str(tmp), str(len(feeds)))
            if not result["ok"]:
                raise RuntimeError(f"rknn simulator: {result['error']}")
            runs = []
            for n in range(len(feeds)):
                outs = np.load(tmp / f"out_{n}.npz")
                runs.append([outs[f"arr_{i}"] for i in range(len(outs.files))])
            return runs
