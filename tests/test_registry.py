"""edge3d.passes.registry: rules keyed by (domain, op type), each for a range of opsets."""

from __future__ import annotations

import pytest

from edge3d.passes import registry

OPSET = 17


@pytest.fixture
def rules(monkeypatch):
    """A copy of the registry, every rule of the package in it, that the test may change."""
    registry.rule_for("", "Conv", OPSET)  # imports the rules package, which registers them all
    copy = {key: list(entries) for key, entries in registry.RULES.items()}
    monkeypatch.setattr(registry, "RULES", copy)
    return copy


def test_the_package_registers_its_rules(rules):
    from edge3d.passes.rules import conv, pool

    assert registry.rule_for("", "Conv", OPSET) is conv.lower_conv
    assert registry.rule_for("", "MaxPool", OPSET) is registry.rule_for("", "AveragePool", OPSET) is pool.lower_pool
    ops = {op for _, op in rules}
    assert {"Conv", "BatchNormalization", "Reshape", "Transpose", "Concat", "GlobalAveragePool"} <= ops
    assert {domain for domain, _ in rules} == {""}  # every rule is for the default ONNX domain


def test_ai_onnx_names_the_default_domain(rules):
    from edge3d.passes.rules import conv

    assert registry.rule_for("ai.onnx", "Conv", OPSET) is conv.lower_conv
    assert registry.normalize_domain("ai.onnx") == "" and registry.qualified("ai.onnx", "Relu") == "Relu"
    assert registry.qualified("my.custom", "Relu") == "my.custom::Relu"


def test_unknown_op_has_no_rule(rules):
    assert registry.rule_for("", "NoSuchOp", OPSET) is None
    assert registry.rule_for("", "LpPool", OPSET) is None  # a real ONNX op with no rank-4 rule
    assert registry.rule_for("", "conv", OPSET) is None  # op types are case-sensitive
    assert registry.why_no_rule("", "LpPool", OPSET) == "no lowering rule for LpPool"


def test_custom_domain_has_no_rule_and_says_so(rules):
    assert registry.rule_for("my.custom", "Relu", 1) is None  # not the standard Relu's rule
    reason = registry.why_no_rule("my.custom", "Relu", 1)
    assert "my.custom::Relu" in reason and "'my.custom'" in reason


def test_rules_handle_opset_13_and_up_by_default(rules):
    from edge3d.passes.rules import elementwise

    assert registry.rule_for("", "Relu", 13) is registry.rule_for("", "Relu", 23) is elementwise.lower_unary
    assert registry.rule_for("", "Relu", 12) is None
    assert registry.rule_for("", "Relu", None) is None  # the model imports no opset of the domain
    assert "at opset 12 (lower_unary handles opsets 13 and up)" in registry.why_no_rule("", "Relu", 12)


def test_register_adds_a_rule_under_each_op_type(rules):
    @registry.register("TestOpA", "TestOpB")
    def rule(ctx, node):
        return "test"

    assert registry.rule_for("", "TestOpA", OPSET) is rule and registry.rule_for("", "TestOpB", OPSET) is rule
    assert registry.rule_for("my.custom", "TestOpA", OPSET) is None


def test_register_by_domain_and_opset_range(rules):
    def old(ctx, node):
        return "old"

    def new(ctx, node):
        return "new"

    registry.register("TestOp", domain="my.custom", since=1, until=2)(old)
    registry.register("TestOp", domain="my.custom", since=3)(new)
    assert registry.rule_for("my.custom", "TestOp", 1) is registry.rule_for("my.custom", "TestOp", 2) is old
    assert registry.rule_for("my.custom", "TestOp", 3) is registry.rule_for("my.custom", "TestOp", 30) is new
    assert registry.rule_for("", "TestOp", 3) is None  # another domain
    assert registry.registration_for("my.custom", "TestOp", 2).opsets() == "opsets 1 to 2"
    with pytest.raises(ValueError, match="empty opset range"):
        registry.register("TestOp2", since=5, until=4)


def test_double_registration_raises(rules):
    before = registry.rule_for("", "Conv", OPSET)
    with pytest.raises(ValueError, match="two lowering rules for Conv"):
        registry.register("Conv")(lambda ctx, node: "again")
    with pytest.raises(ValueError, match="two lowering rules for Conv"):
        registry.register("Conv", domain="ai.onnx", since=20, until=21)(lambda ctx, node: "overlapping")
    assert registry.rule_for("", "Conv", OPSET) is before  # the first rule stays

    registry.register("TestOnce")(lambda ctx, node: "first")
    with pytest.raises(ValueError, match="two lowering rules for TestOnce"):
        registry.register("TestOnce")(lambda ctx, node: "second")
    assert registry.rule_for("", "TestOnce", OPSET)(None, None) == "first"

    registry.register("TestOnce", domain="my.custom")(lambda ctx, node: "other domain")  # no clash
    with pytest.raises(ValueError, match="two lowering rules for my.custom::TestOnce"):
        registry.register("TestOnce", domain="my.custom")(lambda ctx, node: "again")


def test_fallback_rule_is_tried_after_the_own_rule(rules):
    from edge3d.passes.rules import merged_axes, norm

    entries = registry.registrations_for("", "Softmax", OPSET)
    assert [e.rule for e in entries] == [norm.lower_softmax, merged_axes.merged_one_axis]
    assert registry.rule_for("", "Tile", OPSET) is merged_axes.merged_tile  # only a fallback

    with pytest.raises(ValueError, match="two fallback rules for Softmax"):
        registry.register("Softmax", fallback=True)(lambda ctx, node: "again")
