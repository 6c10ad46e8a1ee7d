"""The per-op lowering registry: one rule per ONNX op type (or family of op types).

A rule takes the lowering context and a node that touches a rank ≥ 5 value, emits rank-≤4
nodes, records the representation of every high-rank output (or the replacement of every
rank-≤4 output) and returns a short description of what it did, for the rewrite summary.
It raises ``Unsupported`` with a reason when it cannot lower that particular node.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir

from .context import LowerContext

Rule = Callable[[LowerContext, ir.Node], str]
RULES: dict[str, Rule] = {}


def register(*op_types: str) -> Callable[[Rule], Rule]:
    def decorate(rule: Rule) -> Rule:
        for op_type in op_types:
            if op_type in RULES:
                raise ValueError(f"two lowering rules for {op_type}")
            RULES[op_type] = rule
        return rule

    return decorate


def rule_for(op_type: str) -> Rule | None:
    from . import rules  # noqa: F401 - importing the package registers every rule

    return RULES.get(op_type)
