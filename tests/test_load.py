"""Model loading: every format a user brings, and nothing in a pickle runs without --trust-pickle."""

from __future__ import annotations

import json
import pathlib
import pickle

import numpy as np
import pytest
import torch
from conftest import invoke, reference_model, rel_l2, shape_arg, small_shape, stderr_lines

from edge3d.errors import InputError
from edge3d.frontend.load import load_model, parse_shape

C3D_ARCH = "examples.models.c3d:c3d"
C3D_KWARGS = '{"width": 0.0625, "num_classes": 10}'


def _run(module, shape, seed=1):
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
    with torch.no_grad():
        return module(x).numpy()


@pytest.fixture(scope="module")
def c3d_state_dict(tmp_path_factory):
    model = reference_model("c3d")
    root = tmp_path_factory.mktemp("state")
    plain = root / "c3d_weights.pt"
    torch.save(model.state_dict(), plain)
    wrapped = root / "c3d_checkpoint.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 7}, wrapped)
    pickled = root / "c3d_pickled.pt"
    torch.save(model, pickled)
    return {"plain": plain, "wrapped": wrapped, "pickled": pickled}


# --- load_model, format by format --------------------------------------------------------------

def test_torchscript(saved_model):
    loaded = load_model(saved_model("c3d", "pt"))
    assert loaded.kind == "torchscript"
    assert loaded.input_shapes == []  # a TorchScript archive records no input shape
    shape = small_shape("c3d")
    assert rel_l2(_run(reference_model("c3d"), shape), _run(loaded.torch_callable, shape)) < 1e-6


def test_torchscript_with_input_shape(saved_model):
    loaded = load_model(saved_model("c3d", "pt"), input_shapes=[(1, 3, 16, 32, 32)])
    assert loaded.input_shapes == [(1, 3, 16, 32, 32)]


def test_exported_program_shape_from_example_inputs(saved_model):
    loaded = load_model(saved_model("c3d", "pt2"))  # the c3d the other tests load, saved once
    assert loaded.kind == "exported-program"
    assert loaded.input_shapes == [small_shape("c3d")]
    shape = small_shape("c3d")
    assert rel_l2(_run(reference_model("c3d"), shape), _run(loaded.torch_callable, shape)) < 1e-6


def test_onnx(onnx_5d):
    loaded = load_model(onnx_5d("c3d"))
    assert loaded.kind == "onnx"
    assert loaded.module is None and loaded.onnx_model is not None
    assert loaded.input_shapes == [small_shape("c3d")]


@pytest.mark.parametrize("arch_kwargs", [C3D_KWARGS, {"width": 0.0625, "num_classes": 10}])
def test_state_dict_with_arch(c3d_state_dict, arch_kwargs):
    loaded = load_model(c3d_state_dict["plain"], arch=C3D_ARCH, arch_kwargs=arch_kwargs)
    assert loaded.kind == "state-dict"
    shape = small_shape("c3d")
    assert rel_l2(_run(reference_model("c3d"), shape), _run(loaded.module, shape)) < 1e-6


def test_state_dict_checkpoint_wrapper_and_module_prefix(c3d_state_dict):
    loaded = load_model(c3d_state_dict["wrapped"], arch=C3D_ARCH, arch_kwargs=C3D_KWARGS)
    assert loaded.kind == "state-dict"
    shape = small_shape("c3d")
    assert rel_l2(_run(reference_model("c3d"), shape), _run(loaded.module, shape)) < 1e-6


def test_state_dict_without_arch(c3d_state_dict):
    with pytest.raises(InputError, match="--arch"):
        load_model(c3d_state_dict["plain"])


def test_pickled_module_needs_trust(c3d_state_dict):
    with pytest.raises(InputError, match="--trust-pickle"):
        load_model(c3d_state_dict["pickled"])
    loaded = load_model(c3d_state_dict["pickled"], trust_pickle=True)
    assert loaded.kind == "pickled-module"
    shape = small_shape("c3d")
    assert rel_l2(_run(reference_model("c3d"), shape), _run(loaded.module, shape)) < 1e-6


def test_arch_rejected_for_non_state_dict(saved_model):
    with pytest.raises(InputError, match="--arch only applies"):
        load_model(saved_model("c3d", "pt2"), arch=C3D_ARCH)


@pytest.mark.parametrize("text, shape", [("1,3,16,112,112", (1, 3, 16, 112, 112)),
                                         ("1x3x8x32x32", (1, 3, 8, 32, 32)),
                                         (" 2, 3, 4, 5, 6 ", (2, 3, 4, 5, 6))])
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["", "abc", "1,3,16,32,y", "1,0,4,4,4", "1,-3,4,4,4", "1.5,3"])
def test_parse_shape_rejects(text):
    with pytest.raises(InputError, match="--input-shape"):
        parse_shape(text)


