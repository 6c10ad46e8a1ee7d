"""Nodes with no rank-4 rule: all reported at once, nothing written; --allow-rank5 keeps them."""

from __future__ import annotations

import json

import onnx
from conftest import invoke, stderr_lines
from lowering_harness import float_input, make_model
from onnx import helper

SHAPE = (1, 2, 4, 6, 6)


def two_unsupported(path):
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("LpPool", ["r"], ["p1"], name="lp_a", kernel_shape=[2, 2, 2]),
        helper.make_node("LpPool", ["r"], ["p2"], name="lp_b", kernel_shape=[1, 2, 2]),
        helper.make_node("ReduceMean", ["p1"], ["m1"], name="mean_a", axes=[2, 3, 4], keepdims=0),
        helper.make_node("ReduceMean", ["p2"], ["m2"], name="mean_b", axes=[2, 3, 4], keepdims=0),
        helper.make_node("Add", ["m1", "m2"], ["y"], name="add"),
    ]
    model = make_model(nodes, [float_input("x", SHAPE)], [helper.make_tensor_value_info("y", 1, None)])
    onnx.save(model, path)
    return path


def test_all_unsupported_nodes_are_named_and_nothing_is_written(tmp_path):
    src = two_unsupported(tmp_path / "m.onnx")
    out = tmp_path / "bundle"
    result = invoke("export", src, "-o", out)
    assert result.exit_code == 1
    lines = stderr_lines(result)
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "2 node(s) have no rank-4 lowering" in lines[0]
    assert "lp_a (LpPool; inputs [1, 2, 4, 6, 6])" in lines[0] and "lp_b (LpPool" in lines[0]
    assert "--allow-rank5" in lines[0]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]

    low = tmp_path / "low.onnx"
    result = invoke("lower", src, "-o", low)
    assert result.exit_code == 1 and not low.exists()


def test_allow_rank5_writes_partial_result_and_lists_findings(tmp_path):
    src = two_unsupported(tmp_path / "m.onnx")
    out = tmp_path / "bundle"
    result = invoke("export", src, "-o", out, "--allow-rank5")
    assert result.exit_code == 0, result.output
    assert "E3D001" in result.stdout and "lp_a" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["max_rank"] == 5
    assert {u["name"] for u in manifest["rewrite"]["unsupported"]} == {"lp_a", "lp_b"}
    assert manifest["verification"]["passed"]
    # The lowered parts are rank 4: the Relu before the LpPools now runs on frames.
    model = onnx.load(out / "model.onnx")
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [4, 2, 6, 6]


def test_a_custom_domain_op_is_reported_with_its_domain(tmp_path):
    """``my.custom::Relu`` is not the standard Relu: no rule lowers it, and the line says why."""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="custom_relu", domain="my.custom")]
    graph = helper.make_graph(nodes, "g", [float_input("x", SHAPE)], [float_input("y", SHAPE)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.custom", 1)])
    model.ir_version = 8
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    result = invoke("lower", src, "-o", tmp_path / "low.onnx")
    assert result.exit_code == 1
    (line,) = stderr_lines(result)
    assert "custom_relu (my.custom::Relu; inputs [1, 2, 4, 6, 6])" in line and "domain 'my.custom'" in line
    assert not (tmp_path / "low.onnx").exists()
