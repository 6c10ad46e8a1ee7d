"""The runtime protocol: one IOSpec, closable sessions, sessions built once per export, the one
latency-statistics implementation, and time limits on the tools runtimes run."""

from __future__ import annotations

import inspect
import random
import sys

import numpy as np
import onnx
import pytest
from conftest import invoke, shape_arg, small_shape
from onnx import TensorProto, helper

from edge3d.errors import CheckFailed, InputError
from edge3d.latency import KEYS, summarize
from edge3d.runtimes.base import RUNTIMES, IOSpec, Session, SessionCache, measure, run_tool, runtime


def test_summarize_known_percentiles():
    times = [float(t) for t in range(1, 11)]  # 1..10 ms
    random.Random(0).shuffle(times)  # the order of the runs does not matter
    stats = summarize(times)
    assert tuple(stats) == KEYS
    assert stats["iters"] == 10 and stats["min_ms"] == 1.0 and stats["max_ms"] == 10.0
    assert stats["mean_ms"] == pytest.approx(5.5) and stats["median_ms"] == pytest.approx(5.5)
    # linear interpolation between the sorted runs: rank q·(n-1)
    assert stats["p90_ms"] == pytest.approx(9.1)
    assert stats["p95_ms"] == pytest.approx(9.55)
    assert stats["p99_ms"] == pytest.approx(9.91)
    assert stats["std_ms"] == pytest.approx(3.0276503540974917)  # sample standard deviation (n - 1)
    assert all(type(v) in (int, float) for v in stats.values())  # plain JSON numbers


def test_summarize_edge_cases():
    assert summarize([]) == {"iters": 0}
    one = summarize([4.0])
    assert one["std_ms"] == 0.0 and one["min_ms"] == one["median_ms"] == one["p99_ms"] == one["max_ms"] == 4.0
    even = summarize([1.0, 2.0, 3.0, 100.0])
    assert even["median_ms"] == pytest.approx(2.5) and even["p90_ms"] == pytest.approx(70.9)


def test_bench_summary_and_measure_share_the_statistics():
    from edge3d.timing.measure import summary

    times = [3.0, 1.0, 2.0, 4.0]
    bench = summary(times, frames_per_clip=8, clips_per_run=2)
    assert {k: bench[k] for k in KEYS} == summarize(times)
    assert bench["clips_per_s"] == pytest.approx(2e3 / 2.5) and bench["frames_per_s"] == pytest.approx(16e3 / 2.5)
    assert summary([], 8, 2) == {"iters": 0}

    class Fake(Session):
        inputs = outputs = []

        def run(self, feeds):
            return [np.zeros(1)]

    stats = measure(Fake(), {}, warmup=1, iters=7)
    assert tuple(stats) == KEYS and stats["iters"] == 7


def test_iospec_from_value_info():
    spec = IOSpec.from_value_info(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, None]))
    assert spec == IOSpec("x", ("N", 3, None), np.dtype(np.float32))
    assert IOSpec.from_value_info(helper.make_tensor_value_info("i", TensorProto.INT64, [2])).dtype == np.int64


