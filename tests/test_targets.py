"""Target profiles, `lint --target`, and bundles for every target with their artifacts."""

from __future__ import annotations

import dataclasses
import json
import os
import py_compile
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import invoke, shape_arg, small_shape
from lowering_harness import float_input, make_model
from onnx import helper

from edge3d.runtimes.ort_runtime import OrtRuntime
from edge3d.targets import all_targets, load_target

NAMES = {"onnx", "x86", "arm64", "jetson", "jetson-xavier", "jetson-dla", "npu", "rknn", "jetson-thor", "edgetpu",
         "tflite", "ethos-u55-128", "ethos-u65-256", "ethos-u85-256"}


# The tvm, rknn and gpu markers skip a test where its backend is missing (tests/conftest.py).
needs_cross = pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None,
                                 reason="no AArch64 cross compiler (apt-get install g++-aarch64-linux-gnu)")


def test_profiles_are_data_and_frozen():
    profiles = {t.name: t for t in all_targets()}
    assert set(profiles) == NAMES
    jetson = load_target("jetson")
    assert jetson.tvm["target"]["arch"] == "sm_87" and jetson.default_precision == "fp16"
    assert load_target("jetson-xavier").tvm["target"]["arch"] == "sm_72"
    assert load_target("rknn").rknn["platform"] == "rk3588" and "rk3566" in load_target("rknn").rknn["platforms"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        jetson.max_rank = 5
    with pytest.raises(TypeError):
        jetson.tvm["target"]["arch"] = "sm_80"  # read-only mappings all the way down


def test_targets_command_lists_every_profile():
    result = invoke("targets", "--format", "json")
    assert result.exit_code == 0
    assert {t["name"] for t in json.loads(result.stdout)} == NAMES
    table = invoke("targets")
    assert all(name in table.stdout for name in NAMES)
    where = {t["name"]: " ".join(t["where"]) for t in json.loads(result.stdout)}
    assert "built, verified and timed here" in where["x86"] and "on the device" in where["arm64"]
    assert "engine is built, checked and timed on the device" in where["jetson"]
    assert "simulator here" in where["rknn"] and "TensorRT" not in where["rknn"]


def test_tensorrt_profiles_know_their_release():
    thor, dla = load_target("jetson-thor"), load_target("jetson-dla")
    assert thor.tvm["target"]["arch"] == "sm_110" and "10.13" in thor.tensorrt["jetpack"]
    assert not thor.tensorrt["dla_cores"]
    assert dla.tensorrt["dla_max_version"] == "10.7" and "dla_max_version" not in load_target("jetson").tensorrt


def _model(path: Path, nodes, shape=(1, 3, 8, 8), dims=None, opset=17, inits=()):
    model = make_model(nodes, [float_input("x", dims or shape)], [helper.make_tensor_value_info("y", 1, None)],
                       inits, opset=opset)
    onnx.save(model, path)
    return path


def test_lint_target_ops_limits_dynamic_dims_and_opset(tmp_path):
    lp = _model(tmp_path / "lp.onnx", [helper.make_node("LpNormalization", ["x"], ["y"], name="lpn")])
    result = invoke("lint", lp, "--target", "npu", "--format", "json")
    assert result.exit_code == 1
    issues = json.loads(result.stdout)["files"][0]["target_issues"]
    assert [(i["rule"], i["node"], i["op"]) for i in issues] == [("E3D002", "lpn", "LpNormalization")]
    assert invoke("lint", lp, "--target", "x86").exit_code == 0  # x86 takes any op

    cat = _model(tmp_path / "cat.onnx", [helper.make_node("Concat", ["x", "x"], ["y"], name="cat", axis=2)])
    text = invoke("lint", cat, "--target", "jetson-dla")
    assert text.exit_code == 1 and "E3D003 Concat on axis 2 (only [1])" in text.stdout

    pool = _model(tmp_path / "pool.onnx", [helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[9, 9])],
                  shape=(1, 3, 16, 16))
    assert "kernel [9, 9] exceeds 8" in invoke("lint", pool, "--target", "jetson-dla").stdout

    dynamic = _model(tmp_path / "dyn.onnx", [helper.make_node("Relu", ["x"], ["y"])], dims=["N", 3, 8, 8])
    result = invoke("lint", dynamic, "--target", "npu")
    assert result.exit_code == 1 and "E3D004" in result.stdout
    assert invoke("lint", dynamic, "--target", "onnx").exit_code == 0  # onnx allows dynamic shapes

    new = _model(tmp_path / "new.onnx", [helper.make_node("Relu", ["x"], ["y"])], opset=21)
    assert "E3D005" in invoke("lint", new, "--target", "x86").stdout

    frames = _model(tmp_path / "frames.onnx", [helper.make_node("Relu", ["x"], ["y"])], shape=(16, 3, 8, 8))
    result = invoke("lint", frames, "--target", "edgetpu", "--format", "json")
    issues = json.loads(result.stdout)["files"][0]["target_issues"]
    assert result.exit_code == 1 and [(i["rule"], i["node"]) for i in issues] == [("E3D007", "x")]
    assert "batch 16" in issues[0]["message"] and "(B, C·T, H, W)" in issues[0]["message"]
    assert invoke("lint", frames, "--target", "npu").exit_code == 0  # no batch limit there
    assert invoke("lint", _model(tmp_path / "one.onnx", [helper.make_node("Relu", ["x"], ["y"])]),
                  "--target", "edgetpu").exit_code == 0

    unknown = invoke("lint", new, "--target", "tpu")
    assert unknown.exit_code == 2 and "available:" in unknown.stderr


