"""The lowering pass's contract with its rules: a refusing rule leaves no trace, rules are keyed by
(domain, op type, opset), the pass's preconditions and postconditions, and a rule's own bug is
reported with the rule, the node and its op."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from conftest import invoke, stderr_lines
from lowering_harness import float_input, make_model, tensor
from onnx import helper

from edge3d.layouts import clip_to_frames, frames_to_clip
from edge3d.passes import LoweringError, lower_model, registry
from edge3d.passes.context import LowerContext, Unsupported
from edge3d.passes.lower_rank import LoweringPreconditionError, RuleContractError, RuleFailed

SHAPE = (1, 2, 4, 6, 6)


@pytest.fixture
def rules(monkeypatch):
    """A copy of the registry that a test may add temporary rules to."""
    registry.rule_for("", "Conv", 17)  # imports the rules package, which registers them all
    copy = {key: list(entries) for key, entries in registry.RULES.items()}
    monkeypatch.setattr(registry, "RULES", copy)
    return copy


def temporal_conv_then(op_node, extra_outputs=("r",)):
    """x → temporal Conv (its output is known by its time layout only) → ``op_node`` and a Relu."""
    weight = np.random.default_rng(0).standard_normal((2, 2, 3, 1, 1))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], name="tconv", kernel_shape=[3, 1, 1], pads=[1, 0, 0, 1, 0, 0]),
        op_node,
        helper.make_node("Relu", ["y"], ["r"], name="relu"),
    ]
    outputs = [helper.make_tensor_value_info(name, 1, None) for name in (op_node.output[0], *extra_outputs)]
    return make_model(nodes, [float_input("x", SHAPE)], outputs, [tensor("w", weight)])


def run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def run_lowered_like_original(original, lowered, report, x):
    """The lowered model's outputs, converted back to the original layouts."""
    layouts = report.layouts
    feeds = {"x": clip_to_frames(x) if layouts.get("x", {}).get("layout") == "frames" else x}
    got = run(lowered, feeds)
    names = [o.name for o in lowered.graph.output]
    return [frames_to_clip(g, layouts[n]["original_shape"][0]) if layouts.get(n, {}).get("layout") == "frames"
            else g for n, g in zip(names, got)]


# --- 1. a refusing rule leaves no trace -----------------------------------------------------------

def test_a_rule_that_converts_then_refuses_leaves_no_trace(rules):
    """The refusing rule asked for the frames of y (Reshape + Transpose, cached in y's Rep) before it
    refused; the Relu, which runs on frames when they exist, must not read those discarded nodes."""

    @registry.register("LpPool")
    def convert_then_refuse(ctx: LowerContext, node: ir.Node) -> str:
        ctx.frames(node.inputs[0])
        ctx.ints([1, 2, 3])  # an initializer, also rolled back
        raise Unsupported("refused after converting")

    model = temporal_conv_then(helper.make_node("LpPool", ["y"], ["p"], name="lp", kernel_shape=[1, 2, 2]))
    lowered, report = lower_model(model, allow_high_rank=True)
    onnx.checker.check_model(lowered, full_check=True)
    assert [(u.name, u.reason) for u in report.unsupported] == [("lp", "refused after converting")]
    assert [init.dims for init in lowered.graph.initializer if list(init.dims) == [3]] == []  # no orphan [1, 2, 3]

    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    expected = run(model, {"x": x})
    got = run_lowered_like_original(model, lowered, report, x)
    for want, have in zip(expected, got):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5)
    relu = next(n for n in report.lowered if n["node"] == "relu")
    assert relu["rule"] == "Relu on the time layout"  # the frames of y were rolled back with the refusal


def test_transaction_restores_the_context():
    graph = ir.Graph([], [], nodes=[], opset_imports={"": 17}, name="g")
    ctx = LowerContext(graph, 17)
    dims = (1, 2, 4, 3, 3)
    clip = ir.Value(name="clip", shape=ir.Shape(dims), type=ir.TensorType(ir.DataType.FLOAT))
    time_in = ir.Value(name="time", shape=ir.Shape([1, 2, 4, 9]), type=ir.TensorType(ir.DataType.FLOAT))
    ctx.set_canonical(clip, time_in, (1, 2, 4, 9))
    other = ir.Value(name="other", shape=ir.Shape(dims), type=ir.TensorType(ir.DataType.FLOAT))
    with pytest.raises(Unsupported, match="no"), ctx.transaction():
        frames = ctx.frames(clip)
        ctx.set_frames(other, frames)
        ctx.replace(time_in, frames)
        raise Unsupported("no")
    rep = ctx.rep(clip)
    assert rep.frames is None and list(rep.canonical) == [(1, 2, 4, 9)]
    assert other not in ctx.reps and ctx.replacements == {} and ctx.new_nodes == []
    assert len(graph.initializers) == 0 and not time_in.uses()  # consts removed, discarded nodes detached

    with ctx.transaction():  # nested: the inner one kept, the outer one kept
        with ctx.transaction():
            frames = ctx.frames(clip)
    assert ctx.rep(clip).frames is frames and ctx.new_nodes

    with pytest.raises(Unsupported), ctx.transaction():  # the outer refusal undoes a committed inner one
        with ctx.transaction():
            flat = ctx.canonical(clip, (1, 72))
        raise Unsupported("outer")
    assert (1, 72) not in ctx.rep(clip).canonical and flat.producer() not in ctx.new_nodes
    assert ctx.rep(clip).frames is frames