def _relu(path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    return model


def test_ort_session_speaks_iospec_and_closes(tmp_path):
    from edge3d.runtimes.base import onnx_io
    from edge3d.runtimes.ort_runtime import OrtSession

    _relu(tmp_path / "m.onnx")
    with OrtSession(str(tmp_path / "m.onnx")) as session:
        assert (session.inputs, session.outputs) == onnx_io(tmp_path / "m.onnx")
        assert session.inputs == [IOSpec("x", ("N", 3), np.dtype(np.float32))]
        out = session.run({"x": np.array([[-1.0, 0.0, 2.0]], np.float32)})
        assert out[0].tolist() == [[0.0, 0.0, 2.0]]
    assert session.session is None
    session.close()  # twice is harmless


def test_session_cache_builds_each_model_once_and_closes_all():
    built, closed = [], []

    class Fake(Session):
        def __init__(self, model):
            built.append(model)

        def close(self):
            closed.append(self)

    a, b = object(), object()
    with SessionCache(Fake) as sessions:
        assert sessions(a) is sessions(a) and sessions(b) is not sessions(a)
        assert sessions("m.onnx") is sessions("m.onnx")
    assert built == [a, b, "m.onnx"] and len(closed) == 3


def test_runtimes_say_what_build_all_needs(monkeypatch, tmp_path):
    from edge3d.bundle.artifacts import build_all

    source = inspect.getsource(build_all)
    names = ("ort", "tvm", "tensorrt", "rknn", "tflite", "ethos-u")
    assert all(f'"{name}"' not in source for name in names), \
        "build_all names no runtime: the runtime classes say what differs"
    assert {n for n in names if runtime(n).timed_here} == {"ort", "tvm"}
    assert set(RUNTIMES) == set(names)  # registered by runtime()
    assert runtime("ethos-u").input_model(tmp_path, "int8").name == "model.int8.tflite"
    assert runtime("tensorrt").input_model(tmp_path, "int8").name == "model.int8.onnx"
    assert runtime("tensorrt").input_model(tmp_path, "fp16").name == "model.onnx"
    assert runtime("ort").input_model(tmp_path, "int8").name == "model.onnx"
    assert runtime("tvm").build_label("fp32", trials=6) == "Tuning (6 trials) and building tvm (fp32)"
    assert runtime("tvm").build_label("fp32", trials=0) == "Building tvm (fp32)"
    assert runtime("rknn").build_label("int8", trials=6) == "Building rknn (int8)"
    runtime("ort").require()
    runtime("tensorrt").require()  # optional: its scripts are written without it

    tvm = runtime("tvm")
    monkeypatch.setattr(type(tvm), "is_available", lambda self: False)
    with pytest.raises(InputError, match=r"pip install 'edge3d\[tvm\]'"):
        tvm.require()
    monkeypatch.setenv("EDGE3D_RKNN_VENV", str(tmp_path / "none"))
    with pytest.raises(InputError, match="run `edge3d setup rknn` first"):
        runtime("rknn").require()
    monkeypatch.setenv("EDGE3D_TFLITE_VENV", str(tmp_path / "none"))
    with pytest.raises(InputError, match="run `edge3d setup tflite` first"):
        runtime("ethos-u").require()


def test_a_hung_tool_is_killed_with_its_children(tmp_path):
    """A worker that runs a converter of its own (the LiteRT worker runs onnx2tf): on the time
    limit the grandchild goes too, not only the worker (it used to run on at 7 GB)."""
    import os
    import time
    from pathlib import Path

    pid_file = tmp_path / "grandchild.pid"
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
              "time.sleep(60)\n")
    with pytest.raises(CheckFailed, match="did not finish within 2 s"):
        run_tool([sys.executable, "-c", script], "the converter", 2, capture_output=True, text=True)
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # killed at once; reaped by init shortly after
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        state = Path(f"/proc/{grandchild}/stat").read_text().split()[2] if Path(f"/proc/{grandchild}").exists() else "X"
        if state in ("Z", "X"):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the tool's child outlived it")


def test_a_hung_tool_is_one_error_line_naming_it(monkeypatch, tmp_path):
    with pytest.raises(CheckFailed, match=r"^the sleeper did not finish within 0\.5 s; kill it$"):
        run_tool([sys.executable, "-c", "import time; time.sleep(30)"], "the sleeper", 0.5, hint="kill it")
    with pytest.raises(InputError):
        run_tool([sys.executable, "-c", "import time; time.sleep(30)"], "x", 0.5, InputError)

    from edge3d.runtimes import rknn_runtime

    worker = tmp_path / "worker.py"
    worker.write_text("import time\ntime.sleep(30)\n")
    monkeypatch.setattr(rknn_runtime, "python", lambda: sys.executable)
    monkeypatch.setattr(rknn_runtime, "WORKER", worker)
    monkeypatch.setattr(rknn_runtime, "WORKER_TIMEOUT_S", 0.5)
    with pytest.raises(CheckFailed, match="rknn-toolkit2's build of model.onnx did not finish within 0.5 s"):
        rknn_runtime.call("build", str(tmp_path / "model.onnx"), "out.rknn", "rk3588", "fp16")


