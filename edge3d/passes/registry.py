"""The per-op lowering registry: rules keyed by ``(domain, op_type)``, each for a range of opsets.

A rule takes the lowering context and a node that touches a rank ≥ 5 value, emits rank-≤4
nodes, records the representation of every used high-rank output (or the replacement of every
used rank-≤4 output) and returns a short description of what it did, for the rewrite summary.
It raises ``Unsupported`` with a reason when it cannot lower that particular node; everything
it changed before is then rolled back (``LowerContext.transaction``).

The domain ``""`` is the default ONNX domain, which a model may also spell ``"ai.onnx"``. A rule
handles the opsets ``since`` to ``until`` (inclusive; ``until=None``: every later one) of its
domain; by default the opsets from ``MIN_OPSET`` on, whose attributes and inputs the rules read.

An op may also have a *fallback* rule (``register(..., fallback=True)``): the general axis-merging
lowering (``rules.merged_axes``), tried when the op's own rule refuses a node or when the op has
no rule of its own. The own rules produce the layouts the rest of the graph wants (frames); the
fallback lowers any rank on the value's row-major form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx_ir as ir

from ..choices import MIN_OPSET
from .context import LowerContext

Rule = Callable[[LowerContext, ir.Node], str]
DEFAULT_DOMAIN = ""
_DOMAIN_ALIASES = {"ai.onnx": DEFAULT_DOMAIN}


def normalize_domain(domain: str) -> str:
    """``"ai.onnx"`` and ``""`` both name the default ONNX domain."""
    return _DOMAIN_ALIASES.get(domain, domain)


def qualified(domain: str, op_type: str) -> str:
    """``Relu`` for the default domain, ``my.domain::Relu`` for any other."""
    domain = normalize_domain(domain)
    return f"{domain}::{op_type}" if domain else op_type


@dataclass(frozen=True)
class Registration:
    rule: Rule
    domain: str
    op_type: str
    since: int
    until: int | None  # inclusive; None: no upper bound
    fallback: bool = False

    @property
    def name(self) -> str:
        return str(getattr(self.rule, "__name__", repr(self.rule)))

    def handles(self, opset: int | None) -> bool:
        return opset is not None and self.since <= opset and (self.until is None or opset <= self.until)

    def overlaps(self, other: Registration) -> bool:
        low = max(self.since, other.since)
        highs = [u for u in (self.until, other.until) if u is not None]
        return not highs or low <= min(highs)

    def opsets(self) -> str:
        if self.until is None:
            return f"opsets {self.since} and up"
        return f"opset {self.since}" if self.until == self.since else f"opsets {self.since} to {self.until}"


RULES: dict[tuple[str, str], list[Registration]] = {}


def register(*op_types: str, domain: str = DEFAULT_DOMAIN, since: int = MIN_OPSET,
             until: int | None = None, fallback: bool = False) -> Callable[[Rule], Rule]:
    """Register a rule for ``op_types`` of ``domain``, opsets ``since`` to ``until`` (inclusive);
    a ``fallback`` rule is tried after the op's own rule."""
    domain = normalize_domain(domain)
    if until is not None and until < since:
        raise ValueError(f"empty opset range {since} to {until}")

    def decorate(rule: Rule) -> Rule:
        for op_type in op_types:
            new = Registration(rule, domain, op_type, since, until, fallback)
            entries = RULES.setdefault((domain, op_type), [])
            if any(new.overlaps(old) and old.fallback == fallback for old in entries):
                kind = "fallback rules" if fallback else "lowering rules"
                raise ValueError(f"two {kind} for {qualified(domain, op_type)} ({new.opsets()})")
            entries.append(new)
        return rule

    return decorate


def registrations_for(domain: str, op_type: str, opset: int | None) -> list[Registration]:
    """The rules to try, in order, for ``op_type`` of ``domain`` at ``opset``: its own rule, then
    its fallback (each where registered)."""
    from . import rules  # noqa: F401 - importing the package registers every rule

    entries = [e for e in RULES.get((normalize_domain(domain), op_type), []) if e.handles(opset)]
    return sorted(entries, key=lambda e: e.fallback)


def registration_for(domain: str, op_type: str, opset: int | None) -> Registration | None:
    """The first rule to try (the op's own rule where it has one), or None."""
    entries = registrations_for(domain, op_type, opset)
    return entries[0] if entries else None


def rule_for(domain: str, op_type: str, opset: int | None) -> Rule | None:
    """The rule for ``op_type`` of ``domain`` at ``opset`` (that domain's opset), or None."""
    entry = registration_for(domain, op_type, opset)
    return None if entry is None else entry.rule


def why_no_rule(domain: str, op_type: str, opset: int | None) -> str:
    """Why ``rule_for`` found nothing, for the report."""
    from . import rules  # noqa: F401 - importing the package registers every rule

    domain = normalize_domain(domain)
    name = qualified(domain, op_type)
    if not any(d == domain for d, _ in RULES):
        return (f"no lowering rule for {name}: no rule handles ops of the domain {domain!r} "
                "(the rules lower the default ONNX domain, ai.onnx)")
    entries = RULES.get((domain, op_type), [])
    if not entries:
        return f"no lowering rule for {name}"
    at = "an unknown opset" if opset is None else f"opset {opset}"
    covered = "; ".join(f"{e.name} handles {e.opsets()}" for e in entries)
    return f"no lowering rule for {name} at {at} ({covered})"
