"""edge3d.onnx_tensors: default_opset and graph_inputs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge3d.onnx_tensors import default_opset, graph_inputs


def _model(opsets, weights_as_inputs=False):
    weight = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2]),
              helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])]
    if weights_as_inputs:  # as exporters before IR version 4 wrote them
        inputs.insert(1, helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 3]))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "y"], ["z"])]
    outputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets])


@pytest.mark.parametrize("opsets, expected", [
    ([("", 17)], 17),
    ([("ai.onnx", 13)], 13),
    ([("com.microsoft", 1), ("", 18)], 18),  # the default domain, wherever it is listed
    ([("ai.onnx.ml", 3), ("com.microsoft", 1)], 0),  # no default domain at all
    ([], 0),
])
def test_default_opset(opsets, expected):
    assert default_opset(_model(opsets)) == expected


@pytest.mark.parametrize("weights_as_inputs", [False, True])
def test_graph_inputs_leave_out_initializers(weights_as_inputs):
    graph = _model([("", 17)], weights_as_inputs).graph
    assert len(graph.input) == (3 if weights_as_inputs else 2)
    assert [v.name for v in graph_inputs(graph)] == ["x", "y"]  # in the graph's order

