"""Lazy views (``edge3d.passes.views``): a reshape/transpose chain recorded, made once.

The record is checked against numpy on random chains (what the view says the elements are is
what numpy's chain gives), and the lowering against ONNX Runtime on the chains models write:
a patchify, a channel shuffle with an elementwise op between, attention's head split.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lowering_harness import check_lowering, float_input, make_model
from onnx import helper, numpy_helper

from edge3d.passes.transposes import transpose_count
from edge3d.passes.views import View, permuted_frames_view, row_major_view


def ints(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def clip(shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def realise(view: View, base: np.ndarray) -> np.ndarray:
    """What a view says its value is, computed by numpy."""
    return base.reshape(view.axes).transpose(view.order).reshape(view.dims)


def _factor(n: int, rng) -> tuple[int, int]:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    d = int(rng.choice(divisors))
    return d, n // d


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([2, 3, 4, 6]), min_size=2, max_size=5), st.integers(0, 2**32 - 1),
       st.lists(st.sampled_from(["transpose", "split", "merge", "any"]), min_size=1, max_size=6))
def test_a_view_holds_what_numpy_computes_for_the_chain(dims, seed, steps):
    """Random transposes, splits, merges and arbitrary reshapes: whenever the view can follow a
    step, its elements are numpy's; splits of an axis the view holds whole and merges of
    neighbouring axes it always follows."""
    rng = np.random.default_rng(seed)
    value = np.arange(math.prod(dims), dtype=np.float32).reshape(dims)
    view = row_major_view(None, dims, dims)  # type: ignore[arg-type]
    for step in steps:
        rank = value.ndim
        if step == "transpose":
            perm = [int(p) for p in rng.permutation(rank)]
            value, view = value.transpose(perm), view.transposed(perm)
            continue
        if step == "split":
            axis = int(rng.integers(rank))
            a, b = _factor(value.shape[axis], rng)
            new = value.shape[:axis] + (a, b) + value.shape[axis + 1:]
            whole = len([x for x in view.runs()[axis] if view.axes[x] != 1]) <= 1
        elif step == "merge" and rank > 1:
            axis = int(rng.integers(rank - 1))
            new = value.shape[:axis] + (value.shape[axis] * value.shape[axis + 1],) + value.shape[axis + 2:]
            whole = True
        else:
            first, rest = _factor(value.size, rng)
            new, whole = (first, rest), False
        reshaped = view.reshaped(new)
        assert reshaped is not None or not whole, (view, new)
        if reshaped is None:
            return
        value, view = value.reshape(new), reshaped
        assert view.dims == value.shape
        np.testing.assert_array_equal(realise(view, np.arange(value.size, dtype=np.float32)), value)
    assert view.dims == value.shape
    np.testing.assert_array_equal(realise(view, np.arange(value.size, dtype=np.float32)), value)


def test_a_reshape_no_split_expresses_has_no_view():
    """12 × 2 read as 8 × 3 after a transpose: 8 is neither a multiple nor a divisor of 12's parts."""
    view = row_major_view(None, (2, 12), (2, 12)).transposed((1, 0))  # type: ignore[arg-type]
    assert view.reshaped((8, 3)) is None


@pytest.mark.parametrize("p", [(0, 1, 2, 3, 4), (0, 2, 3, 4, 1), (0, 4, 1, 2, 3)])
def test_frames_are_a_view_of_the_clip(p):
    """Frames hold (B, T, C, H, W) row-major: a clip (or a permutation of one) read from them."""
    clip_dims = (2, 3, 4, 5, 6)
    clip_value = clip(clip_dims)
    frames = clip_value.transpose(0, 2, 1, 3, 4).reshape(8, 3, 5, 6)
    inverse = [p.index(i) for i in range(5)]
    value = clip_value.transpose(inverse)  # value.transpose(p) is the clip
    view = permuted_frames_view(None, value.shape, p)  # type: ignore[arg-type]
    np.testing.assert_array_equal(realise(view, frames), value)


def test_patchify_is_one_chain_from_the_frames():
    """``rearrange(x, 'b c (f pf) (h p1) (w p2) -> b (f h w) (pf p1 p2 c)')`` on a clip held as
    frames: the permute of seven axis groups is composed with the frames' own order and made as
    one chain, with no move to the time layout before it."""
    b, c, t, h, w, pf, p = 1, 3, 8, 8, 8, 2, 4
    nodes = [helper.make_node("Reshape", ["x", "split"], ["r"]),
             helper.make_node("Transpose", ["r"], ["pt"], perm=[0, 2, 4, 6, 3, 5, 7, 1]),
             helper.make_node("Reshape", ["pt", "merge"], ["y"])]
    split = [b, c, t // pf, pf, h // p, p, w // p, p]
    merge = [b, (t // pf) * (h // p) * (w // p), pf * p * p * c]
    model = make_model(nodes, [float_input("x", (b, c, t, h, w))], [helper.make_tensor_value_info("y", 1, None)],
                       [ints("split", split), ints("merge", merge)])
    lowered, report = check_lowering(model, {"x": clip((b, c, t, h, w))})
    transposes = sum(n.op_type == "Transpose" for n in lowered.graph.node)
    frames_axes = (b, t // pf, pf, c, h // p, p, w // p, p)  # (b, f, pf, c, h, p1, w, p2)
    assert transposes == transpose_count(frames_axes, (0, 1, 4, 6, 2, 5, 7, 3))
    rules = {item["op"]: item["rule"] for item in report.lowered}
    assert rules["Transpose"] == "Transpose as a view of the tensor its input has"


def test_elementwise_ops_between_permutes_run_on_the_views_tensor():
    """A channel shuffle with SiLU in the middle (``x * sigmoid(x)`` on the shuffled rank-6
    value): Sigmoid and Mul run on the tensor the view reads, and the value moves once, when the
    clip is rebuilt for the output."""
    shape = (1, 6, 4, 5, 6)
    nodes = [helper.make_node("Reshape", ["x", "s6"], ["v"]),
             helper.make_node("Transpose", ["v"], ["t"], perm=[0, 2, 1, 3, 4, 5]),
             helper.make_node("Sigmoid", ["t"], ["s"]),
             helper.make_node("Mul", ["t", "s"], ["m"]),
             helper.make_node("Reshape", ["m", "s5"], ["y"])]
    model = make_model(nodes, [float_input("x", shape)], [helper.make_tensor_value_info("y", 1, None)],
                       [ints("s6", [1, 2, 3, 4, 5, 6]), ints("s5", list(shape))])
    lowered, report = check_lowering(model, {"x": clip(shape)})
    rules = {item["op"]: item["rule"] for item in report.lowered}
    assert rules["Sigmoid"] == "Sigmoid on a view's tensor"
    assert rules["Mul"] == "Mul on the tensor of views alike"
    assert sum(n.op_type == "Transpose" for n in lowered.graph.node) == 1
