"""The lowered bundle: frames layout, determinism, --dynamic-batch, and `edge3d lower`."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import invoke, reference_model, shape_arg, small_shape

from edge3d.layouts import clip_to_frames, frames_to_clip
from edge3d.passes.live_memory import live_memory_of


@pytest.mark.slow
def test_same_input_gives_byte_identical_model(saved_model, tmp_path):
    path = saved_model("x3d", "pt")
    shape = shape_arg(small_shape("x3d"))
    for out in ("a", "b"):
        result = invoke("export", path, "-o", tmp_path / out, "--input-shape", shape, "-q")
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()


@pytest.mark.slow
def test_manifest_layouts_and_rewrite_summary(exported):
    export = exported("eco-lite")
    manifest = export.manifest
    (entry,) = manifest["inputs"]
    b, c, t, h, w = small_shape("eco-lite")
    assert entry["layout"] == "frames"
    assert entry["original_shape"] == [b, c, t, h, w] and entry["shape"] == [b * t, c, h, w]
    assert manifest["outputs"][0]["layout"] == "plain"
    rewrite = manifest["rewrite"]
    assert rewrite["lowered"] and rewrite["lowered_nodes"] == len(rewrite["nodes"]) > 0
    assert any("Conv3d" in rule for rule in rewrite["by_rule"])
    assert all({"node", "op", "rule", "into"} <= set(n) for n in rewrite["nodes"])


@pytest.mark.slow
def test_dynamic_batch_runs_any_batch(saved_model, tmp_path):
    name = "r3d18"
    shape = small_shape(name)
    out = tmp_path / "dyn"
    result = invoke("export", saved_model(name, "pt"), "-o", out, "--input-shape", shape_arg(shape),
                    "--dynamic-batch", "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"][0] == f"batch*{shape[2]}"
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    model = reference_model(name)
    for batch in (1, 3):
        clip = np.random.default_rng(batch).standard_normal((batch, *shape[1:])).astype(np.float32)
        got = session.run(None, {session.get_inputs()[0].name: clip_to_frames(clip)})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(clip)).numpy()
        assert got.shape == want.shape
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


def test_dynamic_batch_refused_for_exported_program(saved_model, tmp_path):
    result = invoke("export", saved_model("c3d", "pt2"), "-o", tmp_path / "o", "--dynamic-batch")
    assert result.exit_code == 2
    assert "--dynamic-batch needs" in result.stderr
    assert not (tmp_path / "o").exists()


def test_rank5_outputs_leave_as_frames(tmp_path):
    """A model whose output is a clip: the output is frames and converts back exactly."""
    net = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
    clip = torch.randn(2, 3, 4, 8, 8)
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.trace(net, (clip,)), str(path))
    out = tmp_path / "b"
    assert invoke("export", path, "-o", out, "--input-shape", "2,3,4,8,8", "-q").exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"][0]["layout"] == "frames"
    assert manifest["outputs"][0]["original_shape"] == [2, 4, 4, 8, 8]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = frames_to_clip(session.run(None, {session.get_inputs()[0].name: clip_to_frames(clip.numpy())})[0], 2)
    with torch.no_grad():
        np.testing.assert_allclose(got, net(clip).numpy(), rtol=1e-5, atol=1e-5)


def test_lower_an_onnx_file(onnx_5d, tmp_path):
    src = onnx_5d("slowfast")
    out = tmp_path / "low.onnx"
    result = invoke("lower", src, "-o", out)
    assert result.exit_code == 0, result.output
    assert "max rank 4" in result.stdout and "verified on 4 seeded inputs" in result.stdout
    model = onnx.shape_inference.infer_shapes(onnx.load(str(out)))
    ranks = [len(v.type.tensor_type.shape.dim) for v in list(model.graph.value_info) + list(model.graph.input)]
    assert max(ranks) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["low.onnx"]
    again = invoke("lower", src, "-o", out)
    assert again.exit_code == 2 and "--force" in again.stderr


# strategy -> (rule, node counts of the lowered graph) for one 3x3x3 Conv3d: one Gather of the three
# taps into channels and one Conv2d, or one Conv2d per tap (each tap gathered on its own) added up
STRATEGIES = {
    "gathered": ("Conv3d → 3 temporal taps gathered into channels, one Conv2d", {"Conv": 1, "Gather": 1, "Add": 0}),
    "summed": ("Conv3d → 3 Conv2d on temporal taps, summed", {"Conv": 3, "Gather": 3, "Add": 2}),
    # the tiny clip is one chunk; each tap a Slice of the frames, the two edge taps padded by one frame
    "chunked": ("Conv3d → 3 Conv2d on temporal taps, summed, 4 output frames at a time",
                {"Conv": 3, "Gather": 0, "Slice": 3, "Pad": 2, "Add": 2}),
}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_conv_strategies_end_to_end(tiny_model, tmp_path, strategy):
    path, shape = tiny_model("conv3d")
    out = tmp_path / strategy
    result = invoke("export", path, "-o", out, "--input-shape", shape_arg(shape), "--conv-strategy", strategy, "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    rule, counts = STRATEGIES[strategy]
    assert manifest["rewrite"]["conv_strategy"] == strategy
    assert manifest["rewrite"]["by_rule"] == {rule: 1, "Relu on frames": 1}
    assert manifest["verification"]["passed"]
    memory = manifest["rewrite"]["activation_memory"]
    bundled = onnx.shape_inference.infer_shapes(onnx.load(str(out / "model.onnx")))
    assert memory["original"]["peak_bytes"] > 0
    assert memory["lowered"]["peak_bytes"] == live_memory_of(bundled).peak  # the figure is the bundled model's
    ops = [n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node]
    assert {op: ops.count(op) for op in counts} == counts, ops