# --- 2. rules keyed by (domain, op type) ----------------------------------------------------------

def custom_relu_model():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="custom_relu", domain="my.custom")]
    graph = helper.make_graph(nodes, "g", [float_input("x", SHAPE)], [helper.make_tensor_value_info("y", 1, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.custom", 1)])
    model.ir_version = 8
    return model


def test_a_custom_domain_op_is_not_lowered_as_the_standard_one():
    with pytest.raises(LoweringError) as caught:
        lower_model(custom_relu_model())
    (item,) = caught.value.report.unsupported
    assert item.name == "custom_relu" and item.op == "my.custom::Relu"
    assert "'my.custom'" in item.reason
    assert "my.custom::Relu" in str(caught.value)

    lowered, report = lower_model(custom_relu_model(), allow_high_rank=True)
    assert [(n.domain, n.op_type) for n in lowered.graph.node if n.op_type == "Relu"] == [("my.custom", "Relu")]
    assert report.lowered == []


def test_ai_onnx_domain_is_the_default_one():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    model = make_model(nodes, [float_input("x", SHAPE)], [helper.make_tensor_value_info("y", 1, None)])
    model.graph.node[0].domain = "ai.onnx"  # after shape inference, which does not take that spelling
    lowered, report = lower_model(model, shapes_inferred=True)
    assert [n["rule"] for n in report.lowered] == ["Relu on frames"]


# --- 3. preconditions -----------------------------------------------------------------------------

def test_an_opset_below_13_is_refused_before_lowering():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    model = make_model(nodes, [float_input("x", SHAPE)], [helper.make_tensor_value_info("y", 1, None)], opset=12)
    with pytest.raises(LoweringPreconditionError, match="opset 12; the lowering rules handle opset 13 and up"):
        lower_model(model)
    lowered, report = lower_model(model, allow_high_rank=True)  # allowed: nothing is lowered
    assert [u.op for u in report.unsupported] == ["opset"] and report.lowered == []
    assert [d.dim_value for d in lowered.graph.input[0].type.tensor_type.shape.dim] == list(SHAPE)


def test_a_node_with_an_unknown_shape_is_reported_not_run():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "u"], ["y"], name="add"),
    ]
    unknown = helper.make_tensor_value_info("u", 1, None)
    model = make_model(nodes, [float_input("x", SHAPE), unknown], [helper.make_tensor_value_info("y", 1, None)])
    with pytest.raises(LoweringError) as caught:
        lower_model(model)
    (item,) = caught.value.report.unsupported
    assert item.name == "add" and "'u'" in item.reason and "unknown after shape inference" in item.reason


# --- 3. postconditions and a rule's own bugs ------------------------------------------------------

def lp_model():
    nodes = [
        helper.make_node("LpPool", ["x"], ["p"], name="lp", kernel_shape=[1, 2, 2]),
        helper.make_node("Relu", ["p"], ["y"], name="relu"),
    ]
    return make_model(nodes, [float_input("x", SHAPE)], [helper.make_tensor_value_info("y", 1, None)])


def test_a_rule_that_forgets_an_output_breaks_its_contract(rules):
    @registry.register("LpPool")
    def forgetful(ctx: LowerContext, node: ir.Node) -> str:
        return "did nothing"

    with pytest.raises(RuleContractError, match=r"rule forgetful broke its contract on node lp \(LpPool\): "
                                                r"the rank-5 output 'p' has no rank-4 representation") as caught:
        lower_model(lp_model(), allow_high_rank=True)
    assert (caught.value.rule, caught.value.node, caught.value.op) == ("forgetful", "lp", "LpPool")


def test_a_rule_that_leaves_a_rank5_value_in_use_fails_the_postcondition(rules):
    @registry.register("LpPool")
    def reads_the_rank5_value(ctx: LowerContext, node: ir.Node) -> str:
        ctx.set_canonical(node.outputs[0], ctx.op("Identity", [node.inputs[0]]), SHAPE[:3] + (25,))  # p: 1, 2, 4, 5x5
        return "Identity of the rank-5 value itself"

    with pytest.raises(ir.passes.PostconditionError, match="above rank 4 remain after lowering: x__rank5"):
        lower_model(lp_model())


def test_a_rule_that_crashes_is_named_with_its_node(rules, tmp_path):
    @registry.register("LpPool")
    def crashing(ctx: LowerContext, node: ir.Node) -> str:
        ctx.frames(node.inputs[0])
        raise ValueError("boom")

    with pytest.raises(RuleFailed, match=r"^rule crashing failed on node lp \(LpPool\): ValueError: boom$") as caught:
        lower_model(lp_model(), allow_high_rank=True)
    assert isinstance(caught.value.__cause__, ValueError)

    src = tmp_path / "m.onnx"
    onnx.save(lp_model(), src)
    result = invoke("lower", src, "-o", tmp_path / "low.onnx")
    assert result.exit_code == 3
    (line,) = stderr_lines(result)
    assert "internal error: RuleFailed: rule crashing failed on node lp (LpPool): ValueError: boom" in line
    assert not (tmp_path / "low.onnx").exists()
