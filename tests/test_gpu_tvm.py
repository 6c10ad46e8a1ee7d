"""A lowered model's TVM library for a CUDA GPU, built and run there (skipped without a CUDA device)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import invoke, rel_l2, shape_arg


@pytest.mark.cuda
def test_lowered_tiny_net_tvm_cuda_library_matches_ort(tiny_model, tmp_path):
    """TvmRuntime.build (Relax from_onnx + tvm.compile) for this GPU's sm_XY: the library run on
    tvm.cuda(0) gives what ONNX Runtime (CPU) gives for the same lowered model.onnx and frames."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from edge3d.layouts import clip_to_frames
    from edge3d.runtimes.tvm_runtime import TvmRuntime

    path, shape = tiny_model("net")
    bundle = tmp_path / "bundle"
    result = invoke("export", path, "--input-shape", shape_arg(shape), "-o", bundle)
    assert result.exit_code == 0, result.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [i["layout"] for i in manifest["inputs"]] == ["frames"]

    dev = tvm.cuda(0)
    arch = "sm_" + dev.compute_version.replace(".", "")
    spec = {"kind": "cuda", "arch": arch, "host": {"kind": "llvm"}}
    artifact = TvmRuntime().build(bundle / "model.onnx", SimpleNamespace(tvm={"target": spec}), bundle, "fp32")
    assert artifact.meta["target"]["arch"] == arch and not artifact.runnable_here  # not a library for this CPU

    frames = clip_to_frames(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(bundle / artifact.files[0])), dev)
    got = vm["main"](tvm.runtime.tensor(frames, device=dev))
    got = got[0] if type(got).__name__ == "Array" or isinstance(got, (list, tuple)) else got
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: frames})[0]
    assert got.numpy().shape == expected.shape
    assert rel_l2(expected, got.numpy()) <= 1e-4