def _export(saved_model, tmp_path, target, *extra, name="c3d"):
    out = tmp_path / target
    result = invoke("export", saved_model(name, "pt"), "--input-shape", shape_arg(small_shape(name)),
                    "--target", target, "-o", out, *extra)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "manifest.json").read_text())


def _artifact(manifest, runtime, precision):
    return next(a for a in manifest["artifacts"] if a["runtime"] == runtime and a["precision"] == precision)


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    return int.from_bytes(header[18:20], "little")


@pytest.mark.tvm
def test_x86_bundle_builds_verifies_and_times_tvm(saved_model, tmp_path):
    out, manifest = _export(saved_model, tmp_path, "x86")
    tvm = _artifact(manifest, "tvm", "fp32")
    assert tvm["built_here"] and tvm["runnable_here"]
    assert tvm["verification"]["passed"] and tvm["verification"]["outputs"][0]["rel_l2"] <= 1e-4
    assert tvm["latency"]["median_ms"] > 0 and tvm["latency"]["iters"] == 10
    assert _elf_machine(out / "model.tvm.so") == 62  # x86-64
    assert {p.name for p in out.iterdir()} == {"model.onnx", "model.tvm.so", "manifest.json", "report.md"}
    report = (out / "report.md").read_text()
    assert "| tvm | fp32 | `model.tvm.so` | yes | yes |" in report


