"""Conv3d lowering over random configurations (hypothesis), then random pools, BN, activations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lowering_harness import check_lowering, float_input, make_model, tensor
from onnx import helper

from edge3d.passes import LoweringError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def out_size(size, k, s, d, pb, pe, ceil=False):
    span = size + pb + pe - d * (k - 1) - 1
    return (-(-span // s) if ceil else span // s) + 1


@st.composite
def conv_configs(draw):
    groups_kind = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    group = {"dense": 1, "grouped": 2, "depthwise": draw(st.integers(2, 4))}[groups_kind]
    cin = group * (draw(st.integers(1, 2)) if groups_kind != "depthwise" else 1)
    cout = group * draw(st.integers(1, 2))
    dims = [draw(st.integers(1, 7)) for _ in range(3)]
    kernel = [draw(st.integers(1, 5)) for _ in range(3)]
    strides = [draw(st.integers(1, 3)) for _ in range(3)]
    dilations = [draw(st.integers(1, 2)) for _ in range(3)]
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if auto_pad.startswith("SAME"):
        dilations = [1, 1, 1]  # ONNX Runtime rejects dilated SAME convs in the source model
    begin = [draw(st.integers(0, 3)) for _ in range(3)]
    end = [draw(st.integers(0, 3)) for _ in range(3)] if draw(st.booleans()) else list(begin)
    if auto_pad == "NOTSET":
        for size, k, s, d, pb, pe in zip(dims, kernel, strides, dilations, begin, end):
            assume(out_size(size, k, s, d, pb, pe) >= 1)
    else:
        for size, k, d in zip(dims, kernel, dilations):
            assume(auto_pad != "VALID" or size >= d * (k - 1) + 1)
    return dict(batch=draw(st.integers(1, 2)), cin=cin, cout=cout, group=group, dims=dims, kernel=kernel,
                strides=strides, dilations=dilations, auto_pad=auto_pad, pads=begin + end,
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def conv_model(cfg, extra_nodes=(), extra_inits=(), out_name="y"):
    rng = np.random.default_rng(cfg["seed"])
    weight = rng.standard_normal((cfg["cout"], cfg["cin"] // cfg["group"], *cfg["kernel"]))
    inits = [tensor("w", weight)]
    inputs = ["x", "w"]
    if cfg["bias"]:
        inits.append(tensor("b", rng.standard_normal(cfg["cout"])))
        inputs.append("b")
    attrs = dict(kernel_shape=cfg["kernel"], strides=cfg["strides"], dilations=cfg["dilations"], group=cfg["group"])
    if cfg["auto_pad"] == "NOTSET":
        attrs["pads"] = cfg["pads"]
    else:
        attrs["auto_pad"] = cfg["auto_pad"]
    conv = helper.make_node("Conv", inputs, ["conv" if extra_nodes else out_name], **attrs)
    shape = (cfg["batch"], cfg["cin"], *cfg["dims"])
    model = make_model([conv, *extra_nodes], [float_input("x", shape)],
                       [helper.make_tensor_value_info(out_name, 1, None)], inits + list(extra_inits))
    feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
    return model, feeds


@SETTINGS
@given(cfg=conv_configs(), strategy=st.sampled_from(["auto", "gathered", "summed", "chunked"]),
       chunk_budget=st.integers(1, 4096))
def test_random_conv3d_lowers_exactly(cfg, strategy, chunk_budget):
    """``chunk_budget``: bytes per chunk of the chunked form, small enough here for chunks of one
    or a few output frames (a real budget covers these clips whole)."""
    from unittest import mock

    from edge3d.passes.rules import conv

    model, feeds = conv_model(cfg)
    with mock.patch.object(conv, "CHUNK_BUDGET", chunk_budget):
        check_lowering(model, feeds, conv_strategy=strategy)


NO_GATHER = frozenset({"Conv", "Add", "Concat", "Slice", "Pad", "Reshape", "Transpose"})  # a DLA-like profile


@SETTINGS
@given(cfg=conv_configs(), strategy=st.sampled_from(["gathered", "summed", "chunked"]))
def test_random_conv3d_without_gather(cfg, strategy):
    """For a profile without Gather (jetson-dla), the temporal taps are strided slices of the
    zero-padded frames: exact for every stride, dilation and padding, and no Gather emitted."""
    model, feeds = conv_model(cfg)
    lowered, _ = check_lowering(model, feeds, conv_strategy=strategy, allowed_ops=NO_GATHER)
    assert "Gather" not in {node.op_type for node in lowered.graph.node}


@SETTINGS
@given(cfg=conv_configs())
def test_a_profile_that_concatenates_only_on_channels_gets_no_chunks(cfg):
    """A DLA concatenates on channels only: the chunked form, whose chunks are concatenated on
    frames, becomes the summed one, even where asked for (R3D-18 at 16×112×112 chose chunks for
    its large layers and failed the jetson-dla export)."""
    from unittest import mock

    from edge3d.passes.rules import conv

    model, feeds = conv_model(cfg)
    with mock.patch.object(conv, "CHUNK_BUDGET", 1):  # one output frame per chunk, were there chunks
        lowered, report = check_lowering(model, feeds, conv_strategy="chunked", allowed_ops=NO_GATHER,
                                         op_limits={"Concat": {"axes": [1]}})
    concats = [n for n in lowered.graph.node if n.op_type == "Concat"]
    assert all(a.i == 1 for n in concats for a in n.attribute if a.name == "axis")
    assert not any("output frames at a time" in item["rule"] for item in report.to_dict()["nodes"])


@st.composite
def follow_ups(draw):
    """A pool, BN and an activation after the conv, each optional."""
    nodes, current = [], "conv"
    if draw(st.booleans()):
        kind = draw(st.sampled_from(["MaxPool", "AveragePool"]))
        kernel = [draw(st.integers(1, 3)) for _ in range(3)]
        pads = [draw(st.integers(0, k - 1)) for k in kernel] + [draw(st.integers(0, k - 1)) for k in kernel]
        attrs = dict(kernel_shape=kernel, strides=[draw(st.integers(1, 2)) for _ in range(3)], pads=pads,
                     ceil_mode=int(draw(st.booleans())))
        if kind == "AveragePool":
            attrs["count_include_pad"] = int(draw(st.booleans()))
        nodes.append(helper.make_node(kind, [current], ["pool"], **attrs))
        current = "pool"
    if draw(st.booleans()):
        nodes.append(helper.make_node("BatchNormalization", [current, "scale", "shift", "mean", "var"], ["bn"],
                                      epsilon=1e-3))
        current = "bn"
    act = draw(st.sampled_from([None, "Relu", "Sigmoid", "LeakyRelu", "HardSwish"]))
    if act:
        nodes.append(helper.make_node(act, [current], ["act"]))
        current = "act"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    return nodes


@SETTINGS
@given(cfg=conv_configs(), tail=follow_ups())
def test_conv3d_followed_by_pool_bn_activation(cfg, tail):
    rng = np.random.default_rng(cfg["seed"] + 1)
    c = cfg["cout"]
    inits = [tensor("scale", rng.uniform(0.5, 2, c)), tensor("shift", rng.standard_normal(c)),
             tensor("mean", rng.standard_normal(c)), tensor("var", rng.uniform(0.5, 2, c))]
    model, feeds = conv_model(cfg, tail, inits)
    try:
        model_ok = _valid_pool_shapes(model)
    except Exception:  # noqa: BLE001 - a window larger than its input: not a valid model
        model_ok = False
    assume(model_ok)
    try:
        check_lowering(model, feeds)
    except LoweringError as exc:  # the one refusal allowed here, tested on its own below
        assert "ceil_mode window that starts in the padding" in str(exc)


def _valid_pool_shapes(model) -> bool:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info]
    return all(all(d > 0 for d in ds) for ds in dims)


@pytest.mark.parametrize("group", [3, 6], ids=["grouped", "depthwise"])
@pytest.mark.parametrize("strategy", ["gathered", "summed"])
def test_depthwise_and_grouped_conv_both_strategies(strategy, group):
    cfg = dict(batch=2, cin=6, cout=6, group=group, dims=[5, 6, 6], kernel=[3, 3, 3], strides=[2, 1, 1],
               dilations=[1, 1, 1], auto_pad="NOTSET", pads=[1, 1, 1, 0, 1, 1], bias=True, seed=3)
    model, feeds = conv_model(cfg)
    lowered, report = check_lowering(model, feeds, conv_strategy=strategy)
    (item,) = report.lowered
    assert strategy in item["rule"]
    # the three taps in the channels of one Conv2d, or one Conv2d per tap
    assert [n.op_type for n in lowered.graph.node].count("Conv") == {"gathered": 1, "summed": 3}[strategy]


def test_special_forms_are_chosen():
    base = dict(batch=1, cin=2, cout=3, group=1, dims=[4, 5, 5], strides=[1, 1, 1], dilations=[1, 1, 1],
                auto_pad="NOTSET", bias=False, seed=0)
    _, spatial = check_lowering(*conv_model({**base, "kernel": [1, 3, 3], "pads": [0, 1, 1, 0, 1, 1]}))
    _, temporal = check_lowering(*conv_model({**base, "kernel": [3, 1, 1], "pads": [1, 0, 0, 1, 0, 0]}))
    assert spatial.lowered[0]["rule"] == "Conv3d → Conv2d on frames"
    assert temporal.lowered[0]["rule"] == "Conv3d → (kt, 1) Conv2d on the time layout"
    assert spatial.lowered[0]["into"] == {"Conv": 1}


@pytest.mark.parametrize("strategy", ["auto", "gathered", "summed", "chunked"])
def test_taps_that_only_read_padding_are_dropped(strategy):
    """kt = 3 on one frame: only the centre tap reads data, so no Pad and no Gather remain
    (rknn-toolkit2 2.5 computes a Pad on a size-1 axis wrongly)."""
    cfg = dict(batch=1, cin=4, cout=5, group=1, dims=[1, 4, 4], kernel=[3, 3, 3], strides=[1, 1, 1],
               dilations=[1, 1, 1], auto_pad="NOTSET", pads=[1, 1, 1, 1, 1, 1], bias=True, seed=5)
    lowered, report = check_lowering(*conv_model(cfg), conv_strategy=strategy)
    ops = [n.op_type for n in lowered.graph.node]
    assert ops.count("Conv") == 1 and "Pad" not in ops and "Gather" not in ops
    assert "2 taps that only read padding dropped" in report.lowered[0]["rule"]


def test_conv_whose_every_output_frame_reads_padding():
    cfg = dict(batch=2, cin=2, cout=3, group=1, dims=[1, 3, 3], kernel=[1, 3, 3], strides=[3, 1, 1],
               dilations=[1, 1, 1], auto_pad="NOTSET", pads=[2, 0, 0, 0, 0, 0], bias=True, seed=6)
    _, report = check_lowering(*conv_model(cfg))
    assert "temporal taps" in report.lowered[0]["rule"]


@pytest.mark.parametrize("kt, channels, group, gathered_mib, expected", [
    (3, 64, 1, 9, "gathered"),     # dense, small clip: gathering is faster
    (3, 64, 1, 38, "chunked"),     # dense, large clip: no kt-times larger input, one chunk's taps at a time
    (3, 64, 4, 9, "gathered"),
    (3, 96, 96, 1, "summed"),      # depthwise
])
def test_auto_strategy_by_kernel_and_size(kt, channels, group, gathered_mib, expected):
    from edge3d.passes.rules.conv import choose_strategy

    assert choose_strategy(kt, channels, group, gathered_mib * 2**20) == expected


def test_a_large_dense_conv3d_is_chunked_under_auto():
    """No Gather collects the taps into a kt-times larger tensor when it would pass the budget:
    each tap of each chunk is a slice of the clip, convolved with the tap's own kernel."""
    import onnx_ir as ir

    from edge3d.passes import lower_model

    cfg = dict(batch=1, cin=64, cout=8, group=1, dims=[8, 96, 96], kernel=[3, 3, 3], strides=[1, 1, 1],
               dilations=[1, 1, 1], auto_pad="NOTSET", pads=[1] * 6, bias=False, seed=0)
    model, _ = conv_model(cfg)
    lowered, report = lower_model(model)  # gathered: 3 × 8 frames × 64 × 96 × 96 × 4 B = 54 MiB
    nodes = list(ir.from_proto(lowered).graph)
    convs = [n for n in nodes if n.op_type == "Conv"]
    assert "1 output frames at a time" in report.lowered[0]["rule"]  # 4 MiB of 2.25 MiB frames
    # frames 1-6: three taps each; frames 0 and 7: two (their third tap reads the padding)
    assert len(convs) == 22 and all(n.inputs[1].shape[1] == 64 for n in convs)
    assert not any(n.op_type == "Gather" for n in nodes)


@pytest.mark.parametrize("batch", [1, 2])
def test_chunked_conv_one_output_frame_at_a_time(batch):
    """Chunks of one output frame, some of which read only temporal padding (their output is the
    bias): exact, sliced rather than gathered, and one Conv2d per live tap and chunk."""
    from unittest import mock

    from edge3d.passes.rules import conv

    cfg = dict(batch=batch, cin=2, cout=3, group=1, dims=[2, 4, 4], kernel=[3, 3, 3], strides=[1, 1, 1],
               dilations=[1, 1, 1], auto_pad="NOTSET", pads=[3, 1, 1, 3, 1, 1], bias=True, seed=7)
    with mock.patch.object(conv, "CHUNK_BUDGET", 1):
        lowered, report = check_lowering(*conv_model(cfg), conv_strategy="chunked")
    ops = [n.op_type for n in lowered.graph.node]
    assert "1 output frames at a time" in report.lowered[0]["rule"]
    assert "Gather" not in ops and ops.count("Concat") == 1
    assert ops.count("Conv") >= 6  # one Conv2d per live tap of each of the 6 output frames (onnxsim merges repeats)
