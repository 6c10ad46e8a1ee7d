"""Verification measures the lowering: the lowered model against the plain 5D ONNX model (tight)
and against PyTorch relative to what the plain 5D export achieves there."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from conftest import invoke, shape_arg, small_shape, stderr_lines

from edge3d.verify import LOWERING_TOLERANCE, verify

SHAPES = [(2, 3, 4, 8, 8)]


def _model(batch):
    """A stand-in network with two outputs: features and (batch, classes) logits."""
    x = batch[0].astype(np.float64)
    return [np.tanh(x).astype(np.float32), (x.reshape(x.shape[0], -1)[:, :10] * 3).astype(np.float32)]


def _perturbed(runner, relative, seed=11):
    """``runner`` with noise of the given size relative to each output's norm (``relative`` may
    be a list, one size per output); the same input gets the same noise."""
    sizes = relative if isinstance(relative, list) else None

    def run(batch):
        rng = np.random.default_rng([seed, zlib.crc32(np.ascontiguousarray(batch[0]).tobytes())])
        outs = []
        for i, y in enumerate(runner(batch)):
            size = sizes[i] if sizes else relative
            y = np.asarray(y, np.float64)
            noise = rng.standard_normal(y.shape)
            noise *= size * np.linalg.norm(y) / np.linalg.norm(noise)
            outs.append((y + noise).astype(np.float32))
        return outs

    return run


# --- verify(): the three comparisons on the same inputs ---------------------------------------------

def test_plain_export_error_above_1e4_passes_when_the_lowering_adds_none():
    """The deep-model case: the plain 5D export already differs from PyTorch by 3e-4."""
    plain = _perturbed(_model, 3e-4)
    exact_lowering = plain  # the lowered model computes what the 5D model does
    assert not verify(_model, exact_lowering, SHAPES).passed  # the old, single check refuses it
    result = verify(_model, exact_lowering, SHAPES, names=["features", "logits"], plain=plain)
    assert result.passed, result.failures
    for own, against, exported in zip(result.lowering.outputs, result.outputs, result.plain_export.outputs):
        assert own.rel_l2 == 0.0 and own.tolerance == 1e-5
        assert exported.rel_l2 == pytest.approx(3e-4, rel=1e-2)
        assert against.rel_l2 == pytest.approx(exported.rel_l2)
        assert against.tolerance == pytest.approx(2 * exported.rel_l2)
    assert result.tolerance.rel_l2 == max(o.tolerance for o in result.outputs)
    doc = result.to_dict()
    assert {"outputs", "tolerance", "passed", "failures", "samples", "seed", "precision"} <= set(doc)
    assert doc["lowering"]["tolerance"]["rel_l2"] == 1e-5 and len(doc["lowering"]["outputs"]) == 2
    assert [o["name"] for o in doc["plain_export"]["outputs"]] == ["features", "logits"]
    line = result.headline()
    assert "lowering error 0.00e+00" in line and "tolerance 1e-05" in line and "vs PyTorch" in line


def test_a_lowering_that_adds_error_fails_on_its_own_error():
    plain = _perturbed(_model, 3e-4)
    result = verify(_model, _perturbed(plain, 1e-4, seed=5), SHAPES, names=["features", "logits"], plain=plain)
    assert not result.passed
    own = [f for f in result.failures if "lowering" in f]
    assert len(own) == 2 and own[0].startswith("features:")
    assert "the lowering's relative L2 error 1.00e-04 exceeds 1e-05" in own[0]
    assert "5D ONNX model" in own[0]
    assert all(o.rel_l2 == pytest.approx(1e-4, rel=1e-2) for o in result.lowering.outputs)


def test_error_against_pytorch_beyond_the_plain_exports_fails():
    """Errors that cancel against the 5D model cannot occur, so check (b) on its own: a lowered
    model far from PyTorch while the plain export is close."""
    plain = _perturbed(_model, 1e-7)
    result = verify(_model, _perturbed(_model, 5e-4, seed=3), SHAPES, plain=plain)
    assert not result.passed
    against = [f for f in result.failures if f.startswith("output_0: relative L2 error")]
    assert against and "exceeds 1e-04" in against[0] and "plain 5D export" in against[0]


def test_tolerances_are_per_output():
    plain = _perturbed(_model, [1e-6, 4e-4])
    result = verify(_model, plain, SHAPES, names=["features", "logits"], plain=plain)
    assert result.passed, result.failures
    features, logits = result.outputs
    assert features.tolerance == 1e-4
    assert logits.tolerance == pytest.approx(8e-4, rel=1e-2)
    assert result.tolerance.rel_l2 == logits.tolerance
    assert "logits" in result.headline()  # the output nearest its bound, named among several

    # the same 4e-4 on features, whose plain export is close to PyTorch, is the lowering's doing
    lowered = _perturbed(_model, [4e-4, 4e-4])
    failed = verify(_model, lowered, SHAPES, names=["features", "logits"], plain=plain)
    assert any(f.startswith("features: relative L2 error") for f in failed.failures)
    assert not any(f.startswith("logits: relative L2 error") for f in failed.failures)


def test_each_runner_runs_once_per_sample_and_one_sample_at_a_time():
    calls = {"reference": 0, "candidate": 0, "plain": 0}

    def counted(name, runner):
        def run(batch):
            calls[name] += 1
            assert calls[name] == max(calls.values())  # all three see a sample before the next
            return runner(batch)
        return run

    result = verify(counted("reference", _model), counted("candidate", _model), SHAPES, samples=5,
                    plain=counted("plain", _model))
    assert result.passed and calls == {"reference": 5, "candidate": 5, "plain": 5}


def test_onnx_source_the_reference_is_the_5d_model():
    """Without PyTorch the reference is the 5D ONNX model itself: (b) is (a), at 1e-5."""
    ok = verify(_model, _perturbed(_model, 1e-6), SHAPES, lowering=True)
    assert ok.passed and ok.tolerance == LOWERING_TOLERANCE and ok.plain_export is None
    assert ok.lowering.outputs == ok.outputs and ok.to_dict()["plain_export"] is None
    assert "vs PyTorch" not in ok.headline() and "lowering error" in ok.headline()
    failed = verify(_model, _perturbed(_model, 5e-5), SHAPES, lowering=True)
    assert not failed.passed and "lowering's relative L2 error" in failed.failures[0]
    assert "exceeds 1e-05" in failed.failures[0]


def test_non_finite_plain_export_fails():
    def nan(batch):
        features, logits = _model(batch)
        logits = logits.copy()
        logits[0, 0] = np.nan
        return [features, logits]

    result = verify(_model, _model, SHAPES, plain=nan)
    assert not result.passed and any("non-finite" in f for f in result.failures)


# --- through the CLI -------------------------------------------------------------------------------

def _export(model_path, shape, out, *extra):
    return invoke("export", model_path, "-o", out, "--input-shape", shape_arg(shape), "--verify-samples", "2",
                  *extra)


@pytest.mark.slow
def test_export_passes_when_the_plain_export_is_off_by_3e4(tiny_model, tmp_path, monkeypatch):
    """PyTorch's outputs nudged by 3e-4: the plain export and the lowered model both differ from
    it by that much, which is not the lowering's doing."""
    import edge3d.pipeline as pipeline

    real = pipeline.torch_runner
    monkeypatch.setattr(pipeline, "torch_runner", lambda module: _perturbed(real(module), 3e-4))
    path, shape = tiny_model("net")
    out = tmp_path / "out"
    result = _export(path, shape, out)
    assert result.exit_code == 0, result.output
    v = json.loads((out / "manifest.json").read_text())["verification"]
    assert v["passed"] and v["failures"] == []
    (own,), (against,), (exported,) = v["lowering"]["outputs"], v["outputs"], v["plain_export"]["outputs"]
    assert own["rel_l2"] <= 1e-5 and v["lowering"]["tolerance"]["rel_l2"] == 1e-5
    assert exported["rel_l2"] == pytest.approx(3e-4, rel=0.05)
    assert 1e-4 < against["rel_l2"] <= against["tolerance"] == pytest.approx(2 * exported["rel_l2"])
    assert v["tolerance"]["rel_l2"] == against["tolerance"]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("verified on 2 seeded inputs"))
    assert "lowering error" in line and "tolerance 1e-05" in line
    assert f"vs PyTorch {against['rel_l2']:.2e}, the plain export {exported['rel_l2']:.2e}" in line