@pytest.mark.tvm
def test_tvm_trials_tune_the_x86_library_which_still_verifies(tiny_model, tmp_path):
    """One Conv3d: lowered, its one kernel is a Conv2d, and tuning spends the whole budget on it."""
    path, shape = tiny_model("conv3d")
    out = tmp_path / "x86"
    result = invoke("export", path, "--input-shape", shape_arg(shape), "--target", "x86", "--tvm-trials", "2",
                    "-o", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    tvm = _artifact(manifest, "tvm", "fp32")
    tuning = tvm["meta"]["tuning"]
    assert tuning["budget"] == 2 and tuning["kernels"] == 1 and tuning["trials"] == 2  # the budget is honoured
    assert 0 <= tuning["failed_candidates"] <= tuning["trials"]
    # every kernel tuned has its timings recorded, and the totals are their sums
    ((kernel, timings),) = tuning["per_kernel_ms"].items()
    assert "conv2d" in kernel and "conv3d" not in kernel
    default_ms, tuned_ms = timings
    assert all(np.isfinite(t) and t > 0 for t in timings)
    assert tuning["kernel_ms_default"] == pytest.approx(default_ms, abs=1e-3)
    assert tuning["kernel_ms_tuned"] == pytest.approx(tuned_ms, abs=1e-3)
    assert "tuned 1 kernels with 2 trials" in result.stdout
    # the tuned library is the one verified and timed
    assert tvm["verification"]["passed"] and tvm["verification"]["outputs"][0]["rel_l2"] <= 1e-4
    assert tvm["latency"]["iters"] > 0 and np.isfinite(tvm["latency"]["median_ms"])
    # bench tunes the original 5D model with the same budget, and says so
    report = json.loads(invoke("bench", out, "--runtime", "tvm", "--iters", "2", "--warmup", "1",
                               "--format", "json").stdout)
    assert report["environment"]["tvm_tuning_trials"] == 2
    assert np.isfinite(report["ratio"]["ratio"]) and report["ratio"]["ratio"] > 0
    assert any("conv3d" in op for op in report["breakdown"]["original"]["by_op_ms"])


@pytest.mark.parametrize("target, message", [("arm64", "cannot tune the arm64 library here"),
                                             ("onnx", "which the onnx target does not build")])
def test_tvm_trials_refused_where_nothing_can_be_tuned_here(saved_model, tmp_path, target, message):
    result = invoke("export", saved_model("c3d", "pt"), "--input-shape", shape_arg(small_shape("c3d")),
                    "--target", target, "--tvm-trials", "4", "-o", tmp_path / "o")
    assert result.exit_code == 2 and message in result.stderr and not (tmp_path / "o").exists()


@pytest.mark.tvm
@needs_cross
def test_arm64_and_jetson_cross_compile_for_aarch64(saved_model, tmp_path):
    out, manifest = _export(saved_model, tmp_path, "arm64")
    assert _elf_machine(out / "model.tvm.so") == 183  # EM_AARCH64
    assert not _artifact(manifest, "tvm", "fp32")["runnable_here"]

    out, manifest = _export(saved_model, tmp_path, "jetson")
    assert _elf_machine(out / "model.tvm.so") == 183
    assert _artifact(manifest, "tvm", "fp32")["meta"]["target"]["arch"] == "sm_87"
    trt = _artifact(manifest, "tensorrt", "fp16")
    fp16 = _artifact(manifest, "ort", "fp16")  # what a strongly typed TensorRT 11 build takes
    assert fp16["files"] == ["model.fp16.onnx"] and fp16["verification"]["passed"] and "latency" not in fp16
    assert fp16["verification"]["provider"] == ("CUDA" if OrtRuntime.providers()[0].startswith("CUDA") else "CPU")
    model16 = onnx.load(str(out / "model.fp16.onnx"))
    assert {i.data_type for i in model16.graph.initializer if i.data_type in (1, 10)} == {10}  # fp16 weights
    assert model16.graph.input[0].type.tensor_type.elem_type == 1  # float32 in and out, as model.onnx
    script = (out / "build_engine.sh").read_text()
    assert "--fp16" in script and "--onnx=model.onnx" in script and "--shapes=x:16x3x32x32" in script
    assert "--onnx=model.fp16.onnx" in script  # the TensorRT 11 branch
    assert "--exportProfile=profile.json" in script  # for `bench BUNDLE --import-trtexec LOG`
    assert subprocess.run(["bash", "-n", str(out / "build_engine.sh")]).returncode == 0
    py_compile.compile(str(out / "build_engine.py"), doraise=True)
    assert os.access(out / "build_engine.sh", os.X_OK)
    if not trt["built_here"]:
        assert any("on the device" in n for n in trt["notes"])
        assert "To build on the device" in (out / "report.md").read_text()


@pytest.mark.slow
def test_jetson_dla_scripts_pin_the_dla_core(saved_model, tmp_path):
    out, manifest = _export(saved_model, tmp_path, "jetson-dla")
    script = (out / "build_engine.sh").read_text()
    assert "--useDLACore=0" in script and "--allowGPUFallback" not in script
    assert "config.default_device_type = trt.DeviceType.DLA" in (out / "build_engine.py").read_text()
    assert manifest["target"]["name"] == "jetson-dla"
    # the lowering consults the profile: C3D's Conv3d taps are strided slices, not Gathers, so every
    # node is of an op the DLA has a layer for (checked here independently of the lint)
    allowed = set(load_target("jetson-dla").allowed_ops)
    nodes = onnx.load(str(out / "model.onnx")).graph.node
    assert {n.op_type for n in nodes} <= allowed
    assert manifest["target_lint"] == []
    assert any("taps sliced" in item["rule"] for item in manifest["rewrite"]["nodes"])


def test_jetson_dla_refuses_a_layer_it_cannot_run(tmp_path):
    """The DLA profile has no GPU fallback: a bundle with a layer the DLA rejects would not build on
    the device, so the export fails (exit 1) naming the layer, and writes nothing."""
    import torch

    class WithExp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(3, 4, 3, padding=1)

        def forward(self, x):
            return torch.exp(self.conv(x))

    path = tmp_path / "exp.pt"
    x = torch.randn(1, 3, 4, 8, 8)
    torch.jit.save(torch.jit.trace(WithExp().eval(), (x,)), str(path))
    result = invoke("export", path, "--input-shape", "1,3,4,8,8", "--target", "jetson-dla", "-o", tmp_path / "o")
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "cannot run on jetson-dla, which has no fallback" in line
    assert "(Exp): Exp is not supported by jetson-dla" in line and "--target jetson" in line
    assert not (tmp_path / "o").exists()
    assert invoke("export", path, "--input-shape", "1,3,4,8,8", "--target", "jetson", "-o",
                  tmp_path / "o2").exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["c3d", "x3d"])
