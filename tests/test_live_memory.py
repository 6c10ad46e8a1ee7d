"""The activation memory model (``passes/live_memory``) and what the Conv3d lowering does with it."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from lowering_harness import check_lowering, float_input, make_model
from onnx import helper, numpy_helper
from test_lower_conv import conv_model

from edge3d.frontend.to_onnx import prepare
from edge3d.passes import lower_model
from edge3d.passes.live_memory import live_memory, live_memory_of, value_bytes
from edge3d.passes.rules.conv import CHUNK_BUDGET, PEAK_RATIO

MiB = 2**20


def _chain(shape=(1, 4, 8, 8)):
    """x → Relu a → Reshape v (a view of a) → Relu b → Add(b, v) y; every tensor ``shape``-sized."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu_a"),
        helper.make_node("Reshape", ["a", "s"], ["v"], name="view"),
        helper.make_node("Relu", ["v"], ["b"], name="relu_b"),
        helper.make_node("Add", ["b", "v"], ["y"], name="add"),
    ]
    model = make_model(nodes, [float_input("x", shape)], [helper.make_tensor_value_info("y", 1, None)],
                       [numpy_helper.from_array(np.array(shape, dtype=np.int64), "s")])
    return onnx.shape_inference.infer_shapes(model)


def test_bytes_alive_after_each_node_with_views_sharing_their_input():
    size = 4 * 4 * 8 * 8  # float32 × (1, 4, 8, 8)
    memory = live_memory_of(_chain())
    after = {node.name: total for node, total in memory.after.items()}
    # x dies after relu_a; the view costs nothing and keeps a alive until add has run.
    assert after == {"relu_a": 2 * size, "view": size, "relu_b": 2 * size, "add": 3 * size}
    assert memory.peak == 3 * size and memory.at == "add"
    assert memory.to_dict() == {"peak_bytes": 3 * size, "at": "add"}


def test_weights_and_untyped_values_are_not_counted():
    graph = ir.from_proto(_chain()).graph
    assert live_memory(graph).peak == 3 * 4 * 4 * 8 * 8  # the shape tensor s is a weight
    assert value_bytes(ir.Value(name="untyped")) == 0
    assert value_bytes(ir.Value(name="symbolic", type=ir.TensorType(ir.DataType.FLOAT16),
                                shape=ir.Shape(["batch", 3, 4]))) == 2 * 3 * 4  # unknown dims as 1


def _dense_conv(frames=16, channels=16, size=64):
    """A 3×3×3 Conv3d, ``channels`` in and out, on 1×C×T×size×size. At the defaults (4 MiB per
    clip) the gathered input is 12 MiB, under the 16 MiB size budget, but beside the layer's
    input and output it would take the activations to about 2.6× the 5D model's peak."""
    cfg = dict(batch=1, cin=channels, cout=channels, group=1, dims=[frames, size, size], kernel=[3, 3, 3],
               strides=[1, 1, 1], dilations=[1, 1, 1], auto_pad="NOTSET", pads=[1] * 6, bias=True, seed=3)
    return conv_model(cfg)


def _lowered_peak(lowered) -> int:
    return live_memory_of(onnx.shape_inference.infer_shapes(lowered)).peak


def test_a_conv3d_whose_gathered_taps_would_set_the_peak_is_chunked():
    lowered, report = check_lowering(*_dense_conv())
    assert "output frames at a time" in report.lowered[0]["rule"]
    original = report.activation_memory["original"]["peak_bytes"]
    assert original == 2 * 4 * MiB  # input and output
    assert _lowered_peak(lowered) <= original + CHUNK_BUDGET  # one chunk's working set beyond it at most


def test_the_same_layer_gathered_by_request_passes_the_peak():
    """What the test above avoids: gathering this layer does cost the memory the model predicts."""
    lowered, report = check_lowering(*_dense_conv(), conv_strategy="gathered")
    assert "gathered into channels" in report.lowered[0]["rule"]
    assert _lowered_peak(lowered) > 2 * report.activation_memory["original"]["peak_bytes"]


def test_where_activations_are_large_the_lowered_peak_stays_within_the_ratio():
    """16 MiB clips in and out: the chunks are sized to the headroom under 1.2× the 5D peak
    (chunks of 4 MiB per tap, the size budget alone, would reach 1.25×)."""
    model, _ = _dense_conv(channels=64)
    lowered, report = lower_model(prepare(model, simplify=False))
    original = report.activation_memory["original"]["peak_bytes"]
    assert original == 2 * 16 * MiB
    assert "output frames at a time" in report.lowered[0]["rule"]
    assert _lowered_peak(prepare(lowered, simplify=True)) <= PEAK_RATIO * original


def test_small_gathered_taps_stay_gathered_whatever_the_ratio():
    """Below a chunk's size the chunked form's own taps take as much: a small layer keeps the
    faster gathered form although its taps triple its tiny activations."""
    _, report = check_lowering(*_dense_conv(frames=2))
    assert "gathered into channels" in report.lowered[0]["rule"]


def test_a_depthwise_conv3d_whose_summed_taps_would_set_the_peak_is_chunked():
    """Depthwise kernels are summed under auto (gathering them is slower), but the summed form
    holds a padded copy of the clip and a tap beside it; where that passes the allowed peak, the
    taps are chunked instead."""
    cfg = dict(batch=1, cin=64, cout=64, group=64, dims=[16, 64, 64], kernel=[3, 3, 3], strides=[1, 1, 1],
               dilations=[1, 1, 1], auto_pad="NOTSET", pads=[1] * 6, bias=False, seed=4)
    lowered, report = lower_model(prepare(conv_model(cfg)[0], simplify=False))
    assert "output frames at a time" in report.lowered[0]["rule"]
    original = report.activation_memory["original"]["peak_bytes"]
    assert _lowered_peak(prepare(lowered, simplify=True)) <= PEAK_RATIO * original
    small = dict(cfg, dims=[4, 16, 16])
    _, report = check_lowering(*conv_model(small))
    assert report.lowered[0]["rule"].endswith("summed")


def test_a_gpu_profile_keeps_one_kernel_per_conv3d_under_auto():
    """A profile with ``chunked_conv = false`` (the Jetson GPUs): where auto would chunk for
    memory, a dense layer is gathered and a depthwise one summed instead; an explicit request
    for chunks still gets them."""
    from edge3d.targets import load_target

    assert load_target("jetson").lowering["chunked_conv"] is False
    assert load_target("x86").lowering.get("chunked_conv", True)
    lowered, report = check_lowering(*_dense_conv(), chunk_convs=False)
    assert "gathered into channels" in report.lowered[0]["rule"]
    cfg = dict(batch=1, cin=64, cout=64, group=64, dims=[16, 64, 64], kernel=[3, 3, 3], strides=[1, 1, 1],
               dilations=[1, 1, 1], auto_pad="NOTSET", pads=[1] * 6, bias=False, seed=4)
    _, report = lower_model(prepare(conv_model(cfg)[0], simplify=False), chunk_convs=False)
    assert report.lowered[0]["rule"].endswith("summed")
    _, report = check_lowering(*_dense_conv(), conv_strategy="chunked", chunk_convs=False)
    assert "output frames at a time" in report.lowered[0]["rule"]
