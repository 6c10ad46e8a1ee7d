"""The GPU benchmark scripts, run on this CPU: they must still work when a GPU is lent, which is
rare (``gpu_tvm.py``'s export broke once, unnoticed, when a pipeline helper changed)."""

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
