"""The Python API (edge3d.api): the CLI's commands as functions, with its defaults, returning what
they made; the README's example runs as written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import small_shape
from lowering_harness import float_input, make_model
from onnx import helper

import edge3d
from edge3d.errors import InputError
from edge3d.layouts import clip_to_frames, frames_to_clip

README = Path(__file__).resolve().parents[1] / "README.md"


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()


@pytest.mark.slow
def test_readme_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    block = text.split("<!-- python-api-example")[1].split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(README), "exec"), {})
    assert (tmp_path / "net-bundle" / "model.onnx").is_file()


@pytest.mark.slow
def test_export_of_a_module_and_of_a_file_with_the_cli_defaults(saved_model, tmp_path):
    bundle = edge3d.export(_net(), tmp_path / "b", input_shape=(1, 3, 4, 8, 8))
    assert bundle.verification["passed"] and bundle.manifest["model"]["max_rank"] == 4
    assert bundle.verification["samples"] == 4 and bundle.manifest["target"]["name"] == "onnx"
    assert "## Inputs and outputs" in bundle.report and bundle.model.is_file()
    assert [a["runtime"] for a in bundle.artifacts] == ["ort"]

    from_file = edge3d.export(saved_model("c3d", "pt"), tmp_path / "c", input_shape=small_shape("c3d"), seed=3)
    assert from_file.manifest["verification"]["passed"]
    with pytest.raises(InputError, match="already exists"):
        edge3d.export(saved_model("c3d", "pt"), tmp_path / "c", input_shape=small_shape("c3d"))
    with pytest.raises(TypeError, match="unknown option"):
        edge3d.export(_net(), tmp_path / "d", input_shape=(1, 3, 4, 8, 8), verify_sample=2)
    with pytest.raises(InputError, match="input_shape"):
        edge3d.export(_net(), tmp_path / "e")

    timing = edge3d.bench(bundle.path, iters=3, warmup=0, baseline="none")
    assert timing["models"]["lowered"]["latency"]["iters"] == 3


def test_lower_and_lint(tmp_path):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [float_input("x", (1, 3, 4, 8, 8))],
                       [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    onnx.save(model, tmp_path / "r5.onnx")
    assert edge3d.lint(tmp_path / "r5.onnx").exit_code == 1  # a rank-5 tensor: a finding
    lowered = edge3d.lower(tmp_path / "r5.onnx", tmp_path / "r4.onnx")
    assert lowered.path.is_file() and lowered.report["lowered_nodes"] == 1 and lowered.verification["passed"]
    assert edge3d.lint(lowered.path).exit_code == 0
    with pytest.raises(InputError, match="no such file"):
        edge3d.lint(tmp_path / "missing.onnx")


def test_rewrite_defaults_to_random_calibration_and_returns_its_report():
    module, report = edge3d.rewrite(_net(), block="r2plus1d", input_shape=(1, 3, 4, 8, 8), with_report=True)
    assert report["calibration"] == "least-squares" and report["block"] == "r2plus1d"  # not "projection"
    assert isinstance(module, torch.nn.Module)


def test_layout_helpers_take_numpy_and_torch():
    clip = torch.randn(2, 3, 4, 5, 6)
    frames = clip_to_frames(clip)
    assert isinstance(frames, torch.Tensor) and frames.shape == (8, 3, 5, 6)
    assert torch.equal(frames_to_clip(frames, 2), clip)
    assert np.array_equal(clip_to_frames(clip.numpy()), frames.numpy())


def test_api_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, edge3d; edge3d.lint; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

