"""Debug logging of the lowering: `--debug` logs each rule choice to stderr; without it, nothing."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from conftest import invoke
from onnx import TensorProto, helper

from edge3d.passes import lower_model

X_SHAPE = (1, 2, 4, 4, 4)


def _conv3d_model() -> onnx.ModelProto:
    """x (1, 2, 4, 4, 4) → conv1: dense 3x3x3, pad 1, temporal stride 4 (T 4 → 1; its first tap
    reads only padding) → Relu → conv2: depthwise 3x3x3, pad 1 on one frame (two taps dropped)."""
    rng = np.random.default_rng(0)
    w1 = onnx.numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3, 3)).astype(np.float32), "w1")
    w2 = onnx.numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1] * 6, strides=[4, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2", pads=[1] * 6, group=4),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(X_SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "conv3d.onnx"
    onnx.save(_conv3d_model(), path)
    return path


EXPECTED = [  # (logger, text) that --debug must show
    ("edge3d.passes.lower_rank", "graph input x [1, 2, 4, 4, 4] → frames [4, 2, 4, 4]"),
    ("edge3d.passes.rules.conv", "conv1: 1 of 3 temporal taps read only padding"),
    ("edge3d.passes.rules.conv",
     "conv1: general form, 2 temporal taps, strategy gathered (auto: dense kernel, gathered input 0 MiB)"),
    ("edge3d.passes.lower_rank", "conv1 (Conv) lowered by lower_conv: Conv3d → 2 temporal taps gathered"),
    ("edge3d.passes.lower_rank", "relu1 (Relu) lowered by lower_unary: Relu on frames"),
    ("edge3d.passes.rules.conv", "conv2: 2 of 3 temporal taps read only padding"),
    ("edge3d.passes.rules.conv", "conv2: general form, 1 temporal tap, strategy summed (one temporal tap left"),
    ("edge3d.passes.lower_rank", "conv2 (Conv) lowered by lower_conv:"),
    ("edge3d.passes.lower_rank", "graph output y [1, 4, 1, 4, 4] leaves as frames [1, 4, 4, 4]"),
]


def test_debug_logs_each_rule_choice_to_stderr(model_path, tmp_path):
    logger = logging.getLogger("edge3d")
    handlers, level = list(logger.handlers), logger.level
    result = invoke("lower", model_path, "-o", tmp_path / "out.onnx", "--no-simplify", "-q", "--debug")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    for name, text in EXPECTED:
        assert any(line.startswith(f"{name}: {text}") for line in lines), (name, text, result.stderr)
    # The command ends: the stderr handler goes, so later commands in this process log nothing.
    assert logger.handlers == handlers and logger.level == level


def test_without_debug_nothing_is_logged(model_path, tmp_path):
    result = invoke("lower", model_path, "-o", tmp_path / "out.onnx", "--no-simplify", "-q")
    assert result.exit_code == 0, result.output
    assert "edge3d." not in result.stderr
    assert "lowered by" not in result.stderr and "strategy" not in result.stderr


def test_lower_model_logs_at_debug_level(caplog):
    with caplog.at_level(logging.DEBUG, logger="edge3d"):
        lower_model(_conv3d_model(), conv_strategy="summed")
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("edge3d")]
    assert records and all(level == logging.DEBUG for _, level, _ in records)
    messages = [m for _, _, m in records]
    assert "conv1: general form, 2 temporal taps, strategy summed (requested (--conv-strategy))" in messages
    assert sum("lowered by" in m for m in messages) == 3  # conv1, relu1, conv2


def test_lower_model_logs_nothing_above_debug(caplog):
    with caplog.at_level(logging.INFO, logger="edge3d"):
        lower_model(_conv3d_model())
    assert not [r for r in caplog.records if r.name.startswith("edge3d")]
