"""Build, verify and time the target's artifacts inside the bundle being written.

Every artifact that can run here is checked against the original model with the tolerance of
its precision (INT8 on the calibration clips), and timed with the runtimes' shared measure().
No runtime is named here: whether one must be installed, which model it builds from, what it
takes to build and load, and whether its time means anything here are said by its class.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..errors import CheckFailed
from ..layouts import adapt_runner, clip_to_frames
from ..runtimes.base import measure, runtime
from ..verify import ort_runner, seeded_inputs, verify

# artifact kind in a profile → (runtime, precision it is built in; None: the export's precision)
KINDS = {"onnx-int8": ("ort", "int8"), "tvm": ("tvm", "fp32"), "tensorrt": ("tensorrt", None), "rknn": ("rknn", None),
         "tflite": ("tflite", None), "ethos-u": ("ethos-u", "int8")}


def require_all(target, precision: str) -> None:
    """Every runtime the target's artifacts need is there (interpreters, TVM, cross compilers):
    checked before the model is loaded, so a missing one costs seconds, not the export."""
    for name, _ in plan(target, precision):
        runtime(name).require(target)


def where(target) -> list[str]:
    """Per runtime of the target's artifacts: what is done here, estimated, or left to the device."""
    names = ["ort"] + [KINDS[kind][0] for kind in target.artifacts if kind != "onnx"]
    return [runtime(name).where(target) for name in dict.fromkeys(names)]


def plan(target, precision: str) -> list[tuple[str, str]]:
    """(runtime, precision) pairs to build, in order (a TensorRT INT8 engine needs the QDQ model first)."""
    builds = []
    if precision == "int8" and not {"onnx-int8", "rknn", "tflite"} & set(target.artifacts):
        builds.append(("ort", "int8"))
    if precision == "fp16" and "tensorrt" in target.artifacts:  # TensorRT 11 takes FP16 only from the model
        builds.append(("ort", "fp16"))
    for kind in target.artifacts:
        if kind == "onnx":
            continue
        name, fixed = KINDS[kind]
        if name == "rknn":  # both precisions: FP16 for fidelity, INT8 for the NPU's speed
            builds += [("rknn", "fp16"), ("rknn", "int8")]
        else:
            builds.append((name, fixed or precision))
    return builds


def build_all(target, precision: str, bundle: Path, reference, clips: list[np.ndarray], layouts, step,
              samples: int, seed: int, shapes, input_name: str, options: dict | None = None,
              output_names: list[str] | None = None, reference_ms: float | None = None,
              heldout: list[np.ndarray] | None = None) -> list[dict]:
    """``input_name``: model.onnx's input; ``options`` go to every runtime's ``build`` (each takes
    the ones it knows, e.g. TVM's ``trials``); ``output_names``: model.onnx's outputs, the names
    the manifest uses (an artifact's own may differ, e.g. TVM numbers them); ``reference_ms``:
    model.onnx's ONNX Runtime median here: an artifact far slower than it gets a ``slow`` entry
    saying so and what makes it faster (the console and report.md show it). ``heldout``: clips
    not used for calibration, on which quantised artifacts are verified (``clips`` otherwise)."""
    options = options or {}
    feeds = [{input_name: clip_to_frames(c) if layouts[0][0] == "frames" else c} for c in clips]
    records = []
    for name, prec in plan(target, precision):
        backend = runtime(name)
        backend.require(target)
        with step(backend.build_label(prec, **options)):
            try:
                artifact = backend.build(backend.input_model(bundle, prec), target, bundle, prec, feeds, **options)
            except (RuntimeError, FileNotFoundError, ValueError) as exc:
                raise CheckFailed(f"{name} build failed: {exc}") from None
        record = {**artifact.to_dict()}
        if artifact.runnable_here:
            with contextlib.ExitStack() as hold:
                with step(f"Verifying {name} ({prec})"):
                    session = hold.enter_context(backend.load(artifact, bundle, calib=feeds))
                    candidate = adapt_runner(ort_runner(session), *layouts)
                    quantized = prec == "int8"
                    check = verify(reference, candidate, shapes,
                                   precision=prec if prec in ("fp16", "int8") else "fp32", samples=samples,
                                   seed=seed, inputs=_inputs(backend, quantized, heldout or clips, shapes, samples,
                                                             seed), names=output_names)
                if not check.passed:
                    fix = (": calibrate on more clips (--calib-clips 32) or on real ones (--calib DIR)"
                           if quantized else "")
                    raise CheckFailed(f"{name} ({prec}) verification failed: " + "; ".join(check.failures)
                                      + f"{fix} (nothing was written)")
                record["verification"] = check.to_dict()
                if getattr(session, "provider", None):  # ONNX Runtime's: CUDA where onnxruntime-gpu loads
                    record["verification"]["provider"] = session.provider
                if check.warnings:  # said on the console and in report.md, with what to try
                    record["warnings"] = [w + ("; calibrate on more clips (--calib-clips 32) or on real ones "
                                               "(--calib DIR)" if quantized else "") for w in check.warnings]
                if quantized:
                    record["verification"]["clips"] = (f"{len(heldout)} held out from calibration" if heldout else
                                                       "the calibration clips (the --calib folder has no more)")
                if backend.is_timed(prec):
                    with step(f"Timing {name} ({prec})"):
                        record["latency"] = measure(session, feeds[0], warmup=2, iters=10, budget_s=TIMING_BUDGET_S)
                    slow = _slowness(name, prec, record["latency"]["median_ms"], reference_ms, backend.speed_hint)
                    if slow:
                        record["slow"] = slow
        records.append(record)
    return records


TIMING_BUDGET_S = 20.0  # an artifact slower than this per 10 runs is timed on fewer (at least 3)
SLOW_RATIO = 3.0  # slower than ONNX Runtime by this much: said, with what makes it faster


def _slowness(name: str, precision: str, median_ms: float, reference_ms: float | None, hint: str) -> str | None:
    if reference_ms is None or median_ms <= SLOW_RATIO * reference_ms:
        return None
    return (f"{name} ({precision}) runs {median_ms / reference_ms:.0f}× slower than ONNX Runtime on this machine "
            f"({median_ms:.1f} ms against {reference_ms:.1f} ms)" + (f"; {hint}" if hint else ""))


def _inputs(backend, quantized: bool, clips: list[np.ndarray], shapes, samples: int, seed: int) -> list | None:
    """What an artifact is verified on: clips for a quantised one; the seeded samples, made up
    front only where the runtime verifies them in one call; else None (made one at a time)."""
    if quantized:
        return [[c] for c in clips]
    if backend.batched_verification:
        return [seeded_inputs(shapes, [np.float32] * len(shapes), seed + i) for i in range(samples)]
    return None
