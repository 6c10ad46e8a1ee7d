"""TensorRT: the engine is built where the GPU is. Every bundle for a TensorRT target carries
``build_engine.sh`` (trtexec) and ``build_engine.py`` (TensorRT Python API) with the profile's
flags; with a GPU and ``tensorrt`` present the engine is built and run here too."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from .base import Artifact, IOSpec, Runtime, Session, onnx_io, register, run_tool

SCRIPT_SH = """#!/usr/bin/env bash
# Build the TensorRT engine of this bundle on the device itself ({target}: {description}).
# Needs trtexec from TensorRT ({jetpack}). Extra trtexec flags may be appended.
# It also times the engine and writes its per-layer profile to profile.json: keep the log
# (./build_engine.sh 2>&1 | tee trtexec.log) and `edge3d bench BUNDLE --import-trtexec trtexec.log`
# turns both into a latency report.
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC=${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}
"$TRTEXEC" --onnx={onnx} --saveEngine=model.plan {flags} {profiling} "$@"
"""

PROFILING = ["--separateProfileRun", "--dumpProfile", "--exportProfile=profile.json"]

SCRIPT_PY = '''"""Build the TensorRT engine of this bundle with the TensorRT Python API ({target})."""
import sys
from pathlib import Path

import tensorrt as trt

HERE = Path(__file__).resolve().parent
ONNX, PLAN = HERE / "{onnx}", HERE / "model.plan"
PRECISION, DLA_CORE, GPU_FALLBACK = "{precision}", {dla_core}, {gpu_fallback}

logger = trt.Logger(trt.Logger.WARNING)
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
if not parser.parse(ONNX.read_bytes()):
    for i in range(parser.num_errors):
        print(parser.get_error(i), file=sys.stderr)
    sys.exit("the ONNX parser rejected the model")
config = builder.create_builder_config()
config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
if PRECISION in ("fp16", "int8"):
    config.set_flag(trt.BuilderFlag.FP16)
if PRECISION == "int8":
    config.set_flag(trt.BuilderFlag.INT8)  # the model carries its own Q/DQ scales
if DLA_CORE is not None:
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = DLA_CORE
    if GPU_FALLBACK:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
plan = builder.build_serialized_network(network, config)
if plan is None:
    sys.exit("TensorRT could not build the engine")
PLAN.write_bytes(plan)
print(f"wrote {{PLAN}} ({{PLAN.stat().st_size}} bytes)")
'''


def trtexec_flags(target, precision: str, shapes: dict[str, list[int]]) -> list[str]:
    flags = []
    if precision in ("fp16", "int8"):
        flags.append("--fp16")
    if precision == "int8":
        flags.append("--int8")
    dla = target.tensorrt.get("dla_core")
    if dla is not None:
        flags.append(f"--useDLACore={dla}")
        if target.tensorrt.get("gpu_fallback", False):
            flags.append("--allowGPUFallback")
    flags.append("--shapes=" + ",".join(f"{n}:{'x'.join(map(str, s))}" for n, s in shapes.items()))
    return flags


NVIDIA_SMI_TIMEOUT_S = 30
ENGINE_BUILD_TIMEOUT_S = 3600  # a large model's engine takes minutes; an hour means it is stuck


def gpu_present() -> bool:
    return shutil.which("nvidia-smi") is not None and run_tool(
        ["nvidia-smi", "-L"], "nvidia-smi -L", NVIDIA_SMI_TIMEOUT_S, hint="is the NVIDIA driver hung?",
        capture_output=True).returncode == 0


@register("tensorrt")
class TensorRTRuntime(Runtime):
    """Optional here (no missing_hint): without a GPU the bundle carries the build scripts."""

    def input_model(self, bundle: Path, precision: str) -> Path:
        """INT8 engines are built from the QDQ model (explicit quantization, its own scales)."""
        return bundle / ("model.int8.onnx" if precision == "int8" else "model.onnx")

    def is_available(self) -> bool:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return False
        return gpu_present()

    def build(self, model: Path, target, bundle: Path, precision: str, calib: list | None = None,
              **options) -> Artifact:
        shapes = {v.name: [d if isinstance(d, int) else 0 for d in v.shape] for v in onnx_io(model)[0]}
        flags = trtexec_flags(target, precision, shapes)
        dla = target.tensorrt.get("dla_core")
        values = dict(target=target.name, description=target.description, onnx=model.name,
                      jetpack=target.tensorrt.get("jetpack", "TensorRT 10"), flags=" ".join(flags),
                      profiling=" ".join(PROFILING),
                      precision=precision, dla_core=repr(dla), gpu_fallback=bool(target.tensorrt.get("gpu_fallback")))
        sh, py = bundle / "build_engine.sh", bundle / "build_engine.py"
        sh.write_text(SCRIPT_SH.format(**values))
        sh.chmod(0o755)
        py.write_text(SCRIPT_PY.format(**values))
        artifact = Artifact("tensorrt", precision, [sh.name, py.name], built_here=False, runnable_here=False,
                            meta={"trtexec_flags": flags,
                                  "compute_capability": target.tensorrt.get("compute_capability"), "dla_core": dla})
        if self.is_available():
            done = run_tool([sys.executable, str(py)], f"building the TensorRT engine ({py.name})",
                            ENGINE_BUILD_TIMEOUT_S, capture_output=True, text=True)
            if done.returncode == 0:
                artifact.files.append("model.plan")
                artifact.built_here = artifact.runnable_here = True
            else:
                artifact.notes.append("building here failed: " + done.stderr.strip()[-300:])
        else:
            artifact.notes.append("no NVIDIA GPU with TensorRT here: "
                                  "run build_engine.sh (or build_engine.py) on the device")
        return artifact

    def load(self, artifact: Artifact, bundle: Path, calib: list | None = None) -> TensorRTSession:
        return TensorRTSession(bundle / "model.plan")


class TensorRTSession(Session):
    """Runs a plan with the TensorRT 10 tensor API; buffers through PyTorch's CUDA tensors."""

    def __init__(self, plan: Path):
        import tensorrt as trt

        self.trt = trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) != mode]

        def spec(name: str) -> IOSpec:  # a dynamic dim is -1 to TensorRT
            shape = tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(name))
            try:
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            except TypeError:  # bf16, fp8, int4: no numpy type; the bundle's ONNX I/O is fp32 anyway
                dtype = np.dtype(np.float32)
            return IOSpec(name, shape, dtype)

        self.inputs = [spec(n) for n in self.input_names]
        self.outputs = [spec(n) for n in self.output_names]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        keep = []
        for name in self.input_names:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).cuda()
            keep.append(tensor)
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = []
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            tensor = torch.empty(shape, dtype=torch.float32, device="cuda")
            outputs.append(tensor)
            self.context.set_tensor_address(name, tensor.data_ptr())
        stream = torch.cuda.current_stream()
        self.context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return [t.cpu().numpy() for t in outputs]

    def close(self) -> None:
        self.context = self.engine = None  # the context first: it holds the engine's device memory