@pytest.mark.slow
def test_one_export_builds_each_ort_session_once(saved_model, tmp_path, monkeypatch):
    """The lowered model is verified (and with --block compared) through one session without
    ONNX Runtime's arena and timed through one with it, built after the first is closed; the 5D
    model (the lowering's own reference) runs through one more. A TorchScript export adds one
    unoptimised session that runs the exporter's output once (an export ONNX Runtime cannot run
    goes to the converter route)."""
    import onnxruntime

    from edge3d.runtimes.ort_runtime import OrtSession

    built, closed = [], []

    class Counted(onnxruntime.InferenceSession):
        def __init__(self, *args, **kwargs):
            built.append(args[0])
            super().__init__(*args, **kwargs)

    real_close = OrtSession.close

    def close(self):
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(onnxruntime, "InferenceSession", Counted)
    monkeypatch.setattr(OrtSession, "close", close)
    result = invoke("export", saved_model("c3d", "pt"), "--input-shape", shape_arg(small_shape("c3d")),
                    "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    assert len(built) == 4 and len(closed) == 3
    assert len(set(built)) == 3  # three different models (raw export, 5D, lowered)
    assert built[-1] == built[-2]  # the lowered model: checked, then timed


def test_setup_rknn_reports_pips_own_error_in_one_line(monkeypatch, tmp_path):
    """pip's output is captured: a failure is one line with pip's ERROR text; a success shows no
    ERROR line (pip's resolver note about unchecked packages stays in the captured output)."""
    import subprocess

    from conftest import invoke, stderr_lines

    from edge3d.runtimes import base, rknn_runtime

    monkeypatch.setenv("EDGE3D_RKNN_VENV", str(tmp_path / "venv"))
    calls = []

    def failing(command, what, timeout, *args, **kwargs):
        calls.append(kwargs)
        if "pip" in command:
            raise subprocess.CalledProcessError(1, command, stderr="ERROR: No matching distribution found for x==9\n")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(base, "run_tool", failing)  # make_venv's, which both setups use
    result = invoke("setup", "rknn")
    (line,) = stderr_lines(result)
    assert result.exit_code == 2 and "No matching distribution found for x==9" in line
    assert calls[-1].get("capture_output") is True

    def succeeding(command, what, timeout, *args, **kwargs):
        return subprocess.CompletedProcess(command, 0, stdout="", stderr="ERROR: pip's dependency resolver ...")

    monkeypatch.setattr(base, "run_tool", succeeding)
    monkeypatch.setattr(rknn_runtime.RknnRuntime, "is_available", lambda self: True)
    result = invoke("setup", "rknn")
    assert result.exit_code == 0 and "rknn-toolkit2 ready" in result.stdout and "ERROR" not in result.output
    monkeypatch.setattr(base, "run_tool", failing)
    monkeypatch.setenv("EDGE3D_TFLITE_VENV", str(tmp_path / "tfl"))
    tflite = invoke("setup", "tflite")
    (line,) = stderr_lines(tflite)
    assert tflite.exit_code == 2 and "setting up onnx2tf, LiteRT and Vela failed" in line


def test_timing_a_slow_model_is_bounded_in_wall_time():
    """A model that takes 0.2 s per run, timed with a 0.5 s budget: 3 timed runs (the minimum),
    one warm-up, not the 2 + 10 asked for."""
    import time

    from edge3d.runtimes.base import measure

    class Slow:
        runs = 0

        def run(self, feeds):
            Slow.runs += 1
            time.sleep(0.2)

    latency = measure(Slow(), {}, warmup=2, iters=10, budget_s=0.5)
    assert latency["iters"] == 3 and Slow.runs == 4


def test_an_artifact_far_slower_than_onnx_runtime_is_said_so_with_the_fix():
    from edge3d.bundle.artifacts import _slowness
    from edge3d.runtimes.tvm_runtime import TvmRuntime

    line = _slowness("tvm", "fp32", 310.0, 9.0, TvmRuntime.speed_hint)
    assert line is not None and "34× slower than ONNX Runtime" in line and "--tvm-trials" in line
    assert _slowness("tvm", "fp32", 20.0, 9.0, TvmRuntime.speed_hint) is None


class _FakeSession:
    """An InferenceSession whose requested CUDA provider could not load: onnxruntime-gpu prints
    its error and falls back to the CPU, as it does without TensorRT's or cuDNN's libraries."""

    def __init__(self, model, options=None, providers=None):
        print("*************** EP Error ***************")
        sys.stderr.write("[E:onnxruntime:Default] Failed to load library libcudnn.so.9\n")
        self.providers = ["CPUExecutionProvider"]

    def get_providers(self):
        return self.providers


@pytest.mark.parametrize("loads", [False, True])
def test_the_cuda_provider_is_asked_for_only_where_it_loads_and_quietly(monkeypatch, capfd, loads):
    """onnxruntime-gpu lists the CUDA and TensorRT providers whether or not their libraries are
    installed; edge3d tries CUDA once, prints nothing, and never asks for TensorRT's (on an H100
    without TensorRT every verification printed a 10-line EP Error before falling back)."""
    import onnxruntime as ort

    from edge3d.runtimes import ort_runtime

    class Session(_FakeSession):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if loads:
                self.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]

    ort_runtime.cuda_loads.cache_clear()
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", Session)
    try:
        providers = ort_runtime.OrtRuntime.providers()
    finally:
        ort_runtime.cuda_loads.cache_clear()
    assert providers == (["CUDAExecutionProvider", "CPUExecutionProvider"] if loads else ["CPUExecutionProvider"])
    out, err = capfd.readouterr()
    assert out == "" and err == ""

