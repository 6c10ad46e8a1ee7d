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


@pytest.mark.slow
def test_accuracy_benchmark_fills_every_column_and_resumes_from_its_cache(tmp_path, monkeypatch):
    """The whole pipeline of ``accuracy.py`` on a tiny configuration: train, rewrite at every stage,
    train a block from scratch, time, write; a second run takes every row from the cache."""
    import dataclasses

    sys.path.insert(0, str(REPO))
    from benchmarks import accuracy

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = dataclasses.replace(accuracy.Config(), classes=3, frames=4, size=16, train_clips=24,
                                 calibration_clips=4, heldout_clips=12, width=4, epochs=1)
    results = accuracy.evaluate_blocks(config, ["st-add"], 2, ["st-add"])
    accuracy.add_latency(results, 1, tmp_path / "work")
    accuracy.write_results(results, tmp_path / "out" / "accuracy")
    rows = results["rows"]
    assert [(r["block"], r["stage"]) for r in rows] == [
        ("original", "trained"), ("st-add", "projection"), ("st-add", "calibration"), ("st-add", "distillation"),
        ("st-add", "from scratch")]
    assert rows[0]["agreement"] == 1.0 and rows[0]["latency_ratio"] == 1.0
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["agreement"] <= 1.0
        assert row["latency_ms"] > 0 and row["params"] > 0 and row["macs"] > 0
    assert rows[1]["params"] < rows[0]["params"]  # the block is the smaller structure
    assert rows[3]["distillation"]["steps"] == 2
    table = (tmp_path / "out" / "accuracy.md").read_text()
    assert table.count("| st-add |") == 4 and (tmp_path / "out" / "accuracy.png").stat().st_size > 0
    cached = sorted((tmp_path / "cache" / "edge3d" / "accuracy").glob("row-*.json"))
    assert len(cached) == 4
    monkeypatch.setattr(accuracy, "rewritten", None)  # nothing may be recomputed
    monkeypatch.setattr(accuracy, "train", None)
    again = accuracy.evaluate_blocks(config, ["st-add"], 2, ["st-add"])
    assert [r["accuracy"] for r in again["rows"]] == [r["accuracy"] for r in rows]
