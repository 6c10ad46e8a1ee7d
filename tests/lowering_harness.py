"""Differential checks for the lowering: build a rank-5 ONNX graph, lower it, run both in ORT.

Each check asserts (1) every tensor of the lowered graph has rank ≤ 4 after shape inference,
walked independently of edge3d's own lint, and (2) the lowered graph, fed frames, reproduces
the original graph's outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from edge3d.frontend.to_onnx import prepare
from edge3d.layouts import clip_to_frames, frames_to_clip
from edge3d.passes import lower_model

OPSET = 17


def make_model(nodes, inputs, outputs, initializers=(), opset=OPSET):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)  # types the outputs declared without a shape


def tensor(name, array):
    return onnx.numpy_helper.from_array(np.asarray(array, np.float32), name)


def float_input(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def max_rank_after_inference(model) -> int:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    ranks = []
    values = list(inferred.graph.input) + list(inferred.graph.output) + list(inferred.graph.value_info)
    for v in values:
        ranks.append(len(v.type.tensor_type.shape.dim))
    ranks += [len(i.dims) for i in inferred.graph.initializer]
    annotated = {v.name for v in values}
    missing = [o for n in inferred.graph.node for o in n.output if o and o not in annotated]
    assert not missing, f"shape inference left {missing[:5]} unannotated"
    return max(ranks)


def run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def check_lowering(model, feeds: dict, rtol: float = 1e-5, **lower_kwargs):
    """Lower ``model`` and compare; returns the lowered model and its report."""
    onnx.checker.check_model(model)
    original = prepare(model, simplify=False)
    expected = run(original, feeds)
    lowered, report = lower_model(original, **lower_kwargs)
    lowered = prepare(lowered, simplify=True)
    onnx.checker.check_model(lowered)
    assert max_rank_after_inference(lowered) <= 4
    layouts = {name: spec["layout"] for name, spec in report.layouts.items()}
    batches = {name: spec["original_shape"][0] for name, spec in report.layouts.items()}
    lowered_feeds = {k: clip_to_frames(v) if layouts.get(k) == "frames" else v for k, v in feeds.items()}
    got = run(lowered, lowered_feeds)
    for out, want, have in zip(lowered.graph.output, expected, got):
        if layouts.get(out.name) == "frames":
            have = frames_to_clip(have, batches[out.name])
        elif layouts.get(out.name) == "row-major":
            have = have.reshape(report.layouts[out.name]["original_shape"])
        assert have.shape == want.shape, (out.name, have.shape, want.shape)
        error = np.abs(have - want).max(initial=0.0)
        # Relative L2 error, with an absolute floor for outputs that are (nearly) all zeros.
        assert error <= 1e-5 or np.linalg.norm(have - want) / np.linalg.norm(want) <= rtol, (out.name, error)
    return lowered, report