# --- the same formats through `edge3d export` ----------------------------------------------------

def _assert_exported(result, out, kind):
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "report.md"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["kind"] == kind
    assert manifest["verification"]["passed"] is True
    assert all(o["rel_l2"] <= 1e-4 for o in manifest["verification"]["outputs"])
    return manifest


@pytest.mark.slow
def test_cli_torchscript(saved_model, tmp_path):
    out = tmp_path / "out"
    result = invoke("export", saved_model("c3d", "pt"), "-o", out, "--input-shape", shape_arg(small_shape("c3d")))
    manifest = _assert_exported(result, out, "torchscript")
    assert manifest["model"]["exporter"] == "torchscript"
    assert manifest["inputs"][0]["original_shape"] == list(small_shape("c3d"))


@pytest.mark.slow
def test_cli_exported_program_needs_no_input_shape(saved_model, tmp_path):
    out = tmp_path / "out"
    result = invoke("export", saved_model("c3d", "pt2"), "-o", out)
    manifest = _assert_exported(result, out, "exported-program")
    assert manifest["model"]["exporter"] == "dynamo"
    assert manifest["inputs"][0]["original_shape"] == list(small_shape("c3d"))


@pytest.mark.slow
def test_cli_onnx_skips_torch(onnx_5d, tmp_path):
    out = tmp_path / "out"
    result = invoke("export", onnx_5d("c3d"), "-o", out)
    manifest = _assert_exported(result, out, "onnx")
    assert manifest["model"]["exporter"] == "none"
    assert manifest["verification"]["reference"].startswith("onnxruntime")


@pytest.mark.slow
@pytest.mark.parametrize("which", ["plain", "wrapped"])
def test_cli_state_dict_with_arch(c3d_state_dict, tmp_path, which):
    out = tmp_path / "out"
    result = invoke("export", c3d_state_dict[which], "-o", out, "--arch", C3D_ARCH, "--arch-kwargs", C3D_KWARGS,
                    "--input-shape", shape_arg(small_shape("c3d")))
    _assert_exported(result, out, "state-dict")


@pytest.mark.slow
def test_cli_pickled_module_only_with_trust_pickle(c3d_state_dict, tmp_path):
    out = tmp_path / "out"
    shape = shape_arg(small_shape("c3d"))
    refused = invoke("export", c3d_state_dict["pickled"], "-o", out, "--input-shape", shape)
    assert refused.exit_code == 2
    assert "--trust-pickle" in refused.stderr
    assert not out.exists()
    result = invoke("export", c3d_state_dict["pickled"], "-o", out, "--input-shape", shape, "--trust-pickle")
    _assert_exported(result, out, "pickled-module")


# --- security: nothing in a pickle runs without --trust-pickle -----------------------------------

class _Payload:
    """Unpickling this creates the marker file: a stand-in for arbitrary code."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _write_payload(path: pathlib.Path, marker: pathlib.Path, how: str) -> None:
    if how == "torch.save":
        torch.save(_Payload(marker), path)
    elif how == "torch.save-in-dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _Payload(marker)}, path)
    elif how == "torch.save-legacy":
        torch.save(_Payload(marker), path, _use_new_zipfile_serialization=False)
    elif how == "pickle-protocol-2":
        path.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    elif how == "pickle-protocol-5":
        path.write_bytes(pickle.dumps(_Payload(marker), protocol=5))
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["torch.save", "torch.save-in-dict", "torch.save-legacy",
                                 "pickle-protocol-2", "pickle-protocol-5"])
def test_malicious_pickle_does_not_run(tmp_path, how):
    marker = tmp_path / "pwned"
    model = tmp_path / "model.pt"
    _write_payload(model, marker, how)
    out = tmp_path / "out"

    result = invoke("export", model, "-o", out, "--input-shape", "1,3,4,8,8")

    assert result.exit_code == 2
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edge3d: error:")
    assert "--trust-pickle" in lines[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not marker.exists(), "the pickle ran code without --trust-pickle"
    assert not out.exists()


def test_malicious_pickle_payload_is_real(tmp_path):
    """The control: with --trust-pickle the same file does run its payload (so the test above
    would notice a loader that unpickles it)."""
    marker = tmp_path / "pwned"
    model = tmp_path / "model.pt"
    _write_payload(model, marker, "torch.save")
    result = invoke("export", model, "-o", tmp_path / "out", "--input-shape", "1,3,4,8,8", "--trust-pickle")
    assert marker.exists()
    assert result.exit_code == 2  # what it unpickled to is no model
    assert not (tmp_path / "out").exists()


def test_malicious_pickle_load_model(tmp_path):
    marker = tmp_path / "pwned"
    model = tmp_path / "model.pt"
    _write_payload(model, marker, "torch.save")
    with pytest.raises(InputError, match="--trust-pickle"):
        load_model(model)
    assert not marker.exists()
