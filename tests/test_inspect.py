"""`edge3d inspect`: the 3D ops, parameter count and rank-5 tensors of a model."""

from __future__ import annotations

import json

import onnx
import pytest
from conftest import independent_high_rank, invoke, reference_model, shape_arg, small_shape
from torch import nn


def _param_bounds(name: str) -> tuple[int, int]:
    """Eval-mode BatchNorm is folded into the convs on export: its affine parameters go (its
    statistics are buffers, not parameters) and a conv gains at most one bias per channel, fewer
    than the BN removed. A few int64 shape constants may be added as initializers."""
    model = reference_model(name)
    params = sum(p.numel() for p in model.parameters())
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for p in m.parameters())
    return params - bn, params + 64


def _inspect_args(name, fmt, saved_model):
    args = ["inspect", saved_model(name, fmt)]
    if fmt == "pt":
        args += ["--input-shape", shape_arg(small_shape(name))]
    return args


@pytest.mark.slow
@pytest.mark.parametrize("name, fmt", [("c3d", "pt2"), ("x3d", "pt"), ("shufflenet3d", "pt")])
def test_inspect_json(name, fmt, saved_model):
    result = invoke(*_inspect_args(name, fmt, saved_model), "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["kind"] == {"pt": "torchscript", "pt2": "exported-program"}[fmt]
    low, high = _param_bounds(name)
    assert low <= doc["params"] <= high, (low, doc["params"], high)
    assert doc["tensors_above_rank4"] > 0
    assert doc["max_rank"] >= 5
    assert doc["ops_3d"].get("Conv", 0) > 0
    assert doc["ops"]["Conv"] >= doc["ops_3d"]["Conv"]
    assert doc["macs"] >= doc["macs_3d"] > 0
    assert doc["inputs"][0]["shape"] == list(small_shape(name))
    assert doc["outputs"][0]["shape"] == [1, 10]


def test_inspect_c3d_params_exact(saved_model):
    """C3D has no BatchNorm: every parameter survives the export."""
    doc = json.loads(invoke(*_inspect_args("c3d", "pt", saved_model), "--format", "json").stdout)
    assert doc["params"] == sum(p.numel() for p in reference_model("c3d").parameters())


def test_inspect_onnx_counts_match_lint(onnx_5d):
    path = onnx_5d("r3d18")
    result = invoke("inspect", path, "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["kind"] == "onnx"
    assert doc["tensors_above_rank4"] == len(independent_high_rank(onnx.load(str(path))))
    assert doc["ops_3d"]["Conv"] == doc["ops"]["Conv"]  # every conv of R3D is a Conv3d


@pytest.mark.slow
def test_inspect_rank4_bundle(exported):
    export = exported("c3d", "pt")
    assert export.result.exit_code == 0, export.result.output
    doc = json.loads(invoke("inspect", export.onnx_path, "--format", "json").stdout)
    assert doc["tensors_above_rank4"] == 0
    assert doc["ops_3d"] == {}
    assert doc["max_rank"] <= 4
    assert doc["ops"]["Conv"] > 0


@pytest.mark.slow
def test_inspect_table(saved_model):
    result = invoke(*_inspect_args("x3d", "pt", saved_model))
    assert result.exit_code == 0, result.output
    doc = json.loads(invoke(*_inspect_args("x3d", "pt", saved_model), "--format", "json").stdout)
    text = result.stdout
    assert "parameters" in text
    assert f"{doc['params']:,}" in text
    for op in doc["ops"]:
        assert op in text
    assert "tensors above rank 4" in text
    assert str(doc["tensors_above_rank4"]) in text


def test_inspect_does_not_trust_declared_shapes(tmp_path):
    """A file whose value_info calls a rank-5 tensor rank 4 is still counted as rank 5."""
    import json

    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x", "axes"], ["u"]), helper.make_node("Relu", ["u"], ["r"]),
         helper.make_node("Squeeze", ["r", "axes"], ["y"])], "liar", [x], [y],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [2])],
        value_info=[helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("u", "r")])
    path = tmp_path / "liar.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    result = invoke("inspect", path, "--format", "json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["max_rank"] == 5 and stats["tensors_above_rank4"] == 2
