"""`edge3d lint` does not trust the file: ranks from fresh shape inference (declarations that
disagree are E3D006), names escaped in text and GitHub annotations, errors on stderr, files that
are not ONNX rejected from their first bytes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import EXAMPLE_NAMES, invoke, stderr_lines
from onnx import TensorProto, helper, numpy_helper

import edge3d.onnx_tensors as onnx_tensors
from edge3d.linting import lint_model

OPSET = [helper.make_opsetid("", 17)]


def _value(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _liar(output_shape=(1, 3, 4, 4)) -> onnx.ModelProto:
    """Unsqueeze -> Relu -> Squeeze on a rank-4 input: 'u' and 'r' are rank 5 at run time, but
    the file's value_info says rank 4."""
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["u"], name="unsqueeze"),
             helper.make_node("Relu", ["u"], ["r"], name="relu"),
             helper.make_node("Squeeze", ["r", "axes"], ["y"], name="squeeze")]
    graph = helper.make_graph(nodes, "liar", [_value("x", [1, 3, 4, 4])], [_value("y", list(output_shape))], [axes],
                              value_info=[_value("u", [1, 3, 4, 4]), _value("r", [1, 3, 4, 4])])
    return helper.make_model(graph, opset_imports=OPSET)


def _rank5_model(names=("x", "h", "y")) -> onnx.ModelProto:
    """Relu -> Relu on a rank-5 input; every tensor is rank 5."""
    x, h, y = names
    nodes = [helper.make_node("Relu", [x], [h], name="first"), helper.make_node("Relu", [h], [y], name="second")]
    graph = helper.make_graph(nodes, "rank5", [_value(x, [1, 3, 2, 4, 4])], [_value(y, [1, 3, 2, 4, 4])])
    return helper.make_model(graph, opset_imports=OPSET)


def _save(model, path):
    onnx.save(model, str(path))
    return path


def _json(*args):
    result = invoke("lint", *args, "--format", "json")
    return result, json.loads(result.stdout)["files"][0]


# --- 1. ranks from fresh inference, declarations cross-checked ---------------------------------------

def test_value_info_that_lies_about_rank_is_caught(tmp_path):
    path = _save(_liar(), tmp_path / "liar.onnx")
    assert onnx.load(str(path)).graph.value_info, "the lie is in the file"
    result, doc = _json(path)
    assert result.exit_code == 1, result.output
    assert {f["name"]: f["rank"] for f in doc["findings"]} == {"u": 5, "r": 5}
    assert all(f["shape_source"] == "inferred" for f in doc["findings"])
    mismatches = {m["name"]: m for m in doc["declared_mismatches"]}
    assert set(mismatches) == {"u", "r"}
    assert mismatches["r"] == {"name": "r", "graph": "main", "declared_in": "value_info", "declared": [1, 3, 4, 4],
                               "inferred": [1, 3, 1, 4, 4], "rule": "E3D006",
                               "message": mismatches["r"]["message"]}
    assert "declared rank 4" in mismatches["r"]["message"] and "rank 5" in mismatches["r"]["message"]

    text = invoke("lint", path)
    assert text.exit_code == 1
    assert sum(" E3D001 " in line for line in text.stdout.splitlines()) == 2
    assert sum(" E3D006 " in line for line in text.stdout.splitlines()) == 2
    sarif = json.loads(invoke("lint", path, "--format", "sarif").stdout)
    rules = {r["id"] for r in sarif["runs"][0]["tool"]["driver"]["rules"]}
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} == {"E3D001", "E3D006"} <= rules
    github = invoke("lint", path, "--format", "github").stdout.splitlines()
    assert sum(",title=edge3d E3D006::" in line for line in github) == 2


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_exporter_declarations_agree_with_inference(name, onnx_5d):
    """What torch.onnx writes (value_info included) never trips E3D006, and inference types every
    tensor: no rank is taken from a declaration alone."""
    result, doc = _json(onnx_5d(name))
    assert result.exit_code == 1 and doc["findings"]
    assert doc["declared_mismatches"] == []
    assert {f["shape_source"] for f in doc["findings"]} <= {"inferred", "initializer", "input"}


