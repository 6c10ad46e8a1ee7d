"""edge3d.passes.registry: one lowering rule per op type."""

from __future__ import annotations

import pytest

from edge3d.passes import registry


@pytest.fixture
def rules(monkeypatch):
    """A copy of the registry, every rule of the package in it, that the test may change."""
    registry.rule_for("Conv")  # imports the rules package, which registers them all
    copy = dict(registry.RULES)
    monkeypatch.setattr(registry, "RULES", copy)
    return copy


def test_the_package_registers_its_rules(rules):
    from edge3d.passes.rules import conv, pool

    assert registry.rule_for("Conv") is conv.lower_conv
    assert registry.rule_for("MaxPool") is registry.rule_for("AveragePool") is pool.lower_pool  # one rule, two ops
    assert {"Conv", "BatchNormalization", "Reshape", "Transpose", "Concat", "GlobalAveragePool"} <= set(rules)


def test_unknown_op_has_no_rule(rules):
    assert registry.rule_for("NoSuchOp") is None
    assert registry.rule_for("LpPool") is None  # a real ONNX op with no rank-4 rule
    assert registry.rule_for("conv") is None  # op types are case-sensitive


def test_register_adds_a_rule_under_each_op_type(rules):
    @registry.register("TestOpA", "TestOpB")
    def rule(ctx, node):
        return "test"

    assert registry.rule_for("TestOpA") is rule and registry.rule_for("TestOpB") is rule


def test_double_registration_raises(rules):
    before = rules["Conv"]
    with pytest.raises(ValueError, match="two lowering rules for Conv"):
        registry.register("Conv")(lambda ctx, node: "again")
    assert registry.rule_for("Conv") is before  # the first rule stays

    registry.register("TestOnce")(lambda ctx, node: "first")
    with pytest.raises(ValueError, match="two lowering rules for TestOnce"):
        registry.register("TestOnce")(lambda ctx, node: "second")
    assert registry.rule_for("TestOnce")(None, None) == "first"

