"""Every lowering rule besides Conv, each against ONNX Runtime on the rank-5 original."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from lowering_harness import check_lowering, float_input, make_model, tensor
from onnx import TensorProto, helper
from test_lower_norms import clip as norm_clip
from test_lower_norms import conv_then

SHAPE = (2, 3, 4, 5, 6)  # B, C, T, H, W


def clip(shape=SHAPE, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def single(op, attrs=None, inputs=("x",), inits=(), shape=SHAPE, opset=17, extra_inputs=()):
    node = helper.make_node(op, list(inputs), ["y"], **(attrs or {}))
    model = make_model([node], [float_input("x", shape), *extra_inputs], [helper.make_tensor_value_info("y", 1, None)],
                       inits, opset=opset)
    return model


def ints(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], list(values))


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["MaxPool", "AveragePool"]), kernel=st.tuples(*[st.integers(1, 3)] * 3),
       strides=st.tuples(*[st.integers(1, 3)] * 3), dil=st.tuples(*[st.integers(1, 2)] * 3),
       data=st.data(), ceil=st.booleans(), include_pad=st.booleans())
def test_random_pool3d(kind, kernel, strides, dil, data, ceil, include_pad):
    pads = [data.draw(st.integers(0, k - 1)) for k in kernel] * 2
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=pads, ceil_mode=int(ceil))
    if kind == "AveragePool":
        attrs["count_include_pad"] = int(include_pad)
        dil = (1, 1, 1)  # dilated AveragePool needs opset 19
    else:
        attrs["dilations"] = list(dil)
    for size, k, d, pb, s in zip(SHAPE[2:], kernel, dil, pads, strides):
        assume(size + 2 * pb >= d * (k - 1) + 1)
        if ceil:  # ONNX shape inference and ONNX Runtime disagree on a window starting in the pad
            out = -(-(size + 2 * pb - d * (k - 1) - 1) // s) + 1
            assume((out - 1) * s < size + pb)
    check_lowering(single(kind, attrs), {"x": clip()})


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools(op):
    check_lowering(single(op), {"x": clip()})


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceSum", "ReduceL2"])
@pytest.mark.parametrize("axes", [[2], [3], [4], [3, 4], [2, 3, 4], [1], [1, 2], [2, 3], [-1, -3], [0], [0, 2]])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reductions(op, axes, keepdims):
    model = single(op, {"keepdims": keepdims}, inputs=("x", "axes"), inits=[ints("axes", axes)], opset=18)
    check_lowering(model, {"x": clip()})


def test_reduce_over_time_attribute_form_opset17():
    check_lowering(single("ReduceMean", {"axes": [2], "keepdims": 0}), {"x": clip()})


@pytest.mark.parametrize("gate_shape", [(2, 3, 1, 1, 1), (1, 3, 1, 1, 1), (2, 1, 4, 1, 1), (1, 1, 4, 5, 6),
                                        (3, 1, 1, 1), (6,), (1,), (2, 3, 4, 5, 6), (5, 1)])
@pytest.mark.parametrize("op", ["Mul", "Add", "Div", "Max"])
def test_broadcasting_operands(gate_shape, op):
    """A second input of every broadcast shape, as a graph input (runtime) tensor."""
    model = single(op, inputs=("x", "g"), extra_inputs=[float_input("g", gate_shape)])
    gate = np.random.default_rng(1).uniform(0.5, 1.5, gate_shape).astype(np.float32)
    feeds = {"x": clip(), "g": gate}
    _ensure_lowered(model, feeds)


def _ensure_lowered(model, feeds):
    rank5 = {k: v for k, v in feeds.items() if v.ndim == 5}
    plain = {k: v for k, v in feeds.items() if v.ndim != 5}
    check_lowering(model, {**rank5, **plain})


@pytest.mark.parametrize("const_shape", [(1, 3, 1, 1, 1), (3, 1, 1, 1), (1, 1, 4, 1, 1), (4, 5, 6), ()])
def test_broadcasting_constants(const_shape):
    value = np.random.default_rng(2).standard_normal(const_shape)
    model = single("Sub", inputs=("x", "c"), inits=[tensor("c", value)])
    check_lowering(model, {"x": clip()})


def test_se_gate_pattern():
    """x * sigmoid(conv1x1(globalpool(x))): the X3D squeeze-excitation block."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Conv", ["p", "w"], ["q"], kernel_shape=[1, 1, 1]),
             helper.make_node("Sigmoid", ["q"], ["g"]),
             helper.make_node("Mul", ["x", "g"], ["y"])]
    model = make_model(nodes, [float_input("x", SHAPE)], [helper.make_tensor_value_info("y", 1, None)],
                       [tensor("w", rng.standard_normal((3, 3, 1, 1, 1)))])
    check_lowering(model, {"x": clip()})


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Exp", "HardSwish", "Softplus", "Erf"])
def test_unary(op):
    check_lowering(single(op), {"x": clip()})


