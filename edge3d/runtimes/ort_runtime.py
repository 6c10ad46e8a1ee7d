"""ONNX Runtime: CPU here, CUDA and TensorRT execution providers where present; INT8 QDQ."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np

from ..errors import InputError, first_line
from .base import Artifact, IOSpec, Runtime, Session, register

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


class OrtSession(Session):
    """An ONNX Runtime CPU session over a ModelProto or a file path.

    ``arena=False`` for sessions that check rather than time: ONNX Runtime's CPU arena keeps the
    largest run's buffers, rounded up to powers of two, for the session's life (on R3D-18 it
    grew by 290 MB over two runs), which an export that holds other models at the same time
    cannot afford; without it a run is a few percent slower."""

    def __init__(self, model, threads: int | None = None, providers: list[str] | None = None, arena: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4  # fatal only: a failure becomes edge3d's one line, not ORT's log
        options.enable_cpu_mem_arena = arena
        if threads:
            options.intra_op_num_threads = threads
        source = str(model) if isinstance(model, Path) else model
        source = source if isinstance(source, (str, bytes)) else source.SerializeToString()
        try:
            self.session = ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for bad models
            raise InputError(f"ONNX Runtime cannot load the model ({first_line(exc, 200)}); check that it runs "
                             "in onnxruntime as it is") from None
        self.provider = self.session.get_providers()[0].replace("ExecutionProvider", "")  # CPU, CUDA
        self.inputs = [IOSpec(i.name, tuple(i.shape), np.dtype(_ORT_TYPES.get(i.type, np.float32)))
                       for i in self.session.get_inputs()]
        self.outputs = [IOSpec(o.name, tuple(o.shape), np.dtype(_ORT_TYPES.get(o.type, np.float32)))
                        for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, {name: _feedable(x) for name, x in feeds.items()})

    def close(self) -> None:
        self.session = None  # onnxruntime frees the session's memory with its last reference


def _feedable(x: np.ndarray):
    """ONNX Runtime's Python API takes no bfloat16 array (numpy has no such type; onnx's ml_dtypes
    does): it goes in as an OrtValue of the same bits."""
    if x.dtype.name != "bfloat16":
        return x
    import onnx
    import onnxruntime as ort

    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(np.ascontiguousarray(x).view(np.uint16),
                                                           onnx.TensorProto.BFLOAT16)


@register("ort")
class OrtRuntime(Runtime):
    """The bundle's ONNX model as it is (fp32), or statically quantized to INT8 QDQ with
    onnxruntime's calibration on calibration clips."""

    timed_here = True

    @staticmethod
    def providers() -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda_loads() else ["CPUExecutionProvider"]

    def build(self, model: Path, target, bundle: Path, precision: str, calib: list | None = None,
              **options) -> Artifact:
        if precision == "fp32":
            return Artifact("ort", "fp32", [model.name], built_here=True, runnable_here=True)
        if precision == "fp16":
            out = bundle / "model.fp16.onnx"
            to_fp16(model, out)
            return Artifact("ort", "fp16", [out.name], built_here=True, runnable_here=True,
                            notes=["float16 weights and arithmetic, float32 inputs and outputs: the model a "
                                   "strongly typed TensorRT build (TensorRT 11 and later) takes for FP16"])
        if precision != "int8":
            raise ValueError(f"ONNX Runtime artifacts are fp32, fp16 or int8, not {precision}")
        out = bundle / "model.int8.onnx"
        quantize_qdq(model, out, calib or [])
        return Artifact("ort", "int8", [out.name], built_here=True, runnable_here=True,
                        notes=["static QDQ quantization (per-channel weights, MinMax) on "
                               f"{len(calib or [])} calibration clips"])

    def where(self, target) -> str:
        parts = ["ONNX Runtime: verified and timed here"]
        if "tensorrt" in target.artifacts and "fp16" in target.precisions:
            parts.append("FP16 (for TensorRT 11): converted and verified here")
        if "int8" in target.precisions and not {"rknn", "tflite"} & set(target.artifacts):
            parts.append("INT8: quantised on calibration clips, verified on held-out clips here")
        return "; ".join(parts)

    def is_timed(self, precision: str) -> bool:
        """An FP16 model runs on this CPU through casts: its time here says nothing of a GPU's."""
        return precision != "fp16"

    def load(self, artifact: Artifact, bundle: Path, calib: list | None = None) -> OrtSession:
        return OrtSession(str(bundle / artifact.files[0]), providers=self.providers())


@functools.cache
def cuda_loads() -> bool:
    """Whether ONNX Runtime's CUDA provider is here and loads. onnxruntime-gpu lists it (and
    TensorRT's) whether or not the CUDA, cuDNN and TensorRT libraries it needs are installed, and
    a session that asks for one that cannot load prints a multi-line error and falls back. So a
    one-node session tries it once, quietly. TensorRT's provider is never asked for: it builds an
    engine per session, which is what the bundle's own TensorRT scripts do on the device."""
    import contextlib
    import io

    import onnxruntime as ort
    from onnx import TensorProto, helper

    from ..log import native_output_muted

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    probe = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        with native_output_muted(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CUDAExecutionProvider"])
    except Exception:  # noqa: BLE001 - any failure to load means: not here
        return False
    return "CUDAExecutionProvider" in session.get_providers()


def to_fp16(model: Path, out: Path) -> None:
    """FP16 with onnxruntime's converter, keeping float32 at the graph's inputs and outputs (the
    bundle's I/O contract and the layouts stay as they are)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(onnx.load(str(model)), keep_io_types=True)
    onnx.save(converted, str(out), save_as_external_data=converted.ByteSize() > 2**31 - 2**20,
              location=out.name + ".data")


def quantize_qdq(model: Path, out: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """INT8 QDQ with onnxruntime.quantization; ``feeds`` are the calibration inputs."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantize the model as is
            shutil.copy(model, prepared)
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
