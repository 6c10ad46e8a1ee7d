"""Registry of the example models: a factory, its full-size input and a small test size.

``small`` keeps the same structure (every op kind, every stride) at a size the test suite can
export and verify in seconds on two cores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from .c3d import c3d
from .eco_lite import eco_lite
from .r3d import r3d18
from .shufflenet3d import shufflenet3d
from .slowfast import slowfast
from .x3d import x3d


@dataclass(frozen=True)
class Example:
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    small_kwargs: dict = field(default_factory=dict)
    small_input_shape: tuple[int, ...] = ()
    summary: str = ""


EXAMPLES: dict[str, Example] = {
    "eco-lite": Example(
        eco_lite, (1, 96, 16, 28, 28), dict(width=0.125, num_classes=10), (1, 96, 4, 8, 8),
        "ECO-Lite 3D-Net of the paper's Table I (96x16x28x28 features in)",
    ),
    "eco-lite-full": Example(
        lambda **kw: eco_lite(with_2d_net=True, **kw), (1, 3, 16, 243, 243),
        dict(width=0.125, num_classes=10), (1, 3, 4, 64, 64),
        "ECO-Lite with a compact 2D-Net in front (RGB clips in)",
    ),
    "c3d": Example(c3d, (1, 3, 16, 112, 112), dict(width=0.0625, num_classes=10), (1, 3, 16, 32, 32),
                   "C3D-style plain Conv3d stack with max pools"),
    "r3d18": Example(r3d18, (1, 3, 16, 112, 112), dict(width=0.125, num_classes=10), (1, 3, 4, 32, 32),
                     "R3D-18-style residual net"),
    "x3d": Example(x3d, (1, 3, 16, 160, 160), dict(width=0.5, num_classes=10, depths=(1, 1, 2, 1)),
                   (1, 3, 4, 32, 32), "X3D-style net: depthwise Conv3d, squeeze-excitation, expansion"),
    "shufflenet3d": Example(
        shufflenet3d, (1, 3, 16, 112, 112), dict(width=0.25, num_classes=10, depths=(1, 2, 1)),
        (1, 3, 16, 48, 48), "3D-ShuffleNet-style net: grouped Conv3d, 6D channel shuffle",
    ),
    "slowfast": Example(slowfast, (1, 3, 16, 112, 112), dict(width=0.25, num_classes=10),
                        (1, 3, 8, 32, 32), "SlowFast-style two-pathway net with lateral connections"),
}


def build(name: str, small: bool = False, **kwargs) -> tuple[nn.Module, tuple[int, ...]]:
    """Build an example in eval mode and return it with its input shape."""
    example = EXAMPLES[name]
    args = {**(example.small_kwargs if small else {}), **kwargs}
    model = example.factory(**args).eval()
    return model, example.small_input_shape if small else example.input_shape
