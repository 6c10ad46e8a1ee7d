"""The structure of every lowered example against its golden op histogram (tests/golden/*.json).

Numerics can pass while a lowering change adds layout round trips; the stored per-op counts catch
that. After an intended change of structure: ``pytest tests/test_golden_structure.py
--update-golden``, then review the diff of tests/golden/*.json.
"""

from __future__ import annotations

import json

import onnx
import pytest
from conftest import EXAMPLE_NAMES
from golden import check_golden, op_histogram
from onnx import TensorProto, helper


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_lowered_example_matches_golden(name, exported, update_golden):
    export = exported(name)
    assert export.result.exit_code == 0, export.result.output
    model = onnx.load(str(export.onnx_path), load_external_data=False)
    check_golden(f"example-{name}", model, update_golden)


# --- check_golden itself, on a hand-built graph ------------------------------------------------

def _tiny_model(extra_transpose: bool = False):
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Relu", ["t"], ["r"])]
    last = "r"
    if extra_transpose:
        nodes.append(helper.make_node("Transpose", ["r"], ["r2"], perm=[0, 1, 2, 3]))
        last = "r2"
    nodes.append(helper.make_node("Relu", [last], ["y"]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_op_histogram_counts_main_graph_sorted():
    histogram = op_histogram(_tiny_model(extra_transpose=True))
    assert histogram == {"Relu": 2, "Transpose": 2}
    assert list(histogram) == sorted(histogram)


def test_check_golden_writes_matches_and_reports_regressions(tmp_path):
    golden = tmp_path / "golden"

    # Missing file, no flag: fails with the hint, writes nothing.
    with pytest.raises(pytest.fail.Exception, match="--update-golden"):
        check_golden("tiny", _tiny_model(), update=False, directory=golden)
    assert not (golden / "tiny.json").exists()

    # update=True writes the file.
    check_golden("tiny", _tiny_model(), update=True, directory=golden)
    assert json.loads((golden / "tiny.json").read_text()) == {"ops": {"Relu": 2, "Transpose": 1}, "total": 3}

    # The same structure passes.
    check_golden("tiny", _tiny_model(), update=False, directory=golden)

    # One more Transpose fails, naming it, saying it went up, and pointing at the flag.
    with pytest.raises(pytest.fail.Exception) as failure:
        check_golden("tiny", _tiny_model(extra_transpose=True), update=False, directory=golden)
    message = str(failure.value)
    assert "Transpose: 1 -> 2" in message and "UP +1" in message
    assert "went UP: Transpose" in message
    assert "total: 3 -> 4" in message
    assert not any(line.strip().startswith("Relu") for line in message.splitlines())  # unchanged: not listed
    assert "--update-golden" in message

    # update=True over a stale file rewrites it, after which the new structure passes.
    check_golden("tiny", _tiny_model(extra_transpose=True), update=True, directory=golden)
    assert json.loads((golden / "tiny.json").read_text())["ops"] == {"Relu": 2, "Transpose": 2}
    check_golden("tiny", _tiny_model(extra_transpose=True), update=False, directory=golden)

    # Fewer nodes is a change of structure too, though nothing went up.
    with pytest.raises(pytest.fail.Exception) as failure:
        check_golden("tiny", _tiny_model(), update=False, directory=golden)
    message = str(failure.value)
    assert "Transpose: 2 -> 1" in message and "down -1" in message
    assert "went UP" not in message and "--update-golden" in message


def test_check_golden_default_directory_can_be_patched(tmp_path, monkeypatch):
    import golden

    monkeypatch.setattr(golden, "GOLDEN_DIR", tmp_path)
    check_golden("tiny", _tiny_model(), update=True)
    assert (tmp_path / "tiny.json").is_file()
    check_golden("tiny", _tiny_model(), update=False)


def test_update_golden_option_defaults_off(update_golden, request):
    assert update_golden is request.config.getoption("--update-golden")
