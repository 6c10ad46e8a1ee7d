"""LiteRT and Ethos-U targets: the bundle's model converted by onnx2tf and verified in the LiteRT
interpreter, and its INT8 model compiled by Vela with the 5D model's compilation beside it.
Needs ``edge3d setup tflite``; skipped cleanly without it."""

from __future__ import annotations

import json

import pytest
from conftest import invoke, shape_arg, small_shape

from edge3d.targets import load_target

pytestmark = pytest.mark.tflite


def _export(saved_model, tmp_path, target, *extra):
    out = tmp_path / f"{target}{'-'.join(extra)}"
    result = invoke("export", saved_model("c3d", "pt"), "--input-shape", shape_arg(small_shape("c3d")),
                    "--target", target, "-o", out, *extra)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "manifest.json").read_text()), result.stdout


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tflite_is_verified_in_litert(saved_model, tmp_path, precision):
    out, manifest, _ = _export(saved_model, tmp_path, "tflite", "--precision", precision)
    (art,) = [a for a in manifest["artifacts"] if a["runtime"] == "tflite"]
    assert art["files"] == [f"model.{precision}.tflite"] and (out / art["files"][0]).stat().st_size > 0
    check = art["verification"]
    assert check["passed"] and check["precision"] == precision
    if precision == "int8":
        assert check["outputs"][0]["cosine"] >= 0.98 and "held out" in check["clips"]
    else:
        assert check["outputs"][0]["rel_l2"] <= (1e-4 if precision == "fp32" else 1e-2)
    assert "CONV_3D" not in art["meta"]["ops"] and art["meta"]["ops"]["CONV_2D"] >= 8


def test_ethos_u_places_the_lowered_model_on_the_npu_and_not_the_5d_one(saved_model, tmp_path):
    """C3D lowered for the Ethos-U55: taps by slices (the profile has no Gather), every operator on
    the NPU by Vela's count; the 5D model has no INT8 form (no INT8 CONV_3D in LiteRT) and its
    FP32 form stays on the CPU, which the report says."""
    out, manifest, stdout = _export(saved_model, tmp_path, "ethos-u55-128")
    import onnx

    assert "Gather" not in {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    (ethos,) = [a for a in manifest["artifacts"] if a["runtime"] == "ethos-u"]
    estimate = ethos["meta"]["vela_estimate"]
    lowered, original = estimate["lowered"], estimate["original_5d"]
    assert lowered["ok"] and lowered["npu_share"] >= 0.9 and lowered["inference_ms"] > 0
    assert lowered["sram_kib"] > 0 and lowered["npu_segments"] >= 1
    assert original["npu_share"] == 0.0 and "CONV_3D" in original["cpu_ops"] and "int8_error" in original
    assert (out / "model.ethos-u55-128.tflite").exists() and (out / "model.int8.tflite").exists()
    assert not (out / "model.int8.onnx").exists()  # the INT8 model here is the LiteRT one
    report = (out / "report.md").read_text()
    assert "Estimated on ethos-u55-128 (Vela, offline)" in report and "original 5D" in report
    assert "Vela:" in stdout and "of operators there" in stdout


def test_ethos_u_profiles_name_their_accelerator():
    for name in ("ethos-u55-128", "ethos-u65-256", "ethos-u85-256"):
        target = load_target(name)
        assert target.ethos_u["accelerator"] == name and target.precisions == ("int8",)
        assert "Gather" not in target.allowed_ops and target.fallback
