"""`edge3d export` on every example model, from TorchScript and from an ExportedProgram."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import (
    EXAMPLE_NAMES,
    independent_high_rank,
    invoke,
    reference_model,
    rel_l2,
    shape_arg,
    small_shape,
    stderr_lines,
)

FORMATS = ["pt", "pt2"]


def _torch_outputs(module, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    return [o.numpy() for o in outs]


def _to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """The boundary layouts a bundle's manifest may name, written out here independently."""
    if layout == "plain":
        return x
    assert layout == "frames", layout  # (B, C, T, H, W) as frames (B*T, C, H, W), batch-major
    b, c, t, h, w = x.shape
    return np.ascontiguousarray(np.transpose(x, (0, 2, 1, 3, 4))).reshape(b * t, c, h, w)


def _from_layout(y: np.ndarray, layout: str, original_shape) -> np.ndarray:
    if layout == "plain":
        return y
    assert layout == "frames", layout
    b, c, t, h, w = original_shape
    return np.transpose(y.reshape(b, t, c, h, w), (0, 2, 1, 3, 4))


def _run_bundle(out, x: np.ndarray) -> list[np.ndarray]:
    """Run a bundle's model.onnx in ONNX Runtime on a rank-5 clip, as its manifest says to."""
    manifest = json.loads((out / "manifest.json").read_text())
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = manifest["inputs"]
    assert [i.name for i in session.get_inputs()] == [inp["name"]]
    assert list(x.shape) == inp["original_shape"]
    feed = _to_layout(x, inp["layout"])
    assert list(feed.shape) == inp["shape"]
    got = session.run(None, {inp["name"]: feed})
    assert len(got) == len(manifest["outputs"])
    return [_from_layout(y, o["layout"], o["original_shape"]) for y, o in zip(got, manifest["outputs"])]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_export_example(name, fmt, exported):
    export = exported(name, fmt)
    result = export.result
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output

    # The bundle holds exactly the two files, and nothing is left beside it.
    assert sorted(p.name for p in export.out.iterdir()) == ["manifest.json", "model.onnx", "report.md"]
    assert [p.name for p in export.out.parent.iterdir()] == [export.out.name]

    manifest = export.manifest
    assert manifest["source"]["kind"] == {"pt": "torchscript", "pt2": "exported-program"}[fmt]
    assert manifest["model"]["file"] == "model.onnx"
    assert manifest["model"]["sha256"] == hashlib.sha256(export.onnx_path.read_bytes()).hexdigest()
    verification = manifest["verification"]
    assert verification["passed"] is True and verification["failures"] == []
    assert verification["samples"] == 4
    assert verification["outputs"], "no output was compared"
    for output in verification["outputs"]:
        assert 0 <= output["rel_l2"] <= 1e-4, output
    assert [i["original_shape"] for i in manifest["inputs"]] == [list(small_shape(name))]

    model = onnx.load(str(export.onnx_path))
    onnx.checker.check_model(model)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == manifest["model"]["opset"]
    if fmt == "pt":
        assert opset == 17 and manifest["notes"] == []
    else:  # the dynamo exporter emits opset 18 at least; the default --opset is then noted
        assert opset == 18 and any("opset 18" in note for note in manifest["notes"])

    # The bundle is the rank-4 model, and its manifest says so truthfully.
    assert manifest["model"]["max_rank"] <= 4
    assert manifest["model"]["tensors_above_rank4"] == 0
    assert independent_high_rank(model) == {}

    assert f"wrote {export.out}/model.onnx" in result.stdout
    assert "verified on 4 seeded inputs" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_exported_onnx_matches_pytorch(name, fmt, exported):
    """Independently of edge3d's own verification: the written file against the PyTorch model."""
    export = exported(name, fmt)
    assert export.result.exit_code == 0, export.result.output
    x = np.random.default_rng(20240611).standard_normal(small_shape(name)).astype(np.float32)
    expected = _torch_outputs(reference_model(name), x)
    got = _run_bundle(export.out, x)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert np.isfinite(g).all()
        assert g.shape == e.shape
        assert rel_l2(e, g) <= 1e-4


# --- options and failure handling on one small model -------------------------------------------

def _c3d_args(saved_model, out, fmt="pt"):
    args = ["export", saved_model("c3d", fmt), "-o", out]
    if fmt == "pt":
        args += ["--input-shape", shape_arg(small_shape("c3d"))]
    return args


@pytest.mark.slow
def test_force_replaces_an_earlier_bundle_whole(saved_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "edge3d-bundle"}')  # a bundle, with a file it no longer has
    (out / "stale.txt").write_text("old")
    result = invoke(*_c3d_args(saved_model, out), "--force")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "report.md"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no .partial, no .old


