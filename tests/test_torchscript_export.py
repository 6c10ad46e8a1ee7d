"""TorchScript files that run must export: ops whose ONNX form needs a tensor's rank
(``unflatten``, ``flatten(-2)``, ``movedim``), scripted and traced, through `edge3d export`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import invoke, shape_arg, stderr_lines
from torch import nn

SHAPE = (1, 3, 4, 8, 8)


class Unflatten(nn.Module):
    """Frames folded into channels by a view to computed sizes, unfolded with ``unflatten``."""

    def __init__(self):
        super().__init__()
        self.conv3 = nn.Conv3d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.conv3(x))
        b, c, t, h, w = x.shape
        y = self.conv2(x.view(b, -1, h, w))
        return y.unflatten(1, (c, t)).mean((2, 3, 4))


class FlattenLast(nn.Module):
    """``flatten(-2)`` after an ``unflatten`` to computed sizes: H and W into one axis, pooled."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        b, c, t, h, w = x.shape
        return x.flatten(-2).unflatten(-1, (h, w)).flatten(-2).amax(-1)


class Movedim(nn.Module):
    """Channels last with ``movedim(1, -1)``, a Linear, and back with ``movedim(-1, 1)``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 6)
        self.out = nn.Conv3d(6, 2, 1)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = x.flatten(1, 2).unflatten(1, (x.size(1), x.size(2)))
        return self.out(self.fc(x.movedim(1, -1)).movedim(-1, 1))


class PermuteLinear(nn.Module):
    """``permute`` to channels last, a Linear, ``permute`` back, and ``unflatten`` of the flat map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        x = self.fc(torch.relu(self.conv(x)).permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        y = x.reshape(x.size(0), x.size(1), x.size(2), -1)
        return y.unflatten(-1, (x.size(3), x.size(4))).mean((3, 4))


class ShapeReshape(nn.Module):
    """A reshape computed from ``x.shape``: (B, C, T, H, W) -> (B, C*T, H, W), then ``unflatten``."""

    def __init__(self):
        super().__init__()
        self.conv3 = nn.Conv3d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 1)

    def forward(self, x):
        x = torch.relu(self.conv3(x))
        s = x.shape
        y = self.conv2(x.reshape(s[0], s[1] * s[2], s[3], s[4]))
        return y.unflatten(1, (s[1], s[2])).movedim(-1, 1).mean((1, 4))


