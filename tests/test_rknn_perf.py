"""Reading rknn-toolkit2's offline cost estimate and comparing the lowered model with the
toolkit's own Conv3d conversion. The lines are the toolkit's (2.5.0, rk3588, FP16) for one
Conv3d 64→64 (1, 3, 3) at 16×28×28 named ``conv3d``, as the worker keeps them (prefix stripped),
and for the same layer lowered to a Conv2d on frames."""

from __future__ import annotations

import pytest

from edge3d.runtimes.rknn_perf import attribute, compare, parse

# the toolkit's own column layout, kept as it prints it
# ruff: noqa: E501

TOOLKIT = """\
                                                        Network Layer Information Table
ID   OpType             DataType Target InputShape                               OutputShape            Cycles(DDR/NPU/Total)    RW(KB)       FullName
0    InputOperator      FLOAT16  CPU    \\                                        (1,64,16,28,28)        0/0/0                    0            InputOperator:x
1    Reshape            FLOAT16  NPU    (1,64,16,28,28),(4)                      (1,1024,28,28)         0/0/0                    1568         Reshape:x_rs
3    Conv               FLOAT16  NPU    (1,160,28,28),(1024,160,3,3)             (1,1024,28,28)         203164/2257920/2257920   3125         Conv:conv3d_2d_tile1
4    ConvAdd            FLOAT16  NPU    (1,160,28,28),(1024,160,3,3),(1024),...  (1,1024,28,28)         271217/2257920/2257920   4697         Conv:conv3d_2d_tile0_ConvAdd
9    ConvAdd            FLOAT16  NPU    (1,64,28,28),(1024,64,3,3),...           (1,1024,28,28)         189874/903168/903168     2818         Conv:conv3d_2d_tile6_ConvAdd
11   OutputOperator     FLOAT16  CPU    (1,64,16,28,28)                          \\                      0/0/0                    1568         OutputOperator:y
Total Internal Memory Size: 4802KB
Total Weight Memory Size: 18438.2KB
""".splitlines()

LOWERED = """\
                                                        Network Layer Information Table
ID   OpType             DataType Target InputShape                               OutputShape            Cycles(DDR/NPU/Total)    RW(KB)       FullName
0    InputOperator      FLOAT16  CPU    \\                                        (16,64,28,28)          0/0/0                    0            InputOperator:x
1    Conv               FLOAT16  NPU    (16,64,28,28),(64,64,3,3)                (16,64,28,28)          138888/903168/903168     1642         Conv:conv3d/Conv_3
2    Relu               FLOAT16  NPU    (16,64,28,28)                            (16,64,28,28)          6410/1568/6410           1568         Relu:relu/Relu_4
Total Internal Memory Size: 3136KB
Total Weight Memory Size: 74.25KB
""".splitlines()


def test_the_layer_table_and_memory_totals_are_read():
    toolkit = parse(TOOLKIT)
    assert [x["name"] for x in toolkit["layers"]][:3] == ["x", "x_rs", "conv3d_2d_tile1"]
    assert toolkit["npu_cycles"] == 2 * 2257920 + 903168 and toolkit["ddr_cycles"] == 203164 + 271217 + 189874
    assert toolkit["cycles"] == toolkit["npu_cycles"]  # Total is the larger of DDR and NPU per layer
    assert toolkit["weight_kb"] == pytest.approx(18438.2) and toolkit["internal_kb"] == 4802
    lowered = parse(LOWERED)
    assert lowered["cycles"] == 903168 + 6410 and lowered["weight_kb"] == pytest.approx(74.25)
    assert parse(["nothing to see"]) == {"layers": [], "cycles": 0, "npu_cycles": 0, "ddr_cycles": 0,
                                         "weight_kb": None, "internal_kb": None}


def test_layers_are_attributed_to_the_original_nodes_by_name():
    originals = ["conv3d", "relu", "conv3d_b"]
    assert attribute(parse(TOOLKIT)["layers"], originals) == {"(other)": 0, "conv3d": 2 * 2257920 + 903168}
    assert attribute(parse(LOWERED)["layers"], originals) == {"(other)": 0, "conv3d": 903168, "relu": 6410}