@pytest.mark.parametrize("axis", [1, 2, 3, 4, 0, -3])
def test_concat(axis):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Concat", ["x", "r"], ["y"], axis=axis)]
    model = make_model(nodes, [float_input("x", SHAPE)], [helper.make_tensor_value_info("y", 1, None)])
    check_lowering(model, {"x": clip()})


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([0], [4], [2], [2]), ([1], [3], [2], [1]), ([3], [-5], [2], [-1]), ([0, 1], [2, 3], [1, 3], [1, 1]),
    ([1, 0, 2], [4, 2, 6], [2, 1, 4], [2, 1, 2]), ([1], [2], [0], [1]),
])
def test_slice(starts, ends, axes, steps):
    inits = [ints("s", starts), ints("e", ends), ints("a", axes), ints("st", steps)]
    check_lowering(single("Slice", inputs=("x", "s", "e", "a", "st"), inits=inits), {"x": clip()})


@pytest.mark.parametrize("axis,indices", [(2, [0, 2]), (2, 1), (1, [2, 0]), (1, 1), (3, 0), (4, [1, 1])])
def test_gather(axis, indices):
    idx = helper.make_tensor("i", TensorProto.INT64, np.shape(indices), np.ravel(indices).tolist())
    check_lowering(single("Gather", {"axis": axis}, inputs=("x", "i"), inits=[idx]), {"x": clip()})


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("pads", [[0, 0, 1, 0, 0, 0, 0, 2, 0, 0], [0, 0, 0, 1, 2, 0, 0, 0, 2, 1],
                                  [0, 1, 1, 1, 1, 0, 2, 1, 1, 1]])
def test_pad(mode, pads):
    check_lowering(single("Pad", {"mode": mode}, inputs=("x", "p"), inits=[ints("p", pads)]), {"x": clip()})


@pytest.mark.parametrize("mode,coord", [("nearest", "asymmetric"), ("nearest", "half_pixel"),
                                        ("linear", "half_pixel"), ("linear", "align_corners")])
@pytest.mark.parametrize("sizes", [[2, 3, 8, 10, 12], [2, 3, 4, 10, 12], [2, 3, 2, 5, 6], [2, 3, 6, 3, 3]])
def test_resize(mode, coord, sizes):
    empty = helper.make_tensor("roi", TensorProto.FLOAT, [0], [])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [0], [])
    model = single("Resize", {"mode": mode, "coordinate_transformation_mode": coord},
                   inputs=("x", "roi", "scales", "sizes"), inits=[empty, scales, ints("sizes", sizes)])
    check_lowering(model, {"x": clip()})


