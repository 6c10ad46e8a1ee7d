"""LiteRT (TFLite) through onnx2tf, and Arm Ethos-U through Vela, in an interpreter of their own.

TensorFlow, onnx2tf, the LiteRT interpreter and Vela are 2.7 GB and pin their own numpy, onnx and
protobuf, so they live in a virtual environment of their own (``edge3d setup tflite``) and edge3d
drives ``tflite_worker.py`` there. onnx2tf keeps the graph's inputs in their ONNX shape (a
bundle's frames stay (B·T, C, H, W)) and converts with TensorFlow's converter, the backend whose
FP16 model runs in LiteRT and whose INT8 calibration takes a batch; Vela compiles the INT8 model
for an Ethos-U and estimates its time and memory offline.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import CheckFailed, InputError
from .base import Artifact, Runtime, Session, make_venv, onnx_io, register, run_tool

WORKER = Path(__file__).with_name("tflite_worker.py")
# onnx2tf 2.6.9 declares Python >= 3.12 but runs on 3.11: it goes in --no-deps, its needs pinned here
PACKAGES = ["tensorflow==2.21.0", "tf-keras==2.21.0", "ai-edge-litert==2.3.0", "ethos-u-vela==5.2.0",
            "onnx==1.20.1", "onnxruntime==1.26.0", "onnxsim==0.6.5", "onnxoptimizer==0.4.2", "onnxscript==0.6.2",
            "sne4onnx==2.0.1", "sng4onnx==2.0.1", "psutil>=5.9", "h5py>=3.11", "ml-dtypes>=0.5",
            "flatbuffers>=25", "tqdm", "opencv-python-headless"]
CONVERTER = "onnx2tf==2.6.9"
VENV_TIMEOUT_S, PIP_TIMEOUT_S, WORKER_TIMEOUT_S, ESTIMATE_TIMEOUT_S = 300, 1800, 1800, 300
MISSING = "the {target} target needs LiteRT and Vela in their own interpreter: run `edge3d setup tflite` first"


def venv_dir() -> Path:
    return Path(os.environ.get("EDGE3D_TFLITE_VENV", Path.home() / ".cache" / "edge3d" / "tflite"))


def python() -> Path:
    return venv_dir() / "bin" / "python"


def setup(echo=print) -> Path:
    """Create the interpreter's virtual environment; returns its Python."""
    return make_venv(venv_dir(), [("TensorFlow, LiteRT and Vela", PACKAGES),
                                  (CONVERTER, ["--no-deps", "--ignore-requires-python", CONVERTER])],
                     "tflite", echo, VENV_TIMEOUT_S, PIP_TIMEOUT_S)


def available() -> bool:
    return _imports(str(python()))


@functools.lru_cache(maxsize=4)
def _imports(interpreter: str) -> bool:
    """Whether the interpreter imports the converter, LiteRT and Vela (a TensorFlow-sized import:
    asked once per interpreter, not once per runtime that needs it)."""
    return Path(interpreter).exists() and run_tool(
        [interpreter, "-c", "import onnx2tf, ai_edge_litert, ethosu.vela"], f"importing onnx2tf in {interpreter}",
        120, InputError, capture_output=True).returncode == 0


def call(*args: str, timeout: float | None = None) -> dict:
    """One worker command in a folder of its own; its JSON answer, or its last words."""
    with tempfile.TemporaryDirectory(prefix="edge3d-tflite-") as cwd:
        done = run_tool([str(python()), "-P", str(WORKER), *args], f"the tflite worker's {args[0]} of "
                        f"{Path(args[1]).name}", timeout or WORKER_TIMEOUT_S, capture_output=True, text=True, cwd=cwd)
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"ok": False, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}


def _calibration(feeds: list[dict[str, np.ndarray]], folder: Path) -> Path:
    """onnx2tf's calibration file: the first input's samples stacked on its batch axis."""
    path = folder / "calib.npy"
    np.save(path, np.concatenate([next(iter(f.values())) for f in feeds]).astype(np.float32))
    return path


def convert(model: Path, folder: Path, backend: str = "tf_converter", calib: list | None = None,
            timeout: float | None = None) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    args = [str(model.resolve()), str(folder.resolve()), backend]
    if calib:
        args.append(str(_calibration(calib, folder)))
    return call("convert", *args, timeout=timeout)


@register("tflite")
class TfliteRuntime(Runtime):
    """The bundle's model as a LiteRT flatbuffer: fp32, fp16 (weights) or int8 (full integer,
    calibrated on clips), run and verified in the LiteRT interpreter here."""

    batched_verification = True  # each run starts the worker's interpreter: verify all samples at once

    def where(self, target) -> str:
        return "LiteRT: converted (onnx2tf), verified in the LiteRT interpreter here"

    def is_available(self) -> bool:
        return available()

    def require(self, target=None) -> None:
        if not self.is_available():
            raise InputError(MISSING.format(target=target.name if target is not None else "tflite"))

    def build(self, model: Path, target, bundle: Path, precision: str, calib: list | None = None,
              **options) -> Artifact:
        out = bundle / f"model.{precision}.tflite"
        with tempfile.TemporaryDirectory(prefix="edge3d-onnx2tf-") as tmp:
            result = convert(model, Path(tmp), calib=calib if precision == "int8" else None)
            if not result["ok"] or precision not in result["files"]:
                raise RuntimeError(f"onnx2tf could not convert {model.name} to {precision}: "
                                   f"{result.get('error', 'no file')}")
            shutil.copyfile(result["files"][precision], out)
        ops = result["ops"][precision]
        return Artifact("tflite", precision, [out.name], built_here=True, runnable_here=True,
                        meta={"converter": CONVERTER, "ops": ops, "input_layout": "as model.onnx (onnx2tf -kat)",
                              "calib": len(calib or []) if precision == "int8" else 0},
                        notes=[f"{sum(ops.values())} operators, {ops.get('TRANSPOSE', 0)} TRANSPOSE"])

    def load(self, artifact: Artifact, bundle: Path, calib: list | None = None) -> TfliteSession:
        return TfliteSession(bundle / artifact.files[0], bundle / "model.onnx")


