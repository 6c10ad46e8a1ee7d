"""edge3d.passes.context: the frames / canonical / time representations of a rank-5 value, the
conversions between them (run in ONNX Runtime against numpy), reshapes with a symbolic dim, and
that a value keeps its representations so each conversion is emitted once."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from edge3d.layouts import clip_to_frames
from edge3d.passes.context import (
    LowerContext,
    Unsupported,
    default_grouping,
    frames_dims,
    prod,
    time_dims,
)

B, C, T, H, W = 2, 3, 4, 5, 6
DIMS = (B, C, T, H, W)
FLOAT = ir.TensorType(ir.DataType.FLOAT)


def _value(name, dims):
    return ir.Value(name=name, shape=ir.Shape(list(dims)), type=FLOAT)


def _context():
    graph = ir.Graph([], [], nodes=[], opset_imports={"": 17}, name="g")
    return LowerContext(graph, 17)


def _run(ctx, inputs, outputs, feeds):
    """Make a model of what ``ctx`` emitted, with ``inputs`` and ``outputs``, and run it."""
    graph = ctx.graph
    graph.inputs.extend(inputs)
    graph.extend(ctx.new_nodes)
    for i, out in enumerate(outputs):
        out.name = f"out{i}"
        out.type = FLOAT
    graph.outputs.extend(outputs)
    proto = ir.serde.serialize_model(ir.Model(graph, ir_version=8))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _clip(dims=DIMS, seed=0):
    return np.random.default_rng(seed).standard_normal(dims).astype(np.float32)


# --- the shape helpers --------------------------------------------------------------------------

def test_dims_helpers():
    assert time_dims(DIMS) == (B, C, T, H * W)
    assert frames_dims(DIMS) == (B * T, C, H, W)
    assert frames_dims((None, C, T, H, W)) == (None, C, H, W)  # a symbolic batch stays symbolic
    assert prod((2, 3, 4)) == 24 and prod((None, 3)) is None
    assert default_grouping(DIMS) == time_dims(DIMS)
    assert default_grouping((2, 3, 4, 5, 6, 7)) == (2, 3, 4, 5 * 6 * 7)


def test_dims_of_values():
    assert LowerContext.dims(_value("v", ["N", 3, 4])) == (None, 3, 4)
    assert LowerContext.dims(ir.Value(name="unknown")) is None
    assert LowerContext.is_high(_value("v", DIMS)) and not LowerContext.is_high(_value("v", (1, 2, 3, 4)))
    ctx = _context()
    with pytest.raises(Unsupported, match="only the batch dim may be symbolic"):
        ctx.high_dims(_value("v", [1, "C", 2, 3, 4]))
    with pytest.raises(Unsupported, match="rank 6"):
        ctx.clip_dims(_value("v", (1, 2, 3, 4, 5, 6)))
    with pytest.raises(Unsupported, match="its producer was not lowered"):
        ctx.rep(_value("orphan", DIMS))


# --- conversions, checked numerically -----------------------------------------------------------

def test_frames_to_time_and_canonical():
    ctx = _context()
    clip = _value("clip", DIMS)
    frames_in = _value("frames", frames_dims(DIMS))
    ctx.set_frames(clip, frames_in)
    time = ctx.time(clip)
    flat = ctx.canonical(clip, (B, C * T, H * W))
    x = _clip()
    got_time, got_flat = _run(ctx, [frames_in], [time, flat], {"frames": clip_to_frames(x)})
    np.testing.assert_array_equal(got_time, x.reshape(time_dims(DIMS)))
    np.testing.assert_array_equal(got_flat, x.reshape(B, C * T, H * W))


def test_canonical_to_frames():
    ctx = _context()
    clip = _value("clip", DIMS)
    time_in = _value("time", time_dims(DIMS))
    ctx.set_canonical(clip, time_in, time_dims(DIMS))
    frames = ctx.frames(clip)
    bt = ctx.bt_view(clip)
    assert ctx.time(clip) is time_in  # the representation it was given is kept, not rebuilt
    x = _clip(seed=1)
    got_frames, got_bt = _run(ctx, [time_in], [frames, bt], {"time": x.reshape(time_dims(DIMS))})
    np.testing.assert_array_equal(got_frames, clip_to_frames(x))
    np.testing.assert_array_equal(got_bt, np.transpose(x, (0, 2, 1, 3, 4)).reshape(B, T, C * H * W))


def test_one_frame_needs_no_transpose():
    dims = (B, C, 1, H, W)
    ctx = _context()
    clip = _value("clip", dims)
    frames_in = _value("frames", frames_dims(dims))
    ctx.set_frames(clip, frames_in)
    time = ctx.time(clip)
    assert {n.op_type for n in ctx.new_nodes} == {"Reshape"}  # the same element order: no Transpose
    x = _clip(dims)
    (got,) = _run(ctx, [frames_in], [time], {"frames": clip_to_frames(x)})
    np.testing.assert_array_equal(got, x.reshape(time_dims(dims)))


def test_canonical_shape_must_hold_the_value():
    ctx = _context()
    with pytest.raises(AssertionError, match="does not hold"):
        ctx.set_canonical(_value("clip", DIMS), _value("t", (B, C, T, H)), (B, C, T, H))


def test_frames_of_a_rank6_value_is_refused():
    ctx = _context()
    dims = (1, 2, 3, 4, 5, 6)
    value = _value("v6", dims)
    ctx.set_canonical(value, _value("t", default_grouping(dims)), default_grouping(dims))
    with pytest.raises(Unsupported, match="only rank-5 values have a frames layout"):
        ctx.frames(value)


# --- reshape with a symbolic dim ----------------------------------------------------------------

def test_reshape_with_one_symbolic_dim_runs_at_any_batch():
    for bt in (3, 8):
        ctx = _context()
        frames_in = _value("frames", ["BT", C, H, W])
        out = ctx.reshape(frames_in, (None, C * H * W))
        (reshape,) = ctx.new_nodes
        assert reshape.op_type == "Reshape"
        assert ctx.const_array(reshape.inputs[1]).tolist() == [-1, C * H * W]  # the symbolic dim is -1
        x = np.random.default_rng(bt).standard_normal((bt, C, H, W)).astype(np.float32)
        (got,) = _run(ctx, [frames_in], [out], {"frames": x})
        np.testing.assert_array_equal(got, x.reshape(bt, -1))


def test_reshape_with_two_symbolic_dims_is_refused():
    ctx = _context()
    with pytest.raises(Unsupported, match="more than one symbolic dim"):
        ctx.reshape(_value("x", [2, 3, 4, 5]), (None, 3, None))
    assert ctx.new_nodes == []


def test_symbolic_batch_frames_to_time():
    """(N·T, C, H, W) frames of a clip with a symbolic batch: the time layout at batch 1 and 3."""
    dims = (None, C, T, H, W)
    for batch in (1, 3):
        ctx = _context()
        clip = _value("clip", ["N", C, T, H, W])
        frames_in = _value("frames", ["NT", C, H, W])
        ctx.set_frames(clip, frames_in)
        assert ctx.rep(clip).dims == dims
        time = ctx.time(clip)
        x = _clip((batch, C, T, H, W), seed=batch)
        (got,) = _run(ctx, [frames_in], [time], {"frames": clip_to_frames(x)})
        np.testing.assert_array_equal(got, x.reshape(batch, C, T, H * W))


# --- a value keeps its representations ----------------------------------------------------------

def test_each_conversion_is_emitted_once():
    ctx = _context()
    clip = _value("clip", DIMS)
    frames_in = _value("frames", frames_dims(DIMS))
    ctx.set_frames(clip, frames_in)
    assert ctx.frames(clip) is frames_in and ctx.new_nodes == []  # already there: nothing emitted

    time = ctx.time(clip)
    emitted = len(ctx.new_nodes)
    assert [n.op_type for n in ctx.new_nodes].count("Transpose") == 1  # Reshape(B, T, C, H·W) + Transpose
    assert ctx.time(clip) is time and ctx.canonical(clip, time_dims(DIMS)) is time
    assert ctx.frames(clip) is frames_in
    assert len(ctx.new_nodes) == emitted  # asked again: nothing new

    flat = ctx.canonical(clip, (B, C * T * H * W))
    assert len(ctx.new_nodes) == emitted + 1  # one Reshape of the time layout, not of the frames
    assert ctx.new_nodes[-1].inputs[0] is time
    assert ctx.canonical(clip, [B, C * T * H * W]) is flat  # a list names the same shape
    assert len(ctx.new_nodes) == emitted + 1


def test_alias_shares_the_representations():
    ctx = _context()
    clip, same = _value("clip", DIMS), _value("same", DIMS)
    ctx.set_canonical(clip, _value("time", time_dims(DIMS)), time_dims(DIMS))
    ctx.alias(same, clip)
    frames = ctx.frames(same)
    count = len(ctx.new_nodes)
    assert ctx.frames(clip) is frames and len(ctx.new_nodes) == count


def test_emit_replaces_a_rank4_output_and_records_a_high_one():
    ctx = _context()
    low = _value("low", (B, C * T * H * W))
    tensor = _value("t", (B, C * T, H * W))
    ctx.emit(low, tensor, (B, C * T, H * W))
    replacement = ctx.replacements[low]
    assert replacement.producer().op_type == "Reshape"
    assert ctx.const_array(replacement.producer().inputs[1]).tolist() == [B, C * T * H * W]

    same = _value("same", (B, C * T, H * W))
    ctx.emit(same, tensor, (B, C * T, H * W))
    assert ctx.replacements[same] is tensor  # the shape already matches: no Reshape

    high = _value("high", DIMS)
    ctx.emit(high, tensor, (B, C * T, H * W))
    assert ctx.rep(high).canonical == {(B, C * T, H * W): tensor} and high not in ctx.replacements


def test_new_names_are_unique_and_prefixed():
    ctx = _context()
    ctx.prefix = "conv1"
    a = ctx.reshape(_value("x", (2, 3)), (3, 2))
    b = ctx.transpose(a, (1, 0))
    names = [n.name for n in ctx.new_nodes] + [a.name, b.name]
    assert len(set(names)) == len(names) and all(name.startswith("conv1/") for name in names)
    const = ctx.ints([1, 2])
    assert const.name in ctx.graph.initializers and ctx.const_array(const).dtype == np.int64