def test_npu_int8_qdq_is_verified_on_calibration_clips(saved_model, tmp_path, name):
    out, manifest = _export(saved_model, tmp_path, "npu", "--calib-clips", "6", name=name)
    int8 = _artifact(manifest, "ort", "int8")
    check = int8["verification"]
    assert check["precision"] == "int8" and check["passed"] and check["samples"] == 16  # held out, not the 6
    assert check["clips"] == "16 held out from calibration"
    assert check["outputs"][0]["cosine"] >= 0.98 and check["outputs"][0]["top1"] >= 0.9
    assert [o["name"] for o in check["outputs"]] == [o["name"] for o in manifest["outputs"]]  # not output_0
    model = onnx.load(str(out / "model.int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert invoke("lint", out / "model.int8.onnx", "--target", "npu").exit_code == 0


def test_precision_not_offered_by_target_is_refused(saved_model, tmp_path):
    result = invoke("export", saved_model("c3d", "pt"), "--input-shape", shape_arg(small_shape("c3d")),
                    "--target", "npu", "--precision", "fp32", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "npu builds int8" in result.stderr and not (tmp_path / "o").exists()
    assert "pass --precision int8, or a target that builds fp32 (" in result.stderr  # names a value, not the flag


def _rank5_relu():
    return make_model([helper.make_node("Relu", ["x"], ["y"])], [float_input("x", (1, 3, 4, 8, 8))],
                      [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])


def test_lower_to_a_folder_path_is_refused(tmp_path):
    """``-o dir/`` once wrote a file named ``dir``: a trailing slash names a folder."""
    source = tmp_path / "r5.onnx"
    onnx.save(_rank5_relu(), source)
    result = invoke("lower", source, "-o", f"{tmp_path / 'new'}/")
    assert result.exit_code == 2 and "names a folder; pass the file to write" in result.stderr
    assert not (tmp_path / "new").exists()


def test_lowered_model_carries_no_onnxsim_log(tmp_path):
    """onnxsim records its run in 17 ``onnxsim.*`` metadata properties; the lowered file has none."""
    source = tmp_path / "r5.onnx"
    onnx.save(_rank5_relu(), source)
    assert invoke("lower", source, "-o", tmp_path / "out.onnx", "-q").exit_code == 0
    assert not [p.key for p in onnx.load(str(tmp_path / "out.onnx")).metadata_props if p.key.startswith("onnxsim")]


@pytest.mark.rknn
def test_rknn_fp16_and_int8_are_built_and_simulated(tiny_model, tmp_path):
    """The tiny net has every kind of layer of c3d and eco-lite (convs, BatchNorm, a max pool, a
    residual add, a classifier), and like eco-lite's last stage a 3x3x3 conv on one frame, whose
    taps that only read padding must go: rknn-toolkit2 2.5 computes a Pad on a size-1 axis wrongly."""
    path, shape = tiny_model("net")
    out = tmp_path / "rknn"
    result = invoke("export", path, "--input-shape", shape_arg(shape), "--target", "rknn", "-o", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert any("taps that only read padding dropped" in rule for rule in manifest["rewrite"]["by_rule"])
    for precision in ("fp16", "int8"):
        art = _artifact(manifest, "rknn", precision)
        assert (out / art["files"][0]).stat().st_size > 0
        assert art["verification"]["passed"], art["verification"]
        assert any(note.startswith("toolkit: ") for note in art["notes"])


def test_rknn_missing_is_said_clearly(saved_model, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE3D_RKNN_VENV", str(tmp_path / "none"))
    result = invoke("export", saved_model("c3d", "pt"), "--input-shape", shape_arg(small_shape("c3d")),
                    "--target", "rknn", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "edge3d setup rknn" in result.stderr
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))
    assert "Loading model" not in result.stdout  # checked first, before the model is loaded


@pytest.mark.parametrize("target", ["tflite", "ethos-u55-128"])
def test_tflite_missing_is_said_before_the_work(saved_model, tmp_path, monkeypatch, target):
    monkeypatch.setenv("EDGE3D_TFLITE_VENV", str(tmp_path / "none"))
    result = invoke("export", saved_model("c3d", "pt"), "--input-shape", shape_arg(small_shape("c3d")),
                    "--target", target, "-o", tmp_path / "o")
    assert result.exit_code == 2 and f"the {target} target needs LiteRT" in result.stderr
    assert "edge3d setup tflite" in result.stderr and "Loading model" not in result.stdout
    assert not (tmp_path / "o").exists()


def test_a_missing_cross_compiler_ships_the_library_as_objects_to_link_on_the_device(saved_model, tmp_path,
                                                                                      monkeypatch):
    """The ONNX model and the TensorRT scripts need no compiler: the Jetson bundle is still written,
    with the TVM kernels compiled here as object files, and the report says how to link them."""
    pytest.importorskip("tvm")
    from edge3d.runtimes import tvm_runtime

    monkeypatch.setattr(tvm_runtime.shutil, "which", lambda name: None)
    out = tmp_path / "o"
    result = invoke("export", saved_model("c3d", "pt"), "--input-shape", shape_arg(small_shape("c3d")),
                    "--target", "jetson", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "aarch64-linux-gnu-g++ is missing here" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    tvm = _artifact(manifest, "tvm", "fp32")
    assert tvm["files"] == ["model.tvm.tar"] and not tvm["built_here"] and not tvm["runnable_here"]
    assert {"build_engine.sh", "build_engine.py", "model.onnx", "model.tvm.tar"} <= {p.name for p in out.iterdir()}
    import tarfile

    with tarfile.open(out / "model.tvm.tar") as tar:  # AArch64 (ELF machine 183) object files
        heads = [tar.extractfile(m).read(20) for m in tar.getmembers() if m.isfile()]
    assert heads and all(h[:4] == b"\x7fELF" and int.from_bytes(h[18:20], "little") == 183 for h in heads)
    report = (out / "report.md").read_text()
    assert "g++ -shared -fPIC -o model.tvm.so" in report and "./build_engine.sh" in report


def test_too_little_disk_space_is_said_before_the_work(saved_model, tmp_path, monkeypatch):
    import collections
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: collections.namedtuple("u", "total used free")(1, 1, 1000))
    result = invoke("export", saved_model("c3d", "pt"), "--input-shape", shape_arg(small_shape("c3d")),
                    "-o", tmp_path / "o")
    assert result.exit_code == 2 and "MiB free; the bundle of c3d.pt needs about" in result.stderr
    assert "Loading model" not in result.stdout


def test_measure_reports_percentiles():
    from edge3d.runtimes.base import measure

    class Fake:
        inputs = []

        def run(self, feeds):
            return [np.zeros(1)]

    stats = measure(Fake(), {}, warmup=1, iters=7)
    assert stats["iters"] == 7 and stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"] <= stats["max_ms"]


@pytest.mark.gpu
def test_tensorrt_engine_is_built_and_verified_where_a_gpu_is(saved_model, tmp_path):
    out, manifest = _export(saved_model, tmp_path, "jetson")
    trt = _artifact(manifest, "tensorrt", "fp16")
    assert trt["built_here"] and (out / "model.plan").stat().st_size > 0
    assert trt["verification"]["passed"]


def test_a_pt2_export_is_not_flagged_by_its_own_target(saved_model, tmp_path):
    """The dynamo exporter writes opset 18; the onnx target (checked in ONNX Runtime) takes it, so
    the bundle's own lint has no E3D005; a model-wide finding prints no empty "()" in report.md."""
    out = tmp_path / "o"
    result = invoke("export", saved_model("c3d", "pt2"), "--target", "onnx", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["opset"] == 18 and manifest["target_lint"] == []
    from edge3d.bundle.report_md import write_report

    manifest["target_lint"] = [{"rule": "E3D005", "node": "", "op": "", "message": "model opset 22 is newer"}]
    write_report(tmp_path / "report.md", manifest)
    assert "- E3D005 model opset 22 is newer\n" in (tmp_path / "report.md").read_text()