def test_declared_output_that_lies_is_a_finding(tmp_path):
    """An output declared rank 4 that is rank 5: its inferred rank counts, the declaration is E3D006."""
    model = _liar()
    del model.graph.node[2]  # no Squeeze: the graph's output is 'r', rank 5
    del model.graph.value_info[:]
    model.graph.output[0].name = "r"
    result, doc = _json(_save(model, tmp_path / "output_liar.onnx"))
    assert result.exit_code == 1
    assert {f["name"]: f["rank"] for f in doc["findings"]} == {"u": 5, "r": 5}
    (mismatch,) = doc["declared_mismatches"]
    assert (mismatch["name"], mismatch["declared_in"], len(mismatch["inferred"])) == ("r", "output", 5)


def test_declared_dim_that_disagrees(tmp_path):
    result, doc = _json(_save(_liar(output_shape=(1, 3, 4, 5)), tmp_path / "dim.onnx"))
    assert result.exit_code == 1
    assert {(m["name"], m["declared_in"]) for m in doc["declared_mismatches"]} >= {("y", "output")}
    # a symbolic dim is a name, not a fact: no disagreement
    model = _liar()
    del model.graph.value_info[:]
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    result, doc = _json(_save(model, tmp_path / "symbolic.onnx"))
    assert doc["declared_mismatches"] == []
    assert {f["name"] for f in doc["findings"]} == {"u", "r"}


def test_value_info_that_lies_in_a_subgraph():
    def branch(name, lie):
        axes = numpy_helper.from_array(np.array([2], np.int64))
        nodes = [helper.make_node("Constant", [], [f"{name}_axes"], value=axes),
                 helper.make_node("Unsqueeze", ["x", f"{name}_axes"], [f"{name}_u"]),
                 helper.make_node("Relu", [f"{name}_u"], [f"{name}_r"]),
                 helper.make_node("Squeeze", [f"{name}_r", f"{name}_axes"], [f"{name}_y"])]
        return helper.make_graph(nodes, name, [], [_value(f"{name}_y", None)],
                                 value_info=[_value(f"{name}_r", [1, 3, 4, 4])] if lie else [])

    node = helper.make_node("If", ["c"], ["y"], name="choose", then_branch=branch("then", True),
                            else_branch=branch("else", False))
    graph = helper.make_graph([node], "if", [_value("c", [], TensorProto.BOOL), _value("x", [1, 3, 4, 4])],
                              [_value("y", [1, 3, 4, 4])])
    result = lint_model(helper.make_model(graph, opset_imports=OPSET))
    assert {(t.graph, t.name) for t in result.findings} == {
        (f"main/choose.{b}_branch", f"{b}_{t}") for b in ("then", "else") for t in ("u", "r")}
    (mismatch,) = result.mismatches
    assert (mismatch.graph, mismatch.name, mismatch.inferred) == ("main/choose.then_branch", "then_r", [1, 3, 1, 4, 4])


