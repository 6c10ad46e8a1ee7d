"""`edge3d --help` and `edge3d lint` start without torch: the command line's option choices come
from light modules (edge3d.choices, edge3d.blocks.names) that agree with the registries they name."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
from conftest import REPO
from onnx import TensorProto, helper

# Runs the CLI in a fresh interpreter and reports, on its last stderr line, the exit code and
# which heavy modules were imported.
PROBE = """
import json, sys
from edge3d.cli import main
code = 0
try:
    main(sys.argv[1:], prog_name="edge3d")
except SystemExit as exc:
    code = exc.code
heavy = [m for m in ("torch", "torchvision", "onnx_ir", "onnxruntime", "onnxscript", "onnxsim", "numpy", "onnx")
         if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def _probe(*args) -> tuple[int, list[str], subprocess.CompletedProcess]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return report["code"], report["heavy"], proc


@pytest.fixture
def small_model(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    path = tmp_path / "small.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("args", [["--help"], ["lint", "--help"], ["export", "--help"], ["bench", "--help"]])
def test_help_imports_nothing_heavy(args):
    code, heavy, proc = _probe(*args)
    assert code == 0, proc.stderr
    assert heavy == [], f"`edge3d {' '.join(args)}` imported {heavy}"
    if args[0] == "export":
        assert "Blocks: st-add, st-cat" in proc.stdout


@pytest.mark.parametrize("fmt", ["text", "github"])
def test_lint_does_not_import_torch(small_model, tmp_path, fmt):
    code, heavy, proc = _probe("lint", small_model, "--format", fmt, "--target", "npu")
    assert code == 0, proc.stdout + proc.stderr
    assert "onnx" in heavy  # it did read the model
    assert not {"torch", "torchvision", "onnx_ir", "onnxruntime", "onnxscript", "onnxsim"} & set(heavy), heavy
    code, heavy, _ = _probe("lint", tmp_path / "missing.onnx")
    assert code == 2 and "torch" not in heavy


def test_block_names_match_the_registry():
    from edge3d.blocks import BLOCKS, STRIDE_MODES, names, structures

    assert tuple(BLOCKS) == names.BLOCK_NAMES
    assert STRIDE_MODES is names.STRIDE_MODES is structures.STRIDE_MODES


def test_choices_are_the_modules_constants():
    from edge3d import choices
    from edge3d.frontend import to_onnx
    from edge3d.verify import TOLERANCES

    assert tuple(TOLERANCES) == choices.PRECISIONS
    assert (to_onnx.DEFAULT_OPSET, to_onnx.MIN_OPSET, to_onnx.MAX_OPSET) == (
        choices.DEFAULT_OPSET, choices.MIN_OPSET, choices.MAX_OPSET)
    assert choices.MIN_OPSET <= choices.DEFAULT_OPSET <= choices.MAX_OPSET
    assert choices.CONV_STRATEGIES[0] == "auto"
