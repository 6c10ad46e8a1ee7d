"""The bundle's TensorRT build scripts against the TensorRT release they meet on the device.

No GPU is needed: ``build_engine.sh`` runs against a stand-in trtexec that prints a release's
banner and records its arguments, and ``build_engine.py`` against a stand-in ``tensorrt`` module
that records the builder calls. What is checked is the scripts' own logic: TensorRT 11 takes the
precision from the model (strongly typed, no --fp16/--int8), older releases take the flags, and a
DLA bundle stops on a TensorRT without the DLA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lowering_harness import float_input, make_model
from onnx import helper

from edge3d.runtimes.tensorrt_runtime import TensorRTRuntime
from edge3d.targets import load_target

FAKE_TRTEXEC = """#!/usr/bin/env bash
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] [b1] # trtexec $*"
[ "$1" = "--help" ] && exit 0
printf '%s\\n' "$@" > "$(dirname "$0")/args.txt"
"""

FAKE_TENSORRT = '''
import json, os
__version__ = os.environ["FAKE_TRT_VERSION"]
CALLS = []
def _log(*a): CALLS.append([str(x) for x in a]); open(os.environ["FAKE_TRT_LOG"], "w").write(json.dumps(CALLS))
class Logger:
    WARNING = 1
    def __init__(self, level): pass
class NetworkDefinitionCreationFlag:
    STRONGLY_TYPED = 1
class BuilderFlag:
    FP16, INT8, GPU_FALLBACK = "FP16", "INT8", "GPU_FALLBACK"
class MemoryPoolType:
    WORKSPACE = "WORKSPACE"
class DeviceType:
    DLA = "DLA"
class Config:
    def set_memory_pool_limit(self, *a): pass
    def set_flag(self, flag): _log("flag", flag)
class Builder:
    def __init__(self, logger): pass
    def create_network(self, flags): _log("network", flags); return object()
    def create_builder_config(self): return Config()
    def build_serialized_network(self, network, config): return b"plan"
class OnnxParser:
    def __init__(self, network, logger): pass
    def parse(self, data): _log("parse", len(data)); return True
'''


def _bundle(tmp_path: Path, target: str, precision: str) -> Path:
    bundle = tmp_path / f"{target}-{precision}"
    bundle.mkdir()
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [float_input("x", [16, 3, 8, 8])],
                       [float_input("y", [16, 3, 8, 8])])
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        (bundle / name).write_bytes(model.SerializeToString())
    runtime = TensorRTRuntime()
    artifact = runtime.build(runtime.input_model(bundle, precision), load_target(target), bundle, precision)
    assert not artifact.built_here and artifact.device_steps  # no GPU here: the device finishes it
    return bundle


def _trtexec(bundle: Path, code: str, **env) -> tuple[subprocess.CompletedProcess, list[str]]:
    fake = bundle / "bin" / "trtexec"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(FAKE_TRTEXEC.format(code=code))
    fake.chmod(0o755)
    done = subprocess.run(["bash", str(bundle / "build_engine.sh")], capture_output=True, text=True,
                          env={**os.environ, "TRTEXEC": str(fake), **env})
    args = fake.with_name("args.txt")
    return done, args.read_text().split() if args.exists() else []


@pytest.mark.parametrize("code, typed", [("8502", False), ("100300", False), ("101300", False), ("110000", True),
                                         ("11.1.0.106", True)])
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_trtexec_script_follows_the_release(tmp_path, code, typed, precision):
    bundle = _bundle(tmp_path, "jetson", precision)
    done, args = _trtexec(bundle, code)
    assert done.returncode == 0, done.stderr
    model = {"fp16": "model.fp16.onnx" if typed else "model.onnx", "int8": "model.int8.onnx"}[precision]
    assert f"--onnx={model}" in args
    assert ("--fp16" in args) is not typed and ("--int8" in args) is (not typed and precision == "int8")
    assert "--shapes=x:16x3x8x8" in args and "--exportProfile=profile.json" in args


@pytest.mark.parametrize("code, stops", [("100300", False), ("100700", False), ("101300", True), ("110000", True)])
def test_dla_script_stops_on_a_tensorrt_without_the_dla(tmp_path, code, stops):
    bundle = _bundle(tmp_path, "jetson-dla", "fp16")
    done, args = _trtexec(bundle, code)
    assert (done.returncode != 0) is stops
    if stops:
        assert "no longer supports" in done.stderr and "10.7 or older" in done.stderr and not args
    else:
        assert "--useDLACore=0" in args


def test_version_can_be_given(tmp_path):
    done, args = _trtexec(_bundle(tmp_path, "jetson", "fp16"), "100300", TRT_VERSION="11.1")
    assert done.returncode == 0 and "--onnx=model.fp16.onnx" in args and "--fp16" not in args


def _python_build(bundle: Path, tmp_path: Path, version: str) -> tuple[subprocess.CompletedProcess, list]:
    fake = tmp_path / "fake_trt"
    fake.mkdir(exist_ok=True)
    (fake / "tensorrt.py").write_text(FAKE_TENSORRT)
    log = tmp_path / f"calls-{version}.json"
    done = subprocess.run([sys.executable, str(bundle / "build_engine.py")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(fake), "FAKE_TRT_VERSION": version,
                               "FAKE_TRT_LOG": str(log)})
    return done, json.loads(log.read_text()) if log.exists() else []


@pytest.mark.parametrize("version, typed", [("10.3.0", False), ("11.0.1", True)])
def test_python_script_builds_strongly_typed_from_11(tmp_path, version, typed):
    bundle = _bundle(tmp_path, "jetson", "fp16")
    done, calls = _python_build(bundle, tmp_path, version)
    assert done.returncode == 0, done.stderr
    assert ["network", "2" if typed else "0"] in calls  # 1 << STRONGLY_TYPED (1, as in TensorRT)
    assert (["flag", "FP16"] in calls) is not typed
    assert (bundle / "model.plan").read_bytes() == b"plan"


def test_python_script_stops_a_dla_build_on_a_tensorrt_without_the_dla(tmp_path):
    bundle = _bundle(tmp_path, "jetson-dla", "fp16")
    done, calls = _python_build(bundle, tmp_path, "10.13.0")
    assert done.returncode != 0 and "no longer supports" in done.stderr and not calls
    done, calls = _python_build(bundle, tmp_path, "10.7.0")
    assert done.returncode == 0 and ["flag", "FP16"] in calls