class TfliteSession(Session):
    def __init__(self, path: Path, onnx_model: Path):
        self.path = path
        self.inputs, self.outputs = onnx_io(onnx_model)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.run_many([feeds])[0]

    def run_many(self, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        with tempfile.TemporaryDirectory() as tmp:
            for n, feed in enumerate(feeds):
                arrays = {f"i{k:03d}": feed[v.name] for k, v in enumerate(self.inputs)}
                np.savez(Path(tmp) / f"in_{n}.npz", *[arrays[k] for k in sorted(arrays)])
            result = call("run", str(self.path.resolve()), tmp, str(len(feeds)))
            if not result["ok"]:
                raise RuntimeError(f"LiteRT: {result['error']}")
            runs = []
            for n in range(len(feeds)):
                outs = np.load(Path(tmp) / f"out_{n}.npz")
                runs.append([outs[f"arr_{i}"] for i in range(len(outs.files))])
            return runs


@register("ethos-u")
class EthosURuntime(Runtime):
    """The INT8 LiteRT model compiled by Vela for the profile's Ethos-U: Vela's offline estimate
    (time, SRAM, flash, operators placed on the NPU and why the others are not), beside the same
    for the original 5D model. The NPU itself runs on the device."""

    def where(self, target) -> str:
        return ("Ethos-U: compiled by Vela here with its offline estimate (time, memory, NPU placement), "
                "lowered and 5D; runs on the device")

    def is_available(self) -> bool:
        return available()

    def require(self, target=None) -> None:
        if not self.is_available():
            raise InputError(MISSING.format(target=target.name if target is not None else "ethos-u"))

    def input_model(self, bundle: Path, precision: str) -> Path:
        return bundle / "model.int8.tflite"

    def build(self, model: Path, target, bundle: Path, precision: str, calib: list | None = None,
              original=None, original_calib: list | None = None, **options) -> Artifact:
        accelerator = target.ethos_u["accelerator"]
        out = bundle / f"model.{accelerator}.tflite"
        with tempfile.TemporaryDirectory(prefix="edge3d-vela-") as tmp:
            result = call("vela", str(model.resolve()), tmp, accelerator)
            if not result["ok"]:
                raise RuntimeError(f"Vela could not compile {model.name} for {accelerator}: {result['error']}")
            shutil.copyfile(result.pop("vela_file"), out)
        estimate = {"lowered": result, "original_5d": self._original(original, original_calib, accelerator)}
        return Artifact("ethos-u", "int8", [out.name], built_here=True, runnable_here=False,
                        meta={"accelerator": accelerator, "vela_estimate": estimate},
                        notes=[f"Vela's estimate: {result['inference_ms']:.2f} ms on the NPU alone, "
                               f"{result['npu_share']:.0%} of operators on the NPU"],
                        device_steps=[f"# {out.name} runs through the Ethos-U driver of the device's "
                                      "LiteRT / TFLite Micro build"])

    @staticmethod
    def _original(original, original_calib, accelerator: str) -> dict:
        """What the same tools make of the 5D model: its INT8 conversion (LiteRT has no INT8
        CONV_3D kernel, so this is expected to fail and is said so), else Vela on its FP32 model,
        where every operator stays on the CPU."""
        import onnx

        if original is None:
            return {"error": "no 5D model"}
        with tempfile.TemporaryDirectory(prefix="edge3d-5d-tflite-") as tmp:
            path = Path(original) if isinstance(original, (str, Path)) else Path(tmp) / "original.onnx"
            if not isinstance(original, (str, Path)):
                onnx.save(original, str(path))
            try:
                int8 = convert(path, Path(tmp) / "int8", calib=original_calib, timeout=ESTIMATE_TIMEOUT_S)
                if int8["ok"] and "int8" in int8["files"]:
                    done = call("vela", int8["files"]["int8"], str(Path(tmp) / "vela"), accelerator,
                                timeout=ESTIMATE_TIMEOUT_S)
                    done.pop("vela_file", None)  # a file of this temporary folder
                    return {**done, "precision": "int8"}
                fp32 = convert(path, Path(tmp) / "fp32", backend="flatbuffer_direct", timeout=ESTIMATE_TIMEOUT_S)
                if not fp32["ok"]:
                    return {"error": f"onnx2tf could not convert the 5D model: {fp32['error']}"}
                done = call("vela", fp32["files"]["fp32"], str(Path(tmp) / "vela"), accelerator,
                            timeout=ESTIMATE_TIMEOUT_S)
            except CheckFailed as exc:
                return {"error": str(exc)}
        done.pop("vela_file", None)
        return {**done, "precision": "fp32",
                "int8_error": f"no INT8 model of the 5D graph: {int8.get('error', 'no file')}"}
