"""The general axis-merging lowering (rules.merged_axes), on op patterns of third-party models.

Each graph is checked against ONNX Runtime on the rank-5 (or higher) original, and every tensor
of the lowered graph has rank ≤ 4 after shape inference (lowering_harness.check_lowering).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lowering_harness import check_lowering, float_input, make_model, tensor
from onnx import TensorProto, helper, numpy_helper

from edge3d.passes import LoweringError
from edge3d.passes.rules.merged_axes import ANY, group_axes
from edge3d.passes.transposes import transpose_chain

B, C, T, H, W = 2, 6, 4, 4, 6


def clip(shape=(B, C, T, H, W), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ints(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def model(nodes, inits=(), opset=18, inputs=None):
    inputs = inputs or [float_input("x", (B, C, T, H, W))]
    return make_model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                      list(inits), opset=opset)


def lowered_rules(report) -> list[str]:
    return [item["rule"] for item in report.lowered]


def test_group_axes_merges_runs_with_equal_signatures():
    assert group_axes(["a", "a", None, "b", "b"]) == [[0, 1], [2], [3, 4]]
    assert group_axes([None, None]) == [[0], [1]]
    assert group_axes([ANY, "a", ANY, "b"]) == [[0, 1, 2], [3]]


def test_channel_last_linear_and_layer_norm():
    """A classifier head / patch merging: permute to channel-last, LayerNorm and Linear over C."""
    k = 5
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Transpose", ["x"], ["cl"], perm=[0, 2, 3, 4, 1]),
        helper.make_node("LayerNormalization", ["cl", "gamma", "beta"], ["n"], axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["n", "w"], ["m"]),
        helper.make_node("Add", ["m", "bias"], ["a"]),
        helper.make_node("Transpose", ["a"], ["y"], perm=[0, 4, 1, 2, 3]),
    ]
    inits = [tensor("gamma", rng.standard_normal(C)), tensor("beta", rng.standard_normal(C)),
             tensor("w", rng.standard_normal((C, k))), tensor("bias", rng.standard_normal(k))]
    _, report = check_lowering(model(nodes, inits), {"x": clip()})
    rules = lowered_rules(report)
    assert any("LayerNormalization" in r for r in rules) and any("MatMul" in r for r in rules)


def test_batched_matmul_attention_over_frames():
    """softmax(q·kᵀ)·v with (B, heads, T, N, d) operands: batch axes merge into one."""
    heads, n, d = 2, 6, 3
    shape = (B, heads, T, n, d)
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 2, 4, 3]),
        helper.make_node("MatMul", ["x", "kt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    inputs = [float_input("x", shape), float_input("k", shape), float_input("v", shape)]
    check_lowering(model(nodes, inputs=inputs), {"x": clip(shape, 1), "k": clip(shape, 2), "v": clip(shape, 3)})


def test_causal_temporal_padding_by_tile():
    """``x[:, :, :1].repeat(1, 1, k - 1, 1, 1)`` concatenated in front of x along T."""
    nodes = [
        helper.make_node("Slice", ["x", "s", "e", "ax"], ["first"]),
        helper.make_node("Tile", ["first", "reps"], ["pad"]),
        helper.make_node("Concat", ["pad", "x"], ["y"], axis=2),
    ]
    inits = [ints("s", [0]), ints("e", [1]), ints("ax", [2]), ints("reps", [1, 1, 2, 1, 1])]
    _, report = check_lowering(model(nodes, inits), {"x": clip()})
    assert any("Tile" in r for r in lowered_rules(report))


def test_rank5_constant_node_and_initializer():
    """A folded attention mask: a rank-5 Constant node and a rank-6 initializer."""
    rng = np.random.default_rng(2)
    mask = rng.standard_normal((1, C, T, H, W)).astype(np.float32)
    six = rng.standard_normal((B, 2, C // 2, T, H, W)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["mask"], value=numpy_helper.from_array(mask)),
        helper.make_node("Mul", ["x", "mask"], ["m"]),
        helper.make_node("Reshape", ["m", "shape6"], ["r"]),
        helper.make_node("Add", ["r", "six"], ["a"]),
        helper.make_node("Reshape", ["a", "shape5"], ["y"]),
    ]
    inits = [ints("shape6", [B, 2, C // 2, T, H, W]), tensor("six", six), ints("shape5", [B, C, T, H, W])]
    check_lowering(model(nodes, inits), {"x": clip()})


def test_qkv_permute_of_five_groups():
    """``qkv.reshape(B', N, 3, heads, d).permute(2, 0, 3, 1, 4)`` once frames are in the batch."""
    heads, d = 2, 3  # C·T·H·W = 3·heads·d·N with N = C·T·H·W / 18
    n = C * T * H * W // (3 * heads * d)
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["qkv"]),
        helper.make_node("Transpose", ["qkv"], ["t"], perm=[2, 0, 3, 1, 4]),
        helper.make_node("Gather", ["t", "zero"], ["q"], axis=0),
        helper.make_node("Reshape", ["q", "back"], ["y"]),
    ]
    inits = [ints("shape", [B, n, 3, heads, d]), numpy_helper.from_array(np.asarray(0, np.int64), "zero"),
             ints("back", [B, heads, n, d])]
    check_lowering(model(nodes, inits), {"x": clip()})


