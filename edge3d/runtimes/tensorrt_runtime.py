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
# TensorRT 11 and later build strongly typed networks: the precision comes from the model
# ({onnx_typed}), not from --fp16/--int8, which they no longer take. TRT_VERSION=10.3 overrides
# the version found.
# It also times the engine and writes its per-layer profile to profile.json: keep the log
# (./build_engine.sh 2>&1 | tee trtexec.log) and `edge3d bench BUNDLE --import-trtexec trtexec.log`
# turns both into a latency report.
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC=${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}
if [ -z "${{TRT_VERSION:-}}" ]; then
  # trtexec's banner: [TensorRT v100300] is 10.3.0, [TensorRT v8502] is 8.5.2
  code=$("$TRTEXEC" --help 2>&1 | sed -n 's/.*TensorRT v\\([0-9][0-9.]*\\).*/\\1/p' | head -n 1 || true)
  if [[ "$code" == *.* ]]; then TRT_VERSION=$code
  elif [ -n "$code" ] && [ "${{#code}}" -ge 6 ]; then TRT_VERSION="$((code / 10000)).$((code / 100 % 100))"
  elif [ -n "$code" ]; then TRT_VERSION="$((code / 1000)).$((code / 100 % 10))"
  else TRT_VERSION=$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || echo 10.0); fi
fi
major=${{TRT_VERSION%%.*}}; minor=${{TRT_VERSION#*.}}; minor=${{minor%%.*}}
if [ -n "{dla_limit}" ] && [ "$((major * 100 + minor))" -gt {dla_limit_code} ]; then
  echo "this bundle runs on the DLA, which TensorRT $TRT_VERSION no longer supports:" \\
       "build it with TensorRT {dla_limit} or older (JetPack 5 or 6 on Orin or Xavier)" >&2
  exit 1
fi
if [ "$major" -ge 11 ]; then
  "$TRTEXEC" --onnx={onnx_typed} --saveEngine=model.plan {typed_flags} {profiling} "$@"
else
  "$TRTEXEC" --onnx={onnx} --saveEngine=model.plan {flags} {profiling} "$@"
fi
"""

PROFILING = ["--separateProfileRun", "--dumpProfile", "--exportProfile=profile.json"]

SCRIPT_PY = '''"""Build the TensorRT engine of this bundle with the TensorRT Python API ({target}).

TensorRT 11 and later build strongly typed networks: the precision comes from the model
({onnx_typed}); earlier releases take {onnx} with the builder's precision flags."""
import sys
from pathlib import Path

import tensorrt as trt

HERE = Path(__file__).resolve().parent
PRECISION, DLA_CORE, GPU_FALLBACK, DLA_LIMIT = "{precision}", {dla_core}, {gpu_fallback}, {dla_limit_py}
VERSION = tuple(int(part) for part in trt.__version__.split(".")[:2])
TYPED = VERSION >= (11, 0)
ONNX, PLAN = HERE / ("{onnx_typed}" if TYPED else "{onnx}"), HERE / "model.plan"
if DLA_CORE is not None and DLA_LIMIT and VERSION > DLA_LIMIT:
    sys.exit(f"this bundle runs on the DLA, which TensorRT {{trt.__version__}} no longer supports: build it with "
             "TensorRT {dla_limit} or older (JetPack 5 or 6 on Orin or Xavier)")

logger = trt.Logger(trt.Logger.WARNING)
builder = trt.Builder(logger)
flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if TYPED else 0
network = builder.create_network(flags)
parser = trt.OnnxParser(network, logger)
if not parser.parse(ONNX.read_bytes()):
    for i in range(parser.num_errors):
        print(parser.get_error(i), file=sys.stderr)
    sys.exit("the ONNX parser rejected the model")
config = builder.create_builder_config()
config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
if not TYPED and PRECISION in ("fp16", "int8"):
    config.set_flag(trt.BuilderFlag.FP16)
if not TYPED and PRECISION == "int8":
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

def _version(text: str) -> tuple[int, int]:
    major, minor = (int(part) for part in text.split(".")[:2])
    return major, minor


# The model a strongly typed build (TensorRT 11+) takes for each precision: its types say it all.
TYPED_MODEL = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


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

    def where(self, target) -> str:
        return ("TensorRT: build scripts here; the engine is built, checked and timed on the device "
                "(here too where an NVIDIA GPU and tensorrt are)")

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
        typed_flags = [f for f in flags if f not in ("--fp16", "--int8")]
        dla = target.tensorrt.get("dla_core")
        dla_limit = target.tensorrt.get("dla_max_version", "") if dla is not None else ""
        values = dict(target=target.name, description=target.description, onnx=model.name,
                      onnx_typed=TYPED_MODEL[precision],
                      jetpack=target.tensorrt.get("jetpack", "TensorRT 10"), flags=" ".join(flags),
                      typed_flags=" ".join(typed_flags), profiling=" ".join(PROFILING),
                      dla_limit=dla_limit, dla_limit_py=repr(_version(dla_limit)) if dla_limit else "None",
                      dla_limit_code=_version(dla_limit)[0] * 100 + _version(dla_limit)[1] if dla_limit else 0,
                      precision=precision, dla_core=repr(dla), gpu_fallback=bool(target.tensorrt.get("gpu_fallback")))
        sh, py = bundle / "build_engine.sh", bundle / "build_engine.py"
        sh.write_text(SCRIPT_SH.format(**values))
        sh.chmod(0o755)
        py.write_text(SCRIPT_PY.format(**values))
        artifact = Artifact("tensorrt", precision, [sh.name, py.name], built_here=False, runnable_here=False,
                            device_steps=["./build_engine.sh        # trtexec, or: python3 build_engine.py"],
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
