"""Weights on disk between steps (``edge3d.model_store``): what an export holds, and models above
protobuf's 2 GiB limit (simulated here by lowering the limits)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge3d import pipeline
from edge3d.frontend import to_onnx
from edge3d.model_store import DiskStore
from edge3d.verify import recorded_runner


def _conv_model():
    """A Conv3d with a 27 KB weight (on disk once stored) and a small bias (kept in the graph)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3, 3)).astype(np.float32) * 0.1, "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1] * 6), helper.make_node("Relu", ["c"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 8, 8])], initializer=[w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(source, x):
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_a_stored_model_is_a_skeleton_that_runs_from_its_file(tmp_path):
    model = _conv_model()
    x = np.random.default_rng(1).standard_normal((1, 4, 4, 8, 8)).astype(np.float32)
    store = DiskStore(tmp_path)
    skeleton = store.put(model, "m")
    stored = {t.name: t for t in skeleton.graph.initializer}
    assert stored["w"].data_location == TensorProto.EXTERNAL and not stored["w"].raw_data
    assert stored["b"].data_location == TensorProto.DEFAULT  # 32 bytes: stays in the graph
    assert skeleton.ByteSize() < 1000
    np.testing.assert_array_equal(_run(str(store.source(skeleton)), x), _run(_conv_model().SerializeToString(), x))
    whole = store.full(skeleton)
    assert numpy_helper.to_array({t.name: t for t in whole.graph.initializer}["w"]).shape == (8, 4, 3, 3, 3)
    assert store.source(_conv_model()) is not None and store.path(_conv_model()) is None  # not stored: as it is
    again = store.put(skeleton, "m")  # a second version never appends to the first one's data file
    assert store.path(again) != store.path(skeleton)


def test_prepare_takes_a_model_above_the_limit_when_its_weights_are_on_disk(monkeypatch, tmp_path):
    monkeypatch.setattr(to_onnx, "PROTOBUF_LIMIT", 1000)  # the conv model is now "above 2 GiB"
    with pytest.raises(Exception, match="above protobuf's 2 GiB limit"):
        to_onnx.prepare(_conv_model())  # in memory it cannot be serialised: refused by name
    store = DiskStore(tmp_path)
    prepared = to_onnx.prepare(_conv_model(), store=store)
    assert store.path(prepared) is not None
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in prepared.graph.value_info}
    assert shapes["c"] == [1, 8, 4, 8, 8]
    assert not list(tmp_path.glob("*onnxsim*"))  # onnxsim, which takes the message whole, did not run


def test_export_above_the_limit_writes_weights_beside_the_model(monkeypatch, tmp_path):
    """The whole export and lower with the 2 GiB limits lowered to a few hundred bytes: the
    lowering runs on skeletons and the outputs carry their weights in a .data file."""
    model = tmp_path / "conv.onnx"
    onnx.save(_conv_model(), str(model))
    monkeypatch.setattr(to_onnx, "PROTOBUF_LIMIT", 1000)
    monkeypatch.setattr(pipeline, "WHOLE_FILE_LIMIT", 1000)
    out = tmp_path / "bundle"
    manifest, result = pipeline.run_export(pipeline.ExportOptions(model=model, out=out, verify_samples=2))
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.onnx.data", "report.md"]
    assert manifest["verification"]["passed"] and manifest["model"]["max_rank"] <= 4
    frames = np.random.default_rng(2).standard_normal((4, 4, 8, 8)).astype(np.float32)
    assert _run(str(out / "model.onnx"), frames).shape == (4, 8, 8, 8)
    assert not list(tmp_path.glob(".*"))  # the working folder is gone
    assert (out / "model.onnx.data").stat().st_mode & 0o777 == (out / "model.onnx").stat().st_mode & 0o777

    lowered = tmp_path / "lowered.onnx"
    pipeline.run_lower(model, lowered, pipeline.ExportOptions(model=model, out=lowered, verify_samples=2))
    assert sorted(p.name for p in tmp_path.glob("lowered.onnx*")) == ["lowered.onnx", "lowered.onnx.data"]
    locations = {e.value for t in onnx.load(str(lowered), load_external_data=False).graph.initializer
                 for e in t.external_data if e.key == "location"}
    assert locations == {"lowered.onnx.data"}
    assert _run(str(lowered), frames).shape == (4, 8, 8, 8)
    assert json.loads((out / "manifest.json").read_text())["model"]["sha256"]