def test_window_partition_and_reverse_rank8():
    """Swin-style 3D windows: (B, T, H, W, C) → (B, T/2, 2, H/2, 2, W/3, 3, C), windows first, back."""
    win = [B, T // 2, 2, H // 2, 2, W // 3, 3, C]
    nodes = [
        helper.make_node("Transpose", ["x"], ["cl"], perm=[0, 2, 3, 4, 1]),
        helper.make_node("Reshape", ["cl", "win"], ["w8"]),
        helper.make_node("Transpose", ["w8"], ["p"], perm=[0, 1, 3, 5, 2, 4, 6, 7]),
        helper.make_node("Relu", ["p"], ["r"]),
        helper.make_node("Transpose", ["r"], ["back"], perm=[0, 1, 4, 2, 5, 3, 6, 7]),
        helper.make_node("Reshape", ["back", "clshape"], ["cl2"]),
        helper.make_node("Transpose", ["cl2"], ["y"], perm=[0, 4, 1, 2, 3]),
    ]
    inits = [ints("win", win), ints("clshape", [B, T, H, W, C])]
    lowered, _ = check_lowering(model(nodes, inits), {"x": clip()})
    assert sum(n.op_type == "Transpose" for n in lowered.graph.node) <= 8


def test_gather_with_rank5_indices_on_a_bias():
    """The dynamo exporter's ``as_strided`` of a broadcast bias: rank-1 data, rank-5 indices."""
    rng = np.random.default_rng(3)
    bias = tensor("bias", rng.standard_normal(C))
    idx = np.broadcast_to(np.arange(C).reshape(1, C, 1, 1, 1), (1, C, T, H, W)).astype(np.int64)
    nodes = [
        helper.make_node("Gather", ["bias", "idx"], ["g"], axis=0),
        helper.make_node("Add", ["x", "g"], ["y"]),
    ]
    check_lowering(model(nodes, [bias, numpy_helper.from_array(np.ascontiguousarray(idx), "idx")]), {"x": clip()})


@pytest.mark.parametrize("op,attrs,extra", [
    ("Softmax", {"axis": 1}, []), ("LogSoftmax", {"axis": 3}, []), ("ArgMax", {"axis": 2, "keepdims": 0}, []),
    ("ArgMin", {"axis": 4, "keepdims": 1}, []), ("CumSum", {}, [ints("axis", [2])]),
    ("CumSum", {"reverse": 1, "exclusive": 1}, [ints("axis", [-1])]), ("Hardmax", {"axis": 1}, []),
])
def test_ops_along_one_axis_of_a_rank6_value(op, attrs, extra):
    inputs = ["r"] + [e.name for e in extra]
    nodes = [
        helper.make_node("Reshape", ["x", "shape6"], ["r"]),
        helper.make_node(op, inputs, ["o"], **attrs),
        helper.make_node("Cast", ["o"], ["c"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["c", "flat"], ["y"]),
    ]
    inits = [ints("shape6", [B, 2, C // 2, T, H, W]), ints("flat", [B, -1]), *extra]
    check_lowering(model(nodes, inits), {"x": clip()})


def test_expand_where_and_gather_elements():
    nodes = [
        helper.make_node("ReduceMean", ["x", "t_axis"], ["m"], keepdims=1),  # (B, C, 1, H, W)
        helper.make_node("Expand", ["m", "full"], ["e"]),
        helper.make_node("Greater", ["x", "e"], ["cond"]),
        helper.make_node("Where", ["cond", "x", "e"], ["w"]),
        helper.make_node("ArgMax", ["w"], ["i"], axis=2, keepdims=1),
        helper.make_node("GatherElements", ["w", "i"], ["y"], axis=2),
    ]
    inits = [ints("t_axis", [2]), ints("full", [B, C, T, H, W])]
    check_lowering(model(nodes, inits), {"x": clip()})


def _index_tuples(k: int, count: int, seed: int, negative: bool = False) -> np.ndarray:
    """``count`` distinct tuples of coordinates over the first ``k`` axes of a clip (ScatterND's
    result is defined only for distinct tuples); with ``negative``, some counted from the end."""
    sizes = (B, C, T, H, W)[:k]
    flat = np.random.default_rng(seed).permutation(int(np.prod(sizes)))[:count]
    tuples = np.stack(np.unravel_index(flat, sizes), axis=-1).astype(np.int64)
    if negative:
        tuples[::2] -= np.asarray(sizes)
    return tuples


@pytest.mark.parametrize("k", [2, 3, 5])
def test_scatter_nd_and_gather_nd_with_rank5_constant_indices(k):
    """Rotary embeddings written in place (``x[..., 0::2] = …``) export as ScatterND with rank-5
    indices; GatherND is its reading counterpart. The output goes back to rank 5 by a ReduceSum."""
    index_shape = (1, 1, 2, 3, k)
    indices = _index_tuples(k, 6, seed=k, negative=True).reshape(index_shape)
    update_shape = index_shape[:-1] + (B, C, T, H, W)[k:]
    nodes = [
        helper.make_node("GatherND", ["x", "i"], ["g"]),  # (1, 1, 2, 3, *rest)
        helper.make_node("Mul", ["g", "two"], ["u"]),
        helper.make_node("ScatterND", ["x", "i", "u"], ["y"]),
    ]
    inits = [numpy_helper.from_array(indices, "i"), tensor("two", np.float32(2.0))]
    assert update_shape == (1, 1, 2, 3, *(B, C, T, H, W)[k:])
    _, report = check_lowering(model(nodes, inits), {"x": clip()})
    rules = lowered_rules(report)
    assert any("ScatterND" in r for r in rules) and any("GatherND" in r for r in rules)


def test_scatter_nd_with_indices_computed_at_run_time():
    """Indices that are a graph input (negative ones too) are numbered by Mod, Mul and ReduceSum."""
    index_shape = (6, 2)
    indices = _index_tuples(2, 6, seed=7, negative=True).reshape(index_shape)
    nodes = [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="add")]
    inputs = [float_input("x", (B, C, T, H, W)),
              helper.make_tensor_value_info("i", TensorProto.INT64, list(index_shape)),
              float_input("u", index_shape[:-1] + (T, H, W))]
    updates = clip(index_shape[:-1] + (T, H, W), seed=3)
    check_lowering(model(nodes, opset=18, inputs=inputs), {"x": clip(), "i": indices, "u": updates})


def test_causal_padding_of_zero_frames():
    """``x[:, :, :1].repeat(1, 1, k - 1, 1, 1)`` with k = 1 (LTX-Video's 1×1×1 shortcut): an empty
    tensor concatenated in front of x. Its reshapes keep the zero (``allowzero``) instead of
    reading it as "copy this dim"."""
    nodes = [
        helper.make_node("Slice", ["x", "zero", "one", "t_axis"], ["first"]),  # (B, C, 1, H, W)
        helper.make_node("Tile", ["first", "reps"], ["none"]),  # (B, C, 0, H, W)
        helper.make_node("Concat", ["none", "x"], ["y"], axis=2),
    ]
    inits = [ints("zero", [0]), ints("one", [1]), ints("t_axis", [2]), ints("reps", [1, 1, 0, 1, 1])]
    check_lowering(model(nodes, inits), {"x": clip()})


@pytest.mark.parametrize("op", ["Slice", "Pad", "ReduceSum"])
def test_merged_results_are_cached_under_their_real_shape(op):
    """A merged Slice, Pad or stepwise reduction of a rank-6 value, read by a Tile that asks for the
    value flattened: the cached form must have the shape it is filed under (it was once filed as
    flat whatever its rank, and the Tile got a rank-2 tensor with one repeat)."""
    first = {
        "Slice": helper.make_node("Slice", ["r", "zero", "one", "axis4"], ["s"]),
        "Pad": helper.make_node("Pad", ["r", "pads"], ["s"]),
        "ReduceSum": helper.make_node("ReduceSum", ["r", "axes"], ["s"], keepdims=1),
    }[op]
    nodes = [
        helper.make_node("Reshape", ["x", "six"], ["r"]),  # (B, C, T, H, W/2, 2)
        first,
        helper.make_node("Tile", ["s", "ones"], ["t"]),
        helper.make_node("Reshape", ["t", "five"], ["y"]),
    ]
    inits = [ints("six", [B, C, T, H, W // 2, 2]), ints("zero", [0]), ints("one", [1]), ints("axis4", [4]),
             ints("pads", [0, 0, 0, 0, 1, 0] + [0, 0, 0, 0, 1, 0]), ints("axes", [1, 3, 5]),
             ints("ones", [1] * 6), ints("five", [B, 1, T, 1, W // 2] if op == "ReduceSum" else [B, C, T, H, -1])]
    check_lowering(model(nodes, inits), {"x": clip()})


def transposed_elements(model) -> int:
    """Elements all Transposes of a shape-inferred model move: the data-movement cost of a layout."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    values = list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}
    return sum(int(np.prod(dims[n.input[0]])) for n in inferred.graph.node if n.op_type == "Transpose")


def test_attention_qkv_split_moves_no_more_data_than_the_original():
    """``qkv.reshape(B', N, 3, heads, d).permute(2, 0, 3, 1, 4)`` then ``q, k, v = qkv[0], qkv[1],
    qkv[2]``: the reshape and the permute stay a view, each Gather picks its third on the view's
    tensor, and each third is transposed once when its MatMul reads it. A rank-4 chain for the
    permute would move the whole tensor twice (5 axis groups need two rank-4 transposes); this way
    the Transposes move what the original's do (one rank-5 permute, and k's own)."""
    bn, n, heads, d = 4, 6, 2, 3
    nodes = [
        helper.make_node("Reshape", ["x", "split"], ["r"]),
        helper.make_node("Transpose", ["r"], ["p"], perm=[2, 0, 3, 1, 4]),
        *[helper.make_node("Gather", ["p", f"i{j}"], [f"g{j}"], axis=0) for j in range(3)],
        helper.make_node("Transpose", ["g1"], ["g1t"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["g0", "g1t"], ["s"]),
        helper.make_node("Softmax", ["s"], ["a"], axis=-1),
        helper.make_node("MatMul", ["a", "g2"], ["y"]),
    ]
    inits = [ints("split", [bn, n, 3, heads, d])] + [numpy_helper.from_array(np.asarray(j, np.int64), f"i{j}")
                                                     for j in range(3)]
    original = model(nodes, inits, inputs=[float_input("x", (bn, n, 3 * heads * d))])
    lowered, report = check_lowering(original, {"x": clip((bn, n, 3 * heads * d))})
    assert transposed_elements(lowered) <= transposed_elements(original)
    assert {item["rule"] for item in report.lowered if item["op"] == "Gather"} == {
        "Gather on the tensor of a view (the view kept)"}


def test_too_many_groups_is_reported_with_the_reason():
    nodes = [helper.make_node("Tile", ["x", "reps"], ["y"])]
    with pytest.raises(LoweringError, match="needs 5 separate axis groups"):
        check_lowering(model(nodes, [ints("reps", [2, 2, 2, 2, 2])]), {"x": clip()})


@settings(max_examples=30, deadline=None)
@given(rank=st.integers(5, 7), data=st.data(),
       op=st.sampled_from(["Add", "Mul", "Sub", "Max", "Where"]))
def test_random_broadcasting_on_high_ranks(rank, data, op):
    """Operands that broadcast over random axes of a rank-5 to rank-7 value: merged or refused,
    never wrong."""
    out = data.draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    out[0] = B
    masks = [data.draw(st.lists(st.booleans(), min_size=rank, max_size=rank)) for _ in range(2)]
    shapes = [[d if keep else 1 for d, keep in zip(out, mask)] for mask in masks]
    shapes[0] = out  # the first operand is full-size; it is what a previous layer made
    n = int(np.prod(out))
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["a"])]
    inits = [ints("shape", out), tensor("b", np.random.default_rng(4).standard_normal(shapes[1]))]
    if op == "Where":
        nodes += [helper.make_node("Greater", ["a", "b"], ["c"]), helper.make_node("Where", ["c", "a", "b"], ["o"])]
    else:
        nodes.append(helper.make_node(op, ["a", "b"], ["o"]))
    nodes.append(helper.make_node("Reshape", ["o", "flat"], ["y"]))
    inits.append(ints("flat", [B, -1]))
    x_shape = (B, n // B, 1, 1, 1)
    m = model(nodes, inits, inputs=[float_input("x", x_shape)])
    try:
        check_lowering(m, {"x": clip(x_shape)})
    except LoweringError as exc:
        assert "at most 4 fit in rank 4" in str(exc)


def test_transpose_chain_is_shortest():
    assert len(transpose_chain([2, 0, 3, 1, 4])) == 2
    assert len(transpose_chain([1, 0, 3, 2])) == 1
    assert len(transpose_chain([7, 6, 5, 4, 3, 2, 1, 0])) == 3


@pytest.mark.parametrize("op,attrs,extra", [
    ("Slice", {}, [ints("starts", [1, 0]), ints("ends", [2, 3]), ints("axes", [1, 4]), ints("steps", [1, 2])]),
    ("Pad", {"mode": "constant"}, [ints("pads", [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0])]),
    ("Pad", {"mode": "reflect"}, [ints("pads", [0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0])]),
    ("Split", {"axis": 3}, [ints("split", [1, 3])]),
    ("ReduceMax", {"keepdims": 0}, [ints("axes", [1, 3, 5])]),
])
def test_movement_and_reductions_of_a_rank6_value(op, attrs, extra):
    outputs = ["o", "o2"] if op == "Split" else ["o"]
    nodes = [
        helper.make_node("Reshape", ["x", "shape6"], ["r"]),
        helper.make_node(op, ["r"] + [e.name for e in extra], outputs, **attrs),
    ]
    if op == "Split":
        nodes.append(helper.make_node("Concat", ["o2", "o"], ["o3"], axis=3))
        outputs = ["o3"]
    nodes.append(helper.make_node("Reshape", [outputs[0], "flat"], ["y"]))
    inits = [ints("shape6", [B, 2, C // 2, T, H, W]), ints("flat", [B, -1]), *extra]
    _, report = check_lowering(model(nodes, inits), {"x": clip()})
    assert any("merged axes" in r for r in lowered_rules(report))


def test_channel_last_block_runs_on_frames_without_transposes():
    """permute → LayerNorm → Linear → GELU → Linear → permute back (a ConvNeXt/Swin MLP): the
    LayerNorm is normalised over the frames' channels, each Linear is a 1×1 Conv, and no
    Transpose is left."""
    rng = np.random.default_rng(5)
    hidden = 8
    nodes = [
        helper.make_node("Transpose", ["x"], ["cl"], perm=[0, 2, 3, 4, 1]),
        helper.make_node("LayerNormalization", ["cl", "gamma", "beta"], ["n"], axis=-1, epsilon=1e-6),
        helper.make_node("MatMul", ["n", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Gelu", ["hb"], ["g"]),
        helper.make_node("MatMul", ["g", "w2"], ["o"]),
        helper.make_node("Mul", ["o", "layer_scale"], ["s"]),
        helper.make_node("Transpose", ["s"], ["back"], perm=[0, 4, 1, 2, 3]),
        helper.make_node("Add", ["x", "back"], ["y"]),
    ]
    inits = [tensor("gamma", rng.standard_normal(C)), tensor("beta", rng.standard_normal(C)),
             tensor("w1", rng.standard_normal((C, hidden))), tensor("b1", rng.standard_normal(hidden)),
             tensor("w2", rng.standard_normal((hidden, C))), tensor("layer_scale", rng.standard_normal(C))]
    lowered, report = check_lowering(model(nodes, inits, opset=20), {"x": clip()}, rtol=1e-4)
    ops = [n.op_type for n in lowered.graph.node]
    assert "Transpose" not in ops and ops.count("Conv") == 2 and "LayerNormalization" not in ops
    assert any("1×1 Conv" in r for r in lowered_rules(report))


def test_channel_last_view_leaves_the_graph_in_its_own_layout():
    """A permuted view that a Reshape needs in row-major order is made from the frames with a
    single transpose."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["cl"], perm=[0, 2, 3, 4, 1]),
        helper.make_node("Relu", ["cl"], ["r"]),
        helper.make_node("Reshape", ["r", "tokens"], ["y"]),
    ]
    lowered, _ = check_lowering(model(nodes, [ints("tokens", [B, T * H * W, C])]), {"x": clip()})
    assert [n.op_type for n in lowered.graph.node].count("Transpose") == 1


def test_values_with_open_dims_are_reported_not_crashed_on():
    """A Reshape to a shape given at run time leaves every later rank-5 value with open dims:
    each node is reported (a LoweringError, exit 1), none crashes a rule (RuleFailed, exit 3)."""
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Relu", ["r"], ["a"]),
        helper.make_node("Add", ["a", "x"], ["y"]),  # inference gives y x's static dims
    ]
    inputs = [float_input("x", (B, C, T, H, W)), helper.make_tensor_value_info("shape", TensorProto.INT64, [5])]
    from edge3d.frontend.to_onnx import prepare
    from edge3d.passes import lower_model

    with pytest.raises(LoweringError) as caught:
        lower_model(prepare(model(nodes, inputs=inputs), simplify=False))
    ops = {item.op for item in caught.value.report.unsupported}
    assert {"Reshape", "Relu", "Add"} <= ops