class Repeat(nn.Module):
    """``repeat`` of the frames folded into channels, then ``unflatten`` back to a clip."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.out = nn.Conv3d(4, 4, 3, stride=(2, 1, 1), padding=1)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        y = x.reshape(x.size(0), -1, x.size(3), x.size(4)).repeat(1, 2, 1, 1)
        return self.out(y.unflatten(1, (x.size(1), -1))).mean((3, 4))


CORPUS = {cls.__name__: cls for cls in (Unflatten, FlattenLast, Movedim, PermuteLinear, ShapeReshape, Repeat)}


def save_corpus_model(name: str, how: str, path) -> None:
    torch.manual_seed(0)
    model = CORPUS[name]().eval()
    x = torch.randn(*SHAPE)
    module = torch.jit.script(model) if how == "script" else torch.jit.trace(model, (x,))
    torch.jit.save(module, str(path))


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("ts-corpus")

    def get(name: str, how: str):
        path = root / f"{name}-{how}.pt"
        if not path.exists():
            save_corpus_model(name, how, path)
        return path

    return get


@pytest.mark.slow
@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_torchscript_that_runs_exports(name, how, corpus_file, tmp_path):
    out = tmp_path / "out"
    result = invoke("export", corpus_file(name, how), "--input-shape", shape_arg(SHAPE), "-o", out)
    assert result.exit_code == 0, result.output
    assert "Torch IR" not in result.output and "Traceback" not in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["max_rank"] == 4
    assert manifest["model"]["tensors_above_rank4"] == 0
    assert manifest["verification"]["passed"] is True
    assert manifest["inputs"][0]["original_shape"] == list(SHAPE)
    # typed from one run, the TorchScript exporter itself takes them (no fall back to the converter)
    assert not any("dynamo exporter" in note for note in manifest["notes"]), manifest["notes"]


def test_negative_transpose_perm_is_normalised():
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edge3d.frontend.to_onnx import fix_negative_perms

    node = helper.make_node("Transpose", ["x"], ["y"], perm=[0, -1, 1, 2, 3])  # movedim(-1, 1), as torch writes it
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 2, 3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    fix_negative_perms(model)
    assert list(model.graph.node[0].attribute[0].ints) == [0, 4, 1, 2, 3]
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4, 5)).astype(np.float32)
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(y, np.moveaxis(x, -1, 1))


def test_movedim_export_is_a_valid_permutation(tmp_path):
    """Torch 2.13's TorchScript exporter writes ``movedim(1, -1).movedim(-1, 1)`` of an untyped
    graph as Transpose perm [0, 49, 2, 3, 4]; the export is checked by running it, and the
    converter route takes over."""
    import onnxruntime as ort

    from edge3d.frontend.load import LoadedModel
    from edge3d.frontend.to_onnx import export_to_onnx

    class MoveBack(nn.Module):
        def forward(self, x):
            return x.movedim(1, -1).movedim(-1, 1) + 1

    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(MoveBack()), str(path))
    loaded = LoadedModel(path=path, kind="torchscript", module=torch.jit.load(str(path)), input_shapes=[SHAPE])
    export = export_to_onnx(loaded)
    perms = [list(a.ints) for n in export.model.graph.node if n.op_type == "Transpose" for a in n.attribute]
    assert all(sorted(perm) == list(range(len(perm))) for perm in perms)
    x = torch.randn(*SHAPE)
    session = ort.InferenceSession(export.model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert np.allclose(got, (x + 1).numpy())


def _failing_exporters(monkeypatch):
    from edge3d.frontend import to_onnx

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported: ONNX export of operator unflatten, input rank must be known.\n"
                           "graph(%x : Float(1, 3, 4, 8, 8)):\n  %2 : int[] = prim::Constant()")

    monkeypatch.setattr(to_onnx, "_export_torchscript", broken)
    monkeypatch.setattr(to_onnx, "_export_converted", broken)
    monkeypatch.setattr(to_onnx, "_export_converted_in_child", broken)


def test_exporter_failure_does_not_blame_the_input_shape(tiny_model, monkeypatch, tmp_path):
    _failing_exporters(monkeypatch)
    path, shape = tiny_model("conv3d", "pt")
    result = invoke("export", path, "--input-shape", shape_arg(shape), "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = stderr_lines(result)
    assert "--input-shape" not in line
    assert "aten::unflatten" in line and "torch.export.save" in line
    assert not (tmp_path / "out").exists()


def test_a_model_that_does_not_run_still_blames_the_input_shape(tiny_model, monkeypatch, tmp_path):
    _failing_exporters(monkeypatch)
    path, _ = tiny_model("conv3d", "pt")
    result = invoke("export", path, "--input-shape", "1,5,4,8,8", "-o", tmp_path / "out")  # 5 channels, not 3
    assert result.exit_code == 2, result.output
    (line,) = stderr_lines(result)
    assert "check --input-shape" in line


def test_exporter_output_is_silenced(corpus_file, monkeypatch, tmp_path, capfd):
    """Without the types from one run, the TorchScript exporter fails on this model and dumps its
    IR from C++; with the fallback failing too, one line is all that reaches the terminal."""
    import contextlib

    from edge3d.frontend import script_types, to_onnx

    def broken(*args, **kwargs):
        raise RuntimeError("no")

    monkeypatch.setattr(to_onnx, "_export_converted_in_child", broken)
    monkeypatch.setattr(script_types, "typed_from_one_run", contextlib.nullcontext)
    result = invoke("export", corpus_file("ShapeReshape", "script"), "--input-shape", shape_arg(SHAPE),
                    "-o", tmp_path / "out")
    captured = capfd.readouterr()
    assert result.exit_code == 2, result.output
    (line,) = stderr_lines(result)
    assert "--input-shape" not in line and "torch.export.save" in line
    assert "Torch IR" not in captured.out + captured.err + result.output