def test_declaration_used_where_inference_cannot_type(tmp_path):
    """A custom-domain op shape inference knows nothing of: the file's declaration is the only
    source of its output's rank, and is used (marked as declared)."""
    nodes = [helper.make_node("Mystery", ["x"], ["m"], name="mystery", domain="com.example"),
             helper.make_node("Relu", ["m"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "custom", [_value("x", [1, 3, 4, 4])], [_value("y", None)],
                              value_info=[_value("m", [1, 3, 2, 4, 4])])
    model = helper.make_model(graph, opset_imports=OPSET + [helper.make_opsetid("com.example", 1)])
    path = _save(model, tmp_path / "custom.onnx")
    result, doc = _json(path)
    assert result.exit_code == 1
    findings = {f["name"]: f for f in doc["findings"]}
    assert findings["m"]["rank"] == 5 and findings["m"]["shape_source"] == "declared"
    assert doc["declared_mismatches"] == [] and doc["declared_rank_only"] == ["m"]
    text = invoke("lint", path).stdout
    assert "note: rank of 'm' from mystery (Mystery) is taken from the file's declaration" in text


def test_inference_that_fails_still_lints(monkeypatch):
    """Shape inference that raises: the graph's own declarations are all there is, and they are
    said to be; the model is left as it was."""
    def fail(*_args, **_kwargs):
        raise RuntimeError("inference failed")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", fail)
    model = _rank5_model()
    model.graph.value_info.append(_value("h", [1, 3, 2, 4, 4]))
    before = model.SerializeToString()
    result = lint_model(model)
    assert {t.name: t.shape_source for t in result.findings} == {"x": "input", "h": "declared", "y": "declared"}
    assert {t.name for t in result.from_declaration} == {"h", "y"} and not result.mismatches
    assert model.SerializeToString() == before


def test_lint_model_leaves_the_model_as_it_was():
    model = _liar()
    before = model.SerializeToString()
    result = lint_model(model)
    assert {t.name for t in result.findings} == {"u", "r"} and len(result.mismatches) == 2
    assert model.SerializeToString() == before


def test_initializer_that_contradicts_its_input_declaration(tmp_path):
    """Old exporters list weights as graph inputs too: the initializer's dims are the truth."""
    weight = numpy_helper.from_array(np.ones((2, 3, 1, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Add", ["x", "w"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "old", [_value("x", [2, 3, 1, 1, 1]), _value("w", [2, 3])],
                              [_value("y", [2, 3, 1, 1, 1])], [weight])
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 3
    model.opset_import[0].version = 9
    _, doc = _json(_save(model, tmp_path / "old.onnx"), "--max-rank", "5")
    (mismatch,) = [m for m in doc["declared_mismatches"] if m["name"] == "w"]
    assert (mismatch["name"], mismatch["declared_in"], mismatch["inferred"]) == ("w", "input", [2, 3, 1, 1, 1])
    assert "its initializer" in mismatch["message"]


# --- 2. escaping: GitHub workflow commands and text ----------------------------------------------------

INJECTION = "evil\n::error file=README.md,title=forged::pwned,x.onnx"


def _gh_property(text: str) -> str:  # GitHub's escaping, written out independently
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A").replace(":", "%3A").replace(",", "%2C")


def test_github_annotations_escape_the_file_name(tmp_path):
    path = _save(_rank5_model(), tmp_path / INJECTION)
    result = invoke("lint", path, "--format", "github")
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    prefix = f"::error file={_gh_property(str(path))},title=edge3d E3D001 rank 5::"
    assert len(lines) == 3 and all(line.startswith(prefix) for line in lines), lines
    assert {line[len(prefix):].split("'")[1] for line in lines} == {"x", "h", "y"}
    assert not any("README.md," in line or line.startswith("::error file=README") for line in lines)


def test_github_error_annotation_and_stderr_are_escaped(tmp_path):
    path = tmp_path / ("bad%" + INJECTION)
    path.write_bytes(b"PK\x03\x04" + bytes(64))
    result = invoke("lint", path, "--format", "github")
    assert result.exit_code == 2
    (line,) = result.stdout.splitlines()  # the name's newline is %0A: no second command
    assert line.startswith(f"::error file={_gh_property(str(path))},title=edge3d::")
    (err,) = stderr_lines(result)
    assert err.startswith("edge3d: error: ") and "\\n::error file=README.md" in err


def test_github_messages_escape_tensor_names(tmp_path):
    path = _save(_rank5_model(("x", "h\r\n::warning::forged,%", "y")), tmp_path / "names.onnx")
    lines = invoke("lint", path, "--format", "github").stdout.splitlines()
    assert len(lines) == 3
    (line,) = [line for line in lines if "forged" in line]
    assert "h%0D%0A::warning::forged,%25" in line.split("::", 2)[2]


def test_text_escapes_control_characters(tmp_path):
    evil = "h\x1b[31m\nnext\u202eline"
    path = _save(_rank5_model(("x", evil, "y")), tmp_path / "ctl\x1b[2J\nfile.onnx")
    result = invoke("lint", path)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 4  # three findings and the verdict, nothing split
    assert not any(c in result.stdout for c in "\x1b\r\u202e")
    escaped = str(path).replace("\x1b", "\\x1b").replace("\n", "\\n")
    assert all(line.startswith(f"{escaped}: ") for line in lines)
    assert sum("'h\\x1b[31m\\nnext\\u202eline'" in line for line in lines) == 1


# --- 3. errors on stderr, the report on stdout ----------------------------------------------------------

@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "github"])
@pytest.mark.parametrize("to_file", [False, True])
def test_errors_go_to_stderr(tmp_path, fmt, to_file):
    good = _save(_rank5_model(), tmp_path / "good.onnx")
    missing = tmp_path / "missing.onnx"
    out = tmp_path / "report.txt"
    result = invoke("lint", good, missing, "--format", fmt, *(["-o", out] if to_file else []))
    assert result.exit_code == 2
    (err,) = stderr_lines(result)
    assert err.startswith("edge3d: error: ") and str(missing) in err
    report = out.read_text() if to_file else result.stdout
    if to_file:
        assert result.stdout == ""
    if fmt == "text":
        assert ": error:" not in report and str(missing) not in report
        assert f"{good}: 3 tensor(s) above rank 4" in report
    elif fmt == "json":
        assert [f["exit_code"] for f in json.loads(report)["files"]] == [1, 2]


# --- 5. not ONNX: rejected from the first bytes ---------------------------------------------------------

class _CountingOpen:
    """Stands in for ``open`` in edge3d.onnx_tensors and counts the bytes read."""

    def __init__(self):
        self.read = 0

    def __call__(self, *args, **kwargs):
        return _CountingFile(open(*args, **kwargs), self)


class _CountingFile:
    def __init__(self, f, counter):
        self._f, self._counter = f, counter

    def read(self, n=-1):
        data = self._f.read(n)
        self._counter.read += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def counted(monkeypatch):
    counter = _CountingOpen()
    monkeypatch.setattr(onnx_tensors, "open", counter, raising=False)

    def no_load(*_args, **_kwargs):
        raise AssertionError("onnx.load was called on a file that is not ONNX")

    monkeypatch.setattr(onnx, "load", no_load)
    return counter


HEADERS = {
    "zip": b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
    "pickle": b"\x80\x04\x95\x00\x10\x00\x00\x00\x00\x00\x00",
    "torch-zip": b"PK\x03\x04\x00\x00\x08\x08\x00\x00",
    "text": b"ir_version: 8\nproducer_name: 'x'\n",
    "gzip": b"\x1f\x8b\x08\x00",
    "random": b"\x17",
}


@pytest.mark.parametrize("kind", sorted(HEADERS))
def test_big_file_that_is_not_onnx(tmp_path, counted, kind):
    path = tmp_path / f"{kind}.onnx"
    path.write_bytes(HEADERS[kind] + np.random.default_rng(0).bytes(4 << 20))
    result = invoke("lint", path, "--format", "json")
    assert result.exit_code == 2
    (err,) = stderr_lines(result)
    assert f"{path} is not a readable ONNX model (" in err
    assert counted.read < 64, f"read {counted.read} bytes of a {path.stat().st_size}-byte file"


def test_truncated_model_is_rejected(tmp_path, counted):
    data = _liar().SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) - 10])
    result = invoke("lint", path)
    assert result.exit_code == 2
    assert "runs past the end of the file" in result.stderr


