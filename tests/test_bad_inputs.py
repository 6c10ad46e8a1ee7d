"""Inputs that used to end in "internal error" (exit 3): each is now done (0) or one line of bad
input (2), with no traceback and nothing left behind."""

import onnx
import pytest
import torch
from conftest import invoke, stderr_lines


class _Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 4, 3, padding=1)


class Half(_Conv):
    def forward(self, x):  # an fp16 clip, computed in fp32
        return self.conv(x.float())


class Scaled(_Conv):
    def forward(self, x, scale):  # a second, non-clip input
        return self.conv(x) * scale


CLIP = (1, 3, 4, 8, 8)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")

    def save(name, module, args, **kwargs):
        torch.onnx.export(module, args, str(root / name), dynamo=False, opset_version=17, **kwargs)
        return root / name

    plain = save("plain.onnx", torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1)), (torch.randn(*CLIP),))
    newer = onnx.load(str(plain))
    newer.opset_import[0].version = 99
    onnx.save(newer, str(root / "opset99.onnx"))
    return {
        "plain": plain,
        "opset99": root / "opset99.onnx",
        "fp16": save("fp16.onnx", Half(), (torch.randn(*CLIP).half(),)),
        "bf16": save("bf16.onnx", Half(), (torch.randn(*CLIP).bfloat16(),)),
        "two-inputs": save("two.onnx", Scaled(), (torch.randn(*CLIP), torch.randn(1))),
        "symbolic": save("sym.onnx", torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1)), (torch.randn(*CLIP),),
                         input_names=["x"], dynamic_axes={"x": {0: "b", 2: "t"}}),
    }


BAD = {  # case -> (model, extra arguments, text of the one stderr line)
    "opset newer than onnx knows": ("opset99", [], "newer than"),
    "symbolic T without --input-shape": ("symbolic", [], "pass --input-shape"),
    "negative seed": ("plain", ["--seed", "-1"], "--seed"),
    "bfloat16 clip for an INT8 target": ("bf16", ["--target", "npu"], "one float32 clip input"),
    "two inputs for a TVM target": ("two-inputs", ["--target", "x86"], "one float32 clip input"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2(models, tmp_path, case):
    name, extra, text = BAD[case]
    result = invoke("export", models[name], "-o", tmp_path / "out", *extra)
    assert result.exit_code == 2, result.output
    lines = stderr_lines(result)
    assert len(lines) == 1 and text in lines[0] and "internal error" not in lines[0], lines
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fp16", "bf16", "two-inputs"])
def test_models_with_other_inputs_export(models, tmp_path, name):
    import json

    result = invoke("export", models[name], "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["max_rank"] == 4
    assert len(manifest["inputs"]) == (2 if name == "two-inputs" else 1)
    assert manifest["artifacts"][0]["latency"]["iters"] > 0  # timed with every input, in its dtype


def test_lower_applies_input_shape(models, tmp_path):
    out = tmp_path / "lowered.onnx"
    result = invoke("lower", models["symbolic"], "-o", out, "--input-shape", ",".join(map(str, CLIP)), "-q")
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(out)).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [4, 3, 8, 8]  # B·T frames


def test_object_npy_calibration_clip_is_bad_input(models, tmp_path):
    import numpy as np

    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "clip.npy", np.array([{"payload": 1}], dtype=object), allow_pickle=True)
    result = invoke("export", models["plain"], "-o", tmp_path / "out", "--target", "npu", "--calib", calib)
    assert result.exit_code == 2, result.output
    lines = stderr_lines(result)
    assert len(lines) == 1 and "not a numeric .npy array" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib"]


def test_lower_refuses_a_pytorch_file_without_opening_it(tiny_model, tmp_path, monkeypatch):
    import edge3d.pipeline as pipeline

    model, _ = tiny_model("conv3d", "pt")
    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: pytest.fail("the file was loaded"))
    result = invoke("lower", model, "-o", tmp_path / "out.onnx")
    assert result.exit_code == 2
    lines = stderr_lines(result)
    assert len(lines) == 1 and "not ONNX" in lines[0] and "edge3d export" in lines[0], lines


def test_absurd_input_shape_is_bad_input(models, tmp_path):
    result = invoke("export", models["plain"], "-o", tmp_path / "out", "--input-shape", "100000,3,100000,100,100")
    assert result.exit_code == 2
    lines = stderr_lines(result)
    assert len(lines) == 1 and "GiB as float32" in lines[0], lines


def test_arch_kwargs_the_factory_rejects_are_bad_input(tmp_path):
    import torch

    weights = tmp_path / "w.pt"
    torch.save({"x": torch.zeros(1)}, str(weights))
    result = invoke("export", weights, "--arch", "examples.models.c3d:c3d", "--arch-kwargs", '{"num_classes": -1}',
                    "--input-shape", "1,3,4,16,16", "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = stderr_lines(result)
    assert len(lines) == 1 and "--arch-kwargs" in lines[0], lines


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '{"format": "something-else"}', "\udcff"])
def test_bench_on_a_damaged_manifest_is_bad_input(tmp_path, content):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    result = invoke("bench", bundle, "--iters", "1")
    assert result.exit_code == 2, result.output
    lines = stderr_lines(result)
    assert len(lines) == 1 and "manifest" in lines[0], lines


def test_a_big_file_that_is_no_model_is_refused_from_its_first_bytes(tmp_path, monkeypatch):
    import onnx

    junk = tmp_path / "video.mp4"
    with junk.open("wb") as fh:
        fh.write(b"\x00\x00\x00\x18ftypmp42")
        fh.truncate(64 * 2**20)  # 64 MiB, sparse
    monkeypatch.setattr(onnx, "load", lambda *a, **k: pytest.fail("the whole file was parsed"))
    result = invoke("export", junk, "-o", tmp_path / "out")
    assert result.exit_code == 2
    lines = stderr_lines(result)
    assert len(lines) == 1 and "neither an ONNX nor a PyTorch model" in lines[0], lines
