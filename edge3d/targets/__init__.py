"""Target profiles: data files (``profiles/*.toml``) read into frozen dataclasses.

A profile says what a device's runtime accepts — max rank, opset, allowed ops with per-op
limits, static shapes or not, precisions — and which artifacts a bundle for it carries.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ..errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROFILES = Path(__file__).with_name("profiles")


def _frozen(value):
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    max_rank: int
    opset: int
    static_shapes: bool
    precisions: tuple[str, ...]
    default_precision: str
    artifacts: tuple[str, ...]
    allowed_ops: frozenset[str] | None = None  # None: any op
    max_batch: int | None = None  # None: any; 1 for an NPU that runs one image at a time
    fallback: bool = True  # False: a layer the profile rejects cannot run elsewhere (a DLA without GPU fallback)
    op_limits: Mapping = field(default_factory=lambda: MappingProxyType({}))
    tensorrt: Mapping = field(default_factory=lambda: MappingProxyType({}))
    tvm: Mapping = field(default_factory=lambda: MappingProxyType({}))
    rknn: Mapping = field(default_factory=lambda: MappingProxyType({}))
    ethos_u: Mapping = field(default_factory=lambda: MappingProxyType({}))
    lowering: Mapping = field(default_factory=lambda: MappingProxyType({}))  # {"chunked_conv": False}

    @classmethod
    def from_file(cls, path: Path) -> Target:
        data = tomllib.loads(path.read_text())
        ops = data.pop("ops", {})
        allowed = ops.get("allowed")
        return cls(
            precisions=tuple(data.pop("precisions")), artifacts=tuple(data.pop("artifacts")),
            allowed_ops=frozenset(allowed) if allowed is not None else None,
            op_limits=_frozen(ops.get("limits", {})),
            **{k: _frozen(data.pop(k, {})) for k in ("tensorrt", "tvm", "rknn", "ethos_u", "lowering")},
            **data,
        )


    def to_dict(self) -> dict:
        """The profile as `edge3d targets --format json` lists it: plain JSON types, allowed ops sorted."""
        nested = ("allowed_ops", "op_limits", "tensorrt", "tvm", "rknn", "ethos_u", "lowering")
        plain = {k: v for k, v in vars(self).items() if k not in nested}
        plain.update(precisions=list(self.precisions), artifacts=list(self.artifacts),
                     allowed_ops=sorted(self.allowed_ops) if self.allowed_ops else None,
                     lowering=dict(self.lowering))
        return plain


def all_targets() -> list[Target]:
    return [Target.from_file(p) for p in sorted(PROFILES.glob("*.toml"))]


def load_target(name: str) -> Target:
    path = PROFILES / f"{name}.toml"
    if not path.is_file():
        names = ", ".join(t.name for t in all_targets())
        raise InputError(f"unknown target {name!r}; available: {names}")
    return Target.from_file(path)