@pytest.mark.slow
def test_force_replaces_a_bundle(saved_model, tmp_path):
    out = tmp_path / "out"
    first = invoke(*_c3d_args(saved_model, out), "--seed", "1")
    assert first.exit_code == 0, first.output
    second = invoke(*_c3d_args(saved_model, out), "--seed", "2", "--force")
    assert second.exit_code == 0, second.output
    assert json.loads((out / "manifest.json").read_text())["verification"]["seed"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.slow
def test_empty_existing_folder_is_fine(saved_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = invoke(*_c3d_args(saved_model, out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "report.md"]


def test_failed_export_leaves_no_folder(saved_model, tmp_path):
    out = tmp_path / "nested" / "out"
    result = invoke("export", saved_model("c3d", "pt"), "-o", out)  # no --input-shape
    assert result.exit_code == 2
    assert not out.exists()
    assert not (tmp_path / "nested").exists()


@pytest.mark.slow
def test_failure_while_writing_leaves_nothing(saved_model, tmp_path, monkeypatch):
    """A crash in the middle of writing the bundle: no output folder, no scratch folder."""
    import edge3d.pipeline as pipeline

    def broken_write_json(path, data):
        path.write_text("{")  # half written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "write_json", broken_write_json)
    out = tmp_path / "out"
    result = invoke(*_c3d_args(saved_model, out))
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_failed_verification_writes_nothing(saved_model, tmp_path, monkeypatch):
    import edge3d.pipeline as pipeline
    from edge3d.verify import verify as real_verify

    def bad_candidate(reference, candidate, *args, **kwargs):
        return real_verify(reference, lambda batch: [o * 1.5 for o in candidate(batch)], *args, **kwargs)

    monkeypatch.setattr(pipeline, "verify", bad_candidate)
    out = tmp_path / "out"
    result = invoke(*_c3d_args(saved_model, out), "-q")
    assert result.exit_code == 1
    lines = stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith("edge3d: error: verification failed")
    assert "relative L2" in lines[0]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # the ExportedProgram is exported to ONNX before the opset is refused
def test_opset_17_on_exported_program_is_an_error(saved_model, tmp_path):
    out = tmp_path / "out"
    result = invoke(*_c3d_args(saved_model, out, "pt2"), "--opset", "17")
    assert result.exit_code == 2
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edge3d: error: ")
    assert "opset 18" in lines[0] and "--opset 18" in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.slow
def test_opset_18_on_exported_program(saved_model, tmp_path):
    out = tmp_path / "out"
    result = invoke(*_c3d_args(saved_model, out, "pt2"), "--opset", "18")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["opset"] == 18
    assert manifest["notes"] == []


@pytest.mark.slow
@pytest.mark.parametrize("opset", [13, 18])
def test_opset_on_torchscript(saved_model, tmp_path, opset):
    out = tmp_path / "out"
    result = invoke(*_c3d_args(saved_model, out), "--opset", str(opset))
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out / "model.onnx"))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == opset
    assert json.loads((out / "manifest.json").read_text())["model"]["opset"] == opset


def test_opset_out_of_range(saved_model, tmp_path):
    result = invoke(*_c3d_args(saved_model, tmp_path / "out"), "--opset", "9")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_no_simplify(saved_model, tmp_path, fmt):
    out = tmp_path / "out"
    result = invoke(*_c3d_args(saved_model, out, fmt), "--no-simplify", "--verify-samples", "2")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["simplified"] is False
    assert manifest["verification"]["passed"] is True
    assert manifest["verification"]["samples"] == 2
    assert all(o["rel_l2"] <= 1e-4 for o in manifest["verification"]["outputs"])
    x = np.random.default_rng(3).standard_normal(small_shape("c3d")).astype(np.float32)
    assert rel_l2(_torch_outputs(reference_model("c3d"), x)[0], _run_bundle(out, x)[0]) <= 1e-4


@pytest.mark.slow
def test_quiet_prints_nothing(saved_model, tmp_path):
    out = tmp_path / "out"
    result = invoke(*_c3d_args(saved_model, out), "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr == ""
    assert (out / "model.onnx").is_file()


@pytest.mark.slow
def test_progress_outside_a_terminal_is_one_line_per_step_start_and_end(saved_model, tmp_path):
    """A CI log (stdout not a terminal) shows each step as it starts and its time when it ends,
    on stdout, before the result lines; stderr stays empty."""
    result = invoke(*_c3d_args(saved_model, tmp_path / "out"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    steps = ["Loading model", "Exporting to ONNX", "Lowering to rank 4", "Verifying against the original"]
    for step in steps:
        start, end = lines.index(f"{step}..."), next(i for i, line in enumerate(lines)
                                                      if line.startswith(f"{step}: done in "))
        assert start < end
        assert float(lines[end].split("done in ")[1].removesuffix(" s")) >= 0
    assert lines[-2].startswith("wrote ") and result.stderr == ""