def test_no_session_of_an_export_is_built_from_a_serialised_model(monkeypatch, tmp_path):
    """Every ONNX Runtime session of an export loads a stored file (weights mapped from disk);
    the plain 5D model's session is closed before the lowered one is built."""
    from edge3d.runtimes import ort_runtime

    built, closed = [], []
    real_init, real_close = ort_runtime.OrtSession.__init__, ort_runtime.OrtSession.close

    def init(self, model, *args, **kwargs):
        built.append(model)
        real_init(self, model, *args, **kwargs)

    def close(self):
        closed.append(len(built))
        real_close(self)

    monkeypatch.setattr(ort_runtime.OrtSession, "__init__", init)
    monkeypatch.setattr(ort_runtime.OrtSession, "close", close)
    model = tmp_path / "conv.onnx"
    onnx.save(_conv_model(), str(model))
    pipeline.run_export(pipeline.ExportOptions(model=model, out=tmp_path / "bundle", verify_samples=2))
    assert built and all(hasattr(m, "is_file") for m in built)  # paths, never ModelProtos or bytes
    assert closed[0] == 1  # the first session (the plain model's) closed before a second was built


def test_recorded_outputs_come_back_for_the_same_inputs(tmp_path):
    calls = []

    def run(batch):
        calls.append(1)
        return [batch[0] * 2, batch[0].sum(keepdims=True)]

    batches = [[np.full((2, 3), i, np.float32)] for i in range(3)]
    replay = recorded_runner(run, iter(batches), tmp_path / "rec")
    assert len(calls) == 3
    for batch in reversed(batches):
        got = replay(batch)
        np.testing.assert_array_equal(got[0], batch[0] * 2)
        np.testing.assert_array_equal(got[1], batch[0].sum(keepdims=True))
    assert len(calls) == 3  # replayed from disk, not run again
    with pytest.raises(KeyError):
        replay([np.zeros((2, 3), np.float32) + 9])


def test_sessions_that_check_keep_no_arena_and_the_timing_session_does(monkeypatch, tmp_path):
    """ONNX Runtime's arena keeps a run's buffers for the session's life: only the session that
    times model.onnx (as it will be deployed) has one, and it is the only session then open."""
    from edge3d.runtimes import ort_runtime

    opened, events = [], []
    real_init, real_close = ort_runtime.OrtSession.__init__, ort_runtime.OrtSession.close

    def init(self, model, *args, arena=True, **kwargs):
        events.append(("open", arena, len(opened)))
        opened.append(self)
        real_init(self, model, *args, arena=arena, **kwargs)

    def close(self):
        opened.remove(self)
        real_close(self)

    monkeypatch.setattr(ort_runtime.OrtSession, "__init__", init)
    monkeypatch.setattr(ort_runtime.OrtSession, "close", close)
    model = tmp_path / "conv.onnx"
    onnx.save(_conv_model(), str(model))
    pipeline.run_export(pipeline.ExportOptions(model=model, out=tmp_path / "bundle", verify_samples=2))
    with_arena = [e for e in events if e[1]]
    assert len(with_arena) == 1 and with_arena[0][2] == 0  # the timing session, built when no other is open
    assert len(events) > 1 and not opened


def test_the_pytorch_model_is_released_before_the_onnx_steps(monkeypatch, tmp_path):
    """With no artifact to check against PyTorch, its outputs are recorded right after the export
    and its weights freed before any ONNX Runtime session exists; onnxscript's rewriter (which
    the dynamo exporter runs) keeps no reference to them either."""
    import gc
    import weakref

    import torch

    from edge3d.frontend import load
    from edge3d.runtimes import ort_runtime

    model = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.BatchNorm3d(8), torch.nn.ReLU()).eval()
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 4, 8, 8),)), str(path))
    del model
    weights: list = []
    real_load, real_init = load.load_model, ort_runtime.OrtSession.__init__

    def load_model(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        weights.extend(weakref.ref(t) for t in loaded.exported.state_dict.values())
        return loaded

    def init(self, *args, **kwargs):
        gc.collect()
        assert weights and all(ref() is None for ref in weights), "PyTorch weights alive beside a session"
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(pipeline, "load_model", load_model)
    monkeypatch.setattr(ort_runtime.OrtSession, "__init__", init)
    manifest = pipeline.run_export(pipeline.ExportOptions(model=path, out=tmp_path / "bundle", verify_samples=2,
                                                          input_shapes=[(1, 3, 4, 8, 8)]))[0]
    assert manifest["verification"]["reference"] == "pytorch"
    assert manifest["verification"]["passed"]


def test_glibc_returns_freed_memory_at_once():
    import ctypes
    import sys

    from edge3d.malloc import return_freed_memory

    glibc = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    assert return_freed_memory() is bool(glibc)
