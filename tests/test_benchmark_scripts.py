"""Benchmark scripts that are rarely run, run small here so that they still work when they are
needed: the GPU ones on this CPU (a GPU is rarely lent; ``gpu_tvm.py``'s export broke once,
unnoticed, when a pipeline helper changed) and the export-memory one (it broke the same way)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_ort_compares_5d_and_lowered_in_fp32_and_fp16_on_the_cpu_provider(tmp_path):
    out = tmp_path / "rows.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_ort.py"), "--device", "cpu",
                             "--models", "c3d", "--conv-strategy", "auto", "gathered", "--iters", "50",
                             "--warmup", "1", "--profile", "--json", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["conv_strategy"], r["precision"]) for r in rows] == [
        ("auto", "fp32"), ("auto", "fp16"), ("gathered", "fp32"), ("gathered", "fp16")]
    for row in rows:
        assert row["provider"] == "CPUExecutionProvider" and row["iters"] >= 50
        assert row["ratio_ci95"][0] <= row["ratio_lowered_over_5d"] <= row["ratio_ci95"][1]
        tolerance = 1e-5 if row["precision"] == "fp32" else 1e-2
        assert row["rel_l2_lowered_vs_ort_cpu_5d"] <= tolerance
        profile = row["profile"]["lowered"]
        assert profile["nodes"] > row["profile"]["5d"]["nodes"]  # Reshape, Gather, Pad around each Conv2d
        assert any(key.startswith("Conv") for key in profile["us_by_op_and_provider"])
    assert "| c3d" in result.stdout and "gathered" in result.stdout


@pytest.mark.slow
@pytest.mark.tvm
def test_gpu_tvm_compiles_and_times_both_models_on_the_cpu(tmp_path):
    out = tmp_path / "rows.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_tvm.py"), "--device", "cpu",
                             "--models", "c3d", "--iters", "50", "--warmup", "1", "--jobs", "1", "--json", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["rel_l2_lowered_tvm_vs_ort"] <= 1e-5 and row["rel_l2_lowered_ort_vs_5d_ort"] <= 1e-5
    assert row["median_ms_5d"] > 0 and row["median_ms_lowered"] > 0


@pytest.mark.slow
def test_export_memory_measures_a_case_against_its_bound(tmp_path):
    out = tmp_path / "memory"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "export_memory.py"), "--cases", "bigconv",
                             "--big-frames", "1", "--repeat", "1", "--verify-samples", "1", "--out", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert row["case"] == "bigconv" and row["input_shape"] == [1, 512, 1, 56, 56]
    assert row["peak_mb"] > row["footprint_mb"] > 0 and row["bound_mb"] > 0
    assert "| bigconv |" in out.with_suffix(".md").read_text()
