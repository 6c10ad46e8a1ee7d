"""`edge3d lint`: every tensor above --max-rank is found, in every report format."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from conftest import EXAMPLE_NAMES, independent_high_rank, invoke, stderr_lines
from onnx import TensorProto, helper, numpy_helper


def _conv_model(spatial: int, batch="N", channels=3) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten on a (batch, C, *spatial) input, built by hand;
    the intermediate shapes are left to shape inference."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal([8, channels] + [3] * spatial).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv_out"], name="conv", pads=[1] * (2 * spatial)),
        helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu_out"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["y"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels] + [4] * spatial)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture
def rank4_model(tmp_path):
    path = tmp_path / "conv2d.onnx"
    onnx.save(_conv_model(2, batch=1), path)
    return path


def _lint_json(*args):
    result = invoke("lint", *args, "--format", "json")
    return result, json.loads(result.stdout)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_lint_finds_every_high_rank_tensor(name, onnx_5d):
    path = onnx_5d(name)
    expected = independent_high_rank(onnx.load(str(path)))
    assert expected, "the plain export of a Conv3d model has rank-5 tensors"

    text = invoke("lint", path)
    assert text.exit_code == 1
    assert f"{len(expected)} tensor(s) above rank 4" in text.stdout
    assert sum(" E3D001 " in line for line in text.stdout.splitlines()) == len(expected)

    result, doc = _lint_json(path)
    assert result.exit_code == 1
    (file_report,) = doc["files"]
    assert file_report["exit_code"] == 1 and file_report["error"] is None
    findings = file_report["findings"]
    assert len(findings) == len(expected)
    assert {f["name"]: f["rank"] for f in findings} == expected


@pytest.mark.parametrize("name", ["c3d", "shufflenet3d"])
def test_json_findings_carry_name_shape_producer(name, onnx_5d):
    path = onnx_5d(name)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), data_prop=True)
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    initializers = {i.name: list(i.dims) for i in model.graph.initializer}
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)}
    _, doc = _lint_json(path)
    findings = doc["files"][0]["findings"]
    assert {f["name"] for f in findings} == set(independent_high_rank(model))
    for f in findings:
        assert f["shape"] == (initializers | shapes)[f["name"]]  # what shape inference gives it
        assert len(f["shape"]) == f["rank"] > 4
        if f["name"] in producers:
            assert f["producer"]["op"] == producers[f["name"]]
            assert f["producer"]["name"]
        else:  # a weight or a graph input has no producing node
            assert f["producer"] is None
            assert f["name"] in initializers or f["kind"] == "input"
        if f["name"] in initializers:
            assert f["shape"] == initializers[f["name"]]
    assert any(f["producer"] and f["producer"]["op"] == "Conv" for f in findings)
    assert any(f["kind"] == "input" and f["name"] == "clip" for f in findings)


def test_sarif(onnx_5d):
    path = onnx_5d("c3d")
    expected = independent_high_rank(onnx.load(str(path)))
    result = invoke("lint", path, "--format", "sarif")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["version"] == "2.1.0"
    (run,) = doc["runs"]
    assert run["tool"]["driver"]["name"] == "edge3d"
    assert len(run["results"]) == len(expected)
    assert {r["properties"]["name"] for r in run["results"]} == set(expected)
    rule_ids = {rule["id"] for rule in run["tool"]["driver"]["rules"]}
    for r in run["results"]:
        assert r["ruleId"] in rule_ids and r["level"] == "error" and r["message"]["text"]
        assert r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == str(path)


def test_github_annotations(onnx_5d):
    path = onnx_5d("r3d18")
    expected = independent_high_rank(onnx.load(str(path)))
    result = invoke("lint", path, "--format", "github")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    errors = [line for line in lines if line.startswith(f"::error file={path},")]
    assert len(errors) == len(expected)
    assert all(line.startswith("::") for line in lines)


def test_report_to_file(onnx_5d, tmp_path):
    path = onnx_5d("c3d")
    report = tmp_path / "lint.json"
    result = invoke("lint", path, "--format", "json", "-o", report)
    assert result.exit_code == 1
    assert result.stdout == ""
    doc = json.loads(report.read_text())
    assert len(doc["files"][0]["findings"]) == len(independent_high_rank(onnx.load(str(path))))


def test_rank4_model_is_clean(rank4_model):
    result = invoke("lint", rank4_model)
    assert result.exit_code == 0, result.output
    # one line: the file, no finding, and every tensor (x, w, conv_out, relu_out, pooled, y) checked
    assert re.fullmatch(rf"{re.escape(str(rank4_model))}: no tensor above rank 4; 6 tensors checked in \d+\.\d\ds\n",
                        result.stdout), result.stdout
    assert "E3D" not in result.stdout
    _, doc = _lint_json(rank4_model)
    assert doc["files"][0]["findings"] == []
    sarif = json.loads(invoke("lint", rank4_model, "--format", "sarif").stdout)
    assert sarif["runs"][0]["results"] == []
    assert invoke("lint", rank4_model, "--format", "github").stdout.strip() == ""


@pytest.mark.slow
def test_exported_bundle_is_clean(exported):
    """What `edge3d export` writes is the rank-4 model: lint passes on it."""
    export = exported("x3d", "pt")
    assert export.result.exit_code == 0, export.result.output
    result = invoke("lint", export.onnx_path)
    assert result.exit_code == 0, result.output


def test_rank5_conv_at_max_rank_5(tmp_path):
    path = tmp_path / "conv3d.onnx"
    onnx.save(_conv_model(3, batch=1), path)
    assert invoke("lint", path).exit_code == 1
    assert invoke("lint", path, "--max-rank", "5").exit_code == 0


def test_max_rank_5_on_examples(onnx_5d):
    c3d = onnx_5d("c3d")
    assert max(independent_high_rank(onnx.load(str(c3d))).values()) == 5
    result = invoke("lint", c3d, "--max-rank", "5")
    assert result.exit_code == 0, result.output

    # The channel shuffle of shufflenet3d reshapes to rank 6: still a finding at --max-rank 5.
    shuffle = onnx_5d("shufflenet3d")
    expected = independent_high_rank(onnx.load(str(shuffle)), max_rank=5)
    assert expected and set(expected.values()) == {6}
    result, doc = _lint_json(shuffle, "--max-rank", "5")
    assert result.exit_code == 1
    assert {f["name"]: f["rank"] for f in doc["files"][0]["findings"]} == expected
    assert invoke("lint", shuffle, "--max-rank", "6").exit_code == 0


def test_several_files(onnx_5d, rank4_model):
    a, b = onnx_5d("c3d"), onnx_5d("slowfast")
    result, doc = _lint_json(a, rank4_model, b)
    assert result.exit_code == 1
    assert [f["path"] for f in doc["files"]] == [str(a), str(rank4_model), str(b)]
    assert [f["exit_code"] for f in doc["files"]] == [1, 0, 1]
    for f, path in ((doc["files"][0], a), (doc["files"][2], b)):
        assert len(f["findings"]) == len(independent_high_rank(onnx.load(str(path))))
    text = invoke("lint", a, rank4_model, b)
    assert text.exit_code == 1
    assert str(a) in text.stdout and str(b) in text.stdout and str(rank4_model) in text.stdout


@pytest.mark.parametrize("bad", ["missing", "garbage", "empty"])
@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "github"])
def test_unreadable_file_among_several(onnx_5d, rank4_model, tmp_path, bad, fmt):
    unreadable = tmp_path / f"{bad}.onnx"
    if bad == "garbage":
        unreadable.write_bytes(b"\x17" + np.random.default_rng(1).bytes(2048))
    elif bad == "empty":
        unreadable.write_bytes(b"")
    result = invoke("lint", onnx_5d("c3d"), unreadable, rank4_model, "--format", fmt)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert str(unreadable) in result.output
    lines = stderr_lines(result)  # the error on stderr in every format, once
    assert len(lines) == 1 and lines[0].startswith("edge3d: error: ") and str(unreadable) in lines[0]
    if fmt == "text":
        assert str(unreadable) not in result.stdout
    if fmt == "json":
        doc = json.loads(result.stdout)
        assert [f["exit_code"] for f in doc["files"]] == [1, 2, 0]
    if fmt == "sarif":
        doc = json.loads(result.stdout)
        assert any(r["ruleId"] == "E3D000" for r in doc["runs"][0]["results"])


def test_clean_and_unreadable_is_exit_2(rank4_model, tmp_path):
    result = invoke("lint", rank4_model, tmp_path / "nope.onnx")
    assert result.exit_code == 2


def test_symbolic_batch_dim(tmp_path):
    path = tmp_path / "dynamic.onnx"
    model = _conv_model(3, batch="N")
    onnx.save(model, path)
    expected = independent_high_rank(model)
    assert set(expected) == {"x", "w", "conv_out", "relu_out", "pooled"}
    result, doc = _lint_json(path)
    assert result.exit_code == 1
    findings = {f["name"]: f for f in doc["files"][0]["findings"]}
    assert set(findings) == set(expected)
    for name in ("x", "conv_out", "relu_out", "pooled"):
        assert findings[name]["shape"][0] == "N"
        assert findings[name]["rank"] == 5
    assert findings["conv_out"]["shape"] == ["N", 8, 4, 4, 4]

    clean = tmp_path / "dynamic2d.onnx"
    onnx.save(_conv_model(2, batch="N"), clean)
    assert invoke("lint", clean).exit_code == 0


def test_symbolic_batch_on_example(onnx_5d, tmp_path):
    """An example export whose batch dim is made symbolic still gets the same findings."""
    model = onnx.load(str(onnx_5d("c3d")))
    fixed = independent_high_rank(model)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    path = tmp_path / "c3d_dynamic.onnx"
    onnx.save(model, path)
    result, doc = _lint_json(path)
    assert result.exit_code == 1
    findings = doc["files"][0]["findings"]
    assert {f["name"] for f in findings} == set(fixed)
    assert [f["shape"][0] for f in findings if f["kind"] == "input"] == ["N"]


def _external(onnx_5d, tmp_path, name="r3d18"):
    model = onnx.load(str(onnx_5d(name)))
    expected = independent_high_rank(model)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=f"{name}.onnx.data", size_threshold=0)
    data = tmp_path / f"{name}.onnx.data"
    assert data.stat().st_size > path.stat().st_size  # the weights really are outside
    return path, data, expected


def test_external_data(onnx_5d, tmp_path):
    path, _, expected = _external(onnx_5d, tmp_path)
    result, doc = _lint_json(path)
    assert result.exit_code == 1
    assert {f["name"]: f["rank"] for f in doc["files"][0]["findings"]} == expected


def test_external_data_file_deleted(onnx_5d, tmp_path):
    """Ranks come from the graph: the weights file is never read."""
    path, data, expected = _external(onnx_5d, tmp_path)
    data.unlink()
    result, doc = _lint_json(path)
    assert result.exit_code == 1, result.output
    assert doc["files"][0]["error"] is None
    assert {f["name"]: f["rank"] for f in doc["files"][0]["findings"]} == expected
    assert not data.exists()


def test_lint_without_files():
    result = invoke("lint")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