def test_channel_shuffle_rank6():
    """(B, C, T, H, W) → (B, g, C/g, T, H, W) → swap → back: no rank-5 or rank-6 tensor remains."""
    shape = (2, 6, 4, 5, 6)
    nodes = [helper.make_node("Reshape", ["x", "s6"], ["v"]),
             helper.make_node("Transpose", ["v"], ["t"], perm=[0, 2, 1, 3, 4, 5]),
             helper.make_node("Reshape", ["t", "s5"], ["y"])]
    model = make_model(nodes, [float_input("x", shape)], [helper.make_tensor_value_info("y", 1, None)],
                       [ints("s6", [2, 3, 2, 4, 5, 6]), ints("s5", list(shape))])
    check_lowering(model, {"x": clip(shape)})


@pytest.mark.parametrize("perm", [[0, 2, 1, 3, 4], [0, 1, 2, 4, 3], [0, 2, 3, 4, 1], [1, 0, 2, 3, 4]])
def test_transpose(perm):
    check_lowering(single("Transpose", {"perm": perm}), {"x": clip()})


@pytest.mark.parametrize("perm", [[4, 3, 2, 1, 0], [2, 0, 4, 1, 3]])
def test_transpose_of_five_groups_is_a_chain(perm):
    """A row-major rank-5 value read out after a permute of five separate axis groups: no rank-4
    transpose moves five groups, so a chain of them does."""
    shape = (2, 3, 4, 5, 6)
    nodes = [helper.make_node("Reshape", ["x", "s5"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=perm),
             helper.make_node("Reshape", ["t", "flat"], ["y"])]
    model = make_model(nodes, [float_input("x", (6, 4, 5, 6))], [helper.make_tensor_value_info("y", 1, None)],
                       [ints("s5", list(shape)), ints("flat", [shape[perm[0]], -1])])
    lowered, _ = check_lowering(model, {"x": clip((6, 4, 5, 6))})
    assert sum(n.op_type == "Transpose" for n in lowered.graph.node) >= 2


@pytest.mark.parametrize("perm", [[4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [0, 3, 4, 2, 1]])
def test_transpose_of_a_clip_starts_from_its_frames(perm):
    """A clip held as frames, permuted and left as frames: the permute composes with the frames'
    own (B, T, C, H, W) order, and one transpose (not a chain from the time layout) moves it."""
    lowered, _ = check_lowering(single("Transpose", {"perm": perm}), {"x": clip()})
    assert sum(n.op_type == "Transpose" for n in lowered.graph.node) <= 2


@pytest.mark.parametrize("op,attrs,inits", [
    ("Flatten", {"axis": 1}, []), ("Flatten", {"axis": 3}, []),
    ("Reshape", {}, [("shape", [2, -1])]), ("Reshape", {}, [("shape", [2, 3, 4, 30])]),
    ("Reshape", {}, [("shape", [2, 3, 2, 2, 30])]),
])
def test_reshapes(op, attrs, inits):
    inputs = ("x",) + tuple(name for name, _ in inits)
    check_lowering(single(op, attrs, inputs=inputs, inits=[ints(n, v) for n, v in inits]), {"x": clip()})


def test_squeeze_unsqueeze_after_global_pool():
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Squeeze", ["p", "axes"], ["s"]),
             helper.make_node("Unsqueeze", ["s", "axes2"], ["y"])]
    model = make_model(nodes, [float_input("x", SHAPE)], [helper.make_tensor_value_info("y", 1, None)],
                       [ints("axes", [2, 3, 4]), ints("axes2", [2])])
    check_lowering(model, {"x": clip()})


@pytest.mark.parametrize("op", ["Identity", "Dropout"])
def test_identity_and_dropout(op):
    check_lowering(single(op), {"x": clip()})


@pytest.mark.parametrize("axis", [1, 2, 3, -1])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax(op, axis):
    check_lowering(single(op, {"axis": axis}), {"x": clip()})


def test_norms():
    rng = np.random.default_rng(0)
    c = SHAPE[1]
    inits = [tensor("s", rng.uniform(0.5, 2, c)), tensor("b", rng.standard_normal(c)),
             tensor("m", rng.standard_normal(c)), tensor("v", rng.uniform(0.5, 2, c))]
    check_lowering(single("BatchNormalization", {"epsilon": 1e-3}, inputs=("x", "s", "b", "m", "v"), inits=inits),
                   {"x": clip()})
    check_lowering(single("InstanceNormalization", inputs=("x", "s", "b"), inits=inits[:2]), {"x": clip()})


@settings(max_examples=30, deadline=None)
@given(kernel=st.tuples(*[st.integers(1, 3)] * 3), strides=st.tuples(*[st.integers(1, 3)] * 3),
       dil=st.tuples(*[st.integers(1, 2)] * 3), group=st.sampled_from([1, 3]), data=st.data(),
       bias=st.booleans())
def test_random_conv_transpose3d(kernel, strides, dil, group, data, bias):
    pads = [data.draw(st.integers(0, d * (k - 1))) for k, d in zip(kernel, dil)] * 2
    out_pad = [data.draw(st.integers(0, max(s - 1, 0))) for s in strides]
    out_pad = [min(p, max(s, d) - 1) for p, s, d in zip(out_pad, strides, dil)]
    rng = np.random.default_rng(0)
    cin, cout = 3, 3 * (1 if group == 3 else 2)
    inits = [tensor("w", rng.standard_normal((cin, cout // group, *kernel)))]
    inputs = ["x", "w"]
    if bias:
        inits.append(tensor("b", rng.standard_normal(cout)))
        inputs.append("b")
    shape = (2, cin, 3, 4, 4)
    for size, k, s, d, p, op in zip(shape[2:], kernel, strides, dil, pads, out_pad):
        assume((size - 1) * s + d * (k - 1) + 1 + op - 2 * p >= 1)
    model = single("ConvTranspose", dict(kernel_shape=list(kernel), strides=list(strides), dilations=list(dil),
                                         pads=pads, output_padding=out_pad, group=group),
                   inputs=inputs, inits=inits, shape=shape)
    check_lowering(model, {"x": clip(shape)})


def test_reduction_over_time_and_height_merges_axes():
    """ReduceL2 over T and H does not split into two steps on frames; the merged-axes fallback
    reduces (B·C, T·H, W) over its middle axis."""
    model = single("ReduceL2", {"keepdims": 1}, inputs=("x", "axes"), inits=[ints("axes", [2, 3])], opset=18)
    _, report = check_lowering(model, {"x": clip()})
    assert "merged axes" in report.lowered[0]["rule"]


@pytest.mark.parametrize("kernel, strides, pads", [
    ((2, 2, 2), (2, 2, 2), (0, 0, 0, 0, 0, 0)),
    ((3, 1, 1), (1, 1, 1), (1, 0, 0, 1, 0, 0)),  # time only: no spatial pool first
    ((3, 3, 3), (2, 1, 1), (1, 1, 1, 1, 1, 1)),
])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_of_frames_pools_time_on_a_view_of_the_frames(op, kernel, strides, pads):
    attrs = {"kernel_shape": list(kernel), "strides": list(strides), "pads": list(pads)}
    if op == "AveragePool":
        attrs["count_include_pad"] = 0
    lowered, report = check_lowering(conv_then(op, attrs), {"x": norm_clip()})
    assert "on the frames viewed as (B, 1, T, C·H·W)" in report.lowered[1]["rule"]
    assert "Transpose" not in [n.op_type for n in lowered.graph.node]


def test_pool_of_a_value_in_the_time_layout_pools_there():
    attrs = {"kernel_shape": [2, 1, 1], "strides": [2, 1, 1]}
    lowered, report = check_lowering(conv_then("MaxPool", attrs, kernel=(3, 1, 1)), {"x": norm_clip()})
    assert report.lowered[1]["rule"] == "MaxPool3d → 2x1 on the time layout"