def test_real_model_is_read_past_the_check(tmp_path, monkeypatch):
    counter = _CountingOpen()
    monkeypatch.setattr(onnx_tensors, "open", counter, raising=False)
    model = _rank5_model()
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((256, 256), np.float32), "unused"))
    model.doc_string = "d" * 1000
    path = _save(model, tmp_path / "real.onnx")
    assert onnx_tensors.protobuf_problem(path) is None
    assert counter.read < 64  # the headers only; the graph and doc string are skipped by seeking
    assert invoke("lint", path).exit_code == 1


def _tag(number: int, wire: int) -> bytes:
    key = number << 3 | wire
    return bytes([key]) if key < 0x80 else bytes([key & 0x7F | 0x80, key >> 7])


def test_protobuf_problem_on_every_first_field(tmp_path):
    path = tmp_path / "m.onnx"
    for number, wire in onnx_tensors.MODEL_FIELDS.items():
        payload = b"\x01" if wire == 0 else b"\x00"
        path.write_bytes(_tag(number, wire) + payload)
        assert onnx_tensors.protobuf_problem(path) is None, number
        path.write_bytes(_tag(number, 2 - wire) + payload)  # the other wire type
        assert onnx_tensors.protobuf_problem(path) is not None, number
    path.write_bytes(_tag(9, 0) + b"\x01")  # not a ModelProto field
    assert "do not start an ONNX protobuf" in onnx_tensors.protobuf_problem(path)
    path.write_bytes(b"")
    assert onnx_tensors.protobuf_problem(path) == "the file is empty"