def test_compare_gives_the_ratio_and_the_costliest_layers():
    summary = compare(parse(LOWERED), parse(TOOLKIT), ["conv3d", "relu"])
    assert summary["cycles_ratio"] == pytest.approx((903168 + 6410) / (2 * 2257920 + 903168))
    assert summary["weight_ratio"] == pytest.approx(74.25 / 18438.2)
    assert summary["layers"][0] == {"layer": "conv3d", "lowered_cycles": 903168, "toolkit_cycles": 5419008}
    assert "layers" not in summary["lowered"] and "toolkit_5d" in summary
    assert "toolkit_5d" not in compare(parse(LOWERED), None, ["conv3d"])


def test_the_worker_keeps_only_the_table_and_totals():
    import importlib.util

    from edge3d.runtimes import rknn_runtime

    spec = importlib.util.spec_from_file_location("rknn_worker", rknn_runtime.WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    log = (["I rknn building ...", "D RKNN: [04:17:31.711] " + TOOLKIT[0].strip()]
           + ["D RKNN: [04:17:31.711] " + line for line in TOOLKIT[1:8]]
           + ["D RKNN: [04:17:31.805]      Feature Tensor Information Table",
              "D RKNN: [04:17:31.805] 1   Reshape   x   FLOAT16   UNDEFINED   (1,64,16,28,28) | 0x0 0x1 0x1",
              "D RKNN: [04:17:31.805] Total Weight Memory Size: 18438.2KB"])
    kept = worker.perf_lines(log)
    assert parse(kept)["cycles"] == 2 * 2257920 + 903168 and parse(kept)["weight_kb"] == pytest.approx(18438.2)
    assert not any("Feature" in line or "UNDEFINED" in line for line in kept)


@pytest.mark.rknn
def test_an_rknn_bundle_compares_with_the_toolkits_own_conversion(tiny_model, tmp_path):
    import json

    from conftest import invoke, shape_arg
    path, shape = tiny_model("conv3d")
    out = tmp_path / "rk"
    assert invoke("export", path, "--input-shape", shape_arg(shape), "--target", "rknn", "-o", out, "-q").exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for a in (a for a in manifest["artifacts"] if a["runtime"] == "rknn"):
        estimate = a["meta"]["npu_estimate"]
        assert estimate["lowered"]["cycles"] > 0 and estimate["lowered"]["weight_kb"] > 0
        kit = estimate["toolkit_5d"]
        assert "error" in kit or (kit["cycles"] > 0 and estimate["cycles_ratio"] > 0)
    assert "Estimated NPU cost" in (out / "report.md").read_text()
    bench = invoke("bench", out, "--iters", "2", "--warmup", "0", "--baseline", "none", "--format", "json")
    assert bench.exit_code == 0, bench.stderr
    assert set(json.loads(bench.stdout)["npu_estimates"]) == {"rknn (fp16)", "rknn (int8)"}
    text = invoke("bench", out, "--iters", "2", "--warmup", "0", "--baseline", "none").stdout
    assert "Estimated NPU cost at export" in text and "rknn (int8)" in text


def test_a_toolkit_that_does_not_finish_the_5d_model_is_recorded_not_waited_for(tmp_path, monkeypatch):
    """The 5D conversion is a comparison: past its time limit the export goes on, and says so."""
    from lowering_harness import float_input, make_model
    from onnx import helper

    from edge3d.errors import CheckFailed
    from edge3d.runtimes import rknn_runtime

    def stuck(*args, timeout=None):
        assert args[0] == "estimate" and timeout == rknn_runtime.ESTIMATE_TIMEOUT_S
        raise CheckFailed("rknn-toolkit2's estimate of original.onnx did not finish")

    monkeypatch.setattr(rknn_runtime, "call", stuck)
    original = make_model([helper.make_node("Relu", ["x"], ["y"], name="conv3d")], [float_input("x", [1, 3, 4, 8, 8])],
                          [float_input("y", [1, 3, 4, 8, 8])])
    summary = rknn_runtime.RknnRuntime._estimate(LOWERED, original, None, "rk3588", "fp16")
    assert summary["lowered"]["cycles"] == 903168 + 6410
    assert summary["toolkit_5d"] == {"error": "the toolkit could not build the 5D model: it did not finish within "
                                              f"{rknn_runtime.ESTIMATE_TIMEOUT_S} s"}