@pytest.mark.slow
def test_export_fails_when_the_lowering_adds_error(tiny_model, tmp_path, monkeypatch):
    import edge3d.pipeline as pipeline

    real = pipeline.adapt_runner  # wraps the lowered model's session only
    monkeypatch.setattr(pipeline, "adapt_runner", lambda *a: _perturbed(real(*a), 1e-4))
    path, shape = tiny_model("net")
    out = tmp_path / "out"
    result = _export(path, shape, out, "-q")
    assert result.exit_code == 1
    (line,) = stderr_lines(result)
    assert line.startswith("edge3d: error: verification failed")
    assert "the lowering's relative L2 error 1.00e-04 exceeds 1e-05" in line
    assert not out.exists()


@pytest.mark.slow
def test_example_export_records_both_figures(exported):
    export = exported("c3d", "pt")
    assert export.result.exit_code == 0, export.result.output
    v = export.manifest["verification"]
    assert v["reference"] == "pytorch" and v["passed"]
    assert v["lowering"]["tolerance"]["rel_l2"] == 1e-5
    names = [o["name"] for o in v["outputs"]]
    assert [o["name"] for o in v["lowering"]["outputs"]] == names
    assert [o["name"] for o in v["plain_export"]["outputs"]] == names
    for own, against, plain in zip(v["lowering"]["outputs"], v["outputs"], v["plain_export"]["outputs"]):
        assert 0 <= own["rel_l2"] <= 1e-5
        assert 0 <= plain["rel_l2"] <= 1e-4
        assert against["rel_l2"] <= against["tolerance"] == max(1e-4, 2 * plain["rel_l2"])
    report = (export.out / "report.md").read_text()
    assert "## Verification" in report and "lowering error (vs 5D ONNX)" in report
    section = report[report.index("## Verification"):report.index("## Artifacts")]
    row = next(ln for ln in section.splitlines() if ln.startswith(f"| `{names[0]}` |"))
    assert f"{v['lowering']['outputs'][0]['rel_l2']:.2e}" in row
    assert f"{v['plain_export']['outputs'][0]['rel_l2']:.2e}" in row
    assert "lowering error" in export.result.stdout and "the plain export" in export.result.stdout


@pytest.mark.slow
def test_onnx_source_records_the_lowering(onnx_5d, tmp_path):
    out = tmp_path / "out"
    result = invoke("export", onnx_5d("c3d"), "-o", out, "--verify-samples", "2")
    assert result.exit_code == 0, result.output
    v = json.loads((out / "manifest.json").read_text())["verification"]
    assert v["reference"].startswith("onnxruntime") and v["plain_export"] is None
    assert v["lowering"]["outputs"] == v["outputs"] and v["tolerance"]["rel_l2"] == 1e-5
    assert "vs PyTorch" not in result.stdout and "lowering error" in result.stdout
    assert small_shape("c3d")  # the example's clip, as onnx_5d exported it
