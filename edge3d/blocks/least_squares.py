"""Closed-form least-squares fit of a block to the Conv3d it replaces, on calibration clips.

A block's output is linear in the weights of its fitted convs (``Block.stages``), and every
output channel has its own row of weights over the same features. So the fit is one ridge
regression shared by all output channels: accumulate G = Σ F Fᵀ and R = Σ F Yᵀ clip by clip,
solve G Θ = R. No SGD, and no more memory than one clip's features at a time.
The ridge, towards the projected weights, is chosen on held-out clips (``RIDGES``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layout import clip_to_time
from .structures import Block

# Ridge strengths tried, relative to the Gram matrix's mean diagonal. A few calibration clips give
# fewer positions than a late layer has features, and the plain solve then fits their noise; pulling
# the weights towards the data-free projection instead (ridge towards a prior) lets the held-out
# clips pick how far to trust the data, layer by layer, at the cost of one solve per strength.
RIDGES = (1e-6, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


@dataclass
class NormalEquations:
    """G = Σ F Fᵀ and R = Σ F Yᵀ of a block over some clips, and the convs they fit."""

    gram: torch.Tensor
    rhs: torch.Tensor
    convs: list[nn.Conv2d]


def normal_equations(block: Block, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> NormalEquations:
    gram = rhs = None
    stages = []
    with torch.no_grad():
        for x, y in zip(inputs, outputs):
            b, _, _, h, w = x.shape
            stages, fixed = block.stages(clip_to_time(x), b, h, w)
            target = clip_to_time(y)
            if fixed is not None:
                target = target - fixed
            features = torch.cat([s.features for s in stages]).double()
            targets = target.transpose(0, 1).reshape(target.shape[1], -1).double()
            g, r = features @ features.T, features @ targets.T
            gram, rhs = (g, r) if gram is None else (gram + g, rhs + r)
    if gram is None:
        raise ValueError("no clips to fit on")
    return NormalEquations(gram, rhs, [s.conv for s in stages])


def weights(convs: list[nn.Conv2d]) -> torch.Tensor:
    """The convs' weights (and biases) as one (S, D) matrix, in the order of the features."""
    parts = []
    for conv in convs:
        parts.append(conv.weight.detach().reshape(conv.weight.shape[0], -1))
        if conv.bias is not None:
            parts.append(conv.bias.detach()[:, None])
    return torch.cat(parts, 1).double()


def solve_(system: NormalEquations, ridge: float, prior: torch.Tensor | None = None) -> None:
    """Set the convs to argmin ‖ΘF − Y‖² + λ‖Θ − prior‖² (prior zero where None), λ = ``ridge``
    times the Gram matrix's mean diagonal."""
    gram = system.gram
    lam = ridge * float(gram.diagonal().mean().clamp_min(1e-12))
    rhs = system.rhs if prior is None else system.rhs + lam * prior.T
    theta = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), rhs).T  # (S, D)
    offset = 0
    with torch.no_grad():
        for conv in system.convs:
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(theta[:, offset:offset + fan_in].reshape(conv.weight.shape))
            offset += fan_in
            if conv.bias is not None:
                conv.bias.copy_(theta[:, offset])
                offset += 1


def fit_(block: Block, inputs: list[torch.Tensor], outputs: list[torch.Tensor], ridge: float = 1e-6) -> None:
    """Plain least squares (a vanishing ridge towards zero) on all of ``inputs``."""
    solve_(normal_equations(block, inputs, outputs), ridge)


def fidelity(block: Block, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> dict:
    """Relative L2 error and cosine similarity of the block's output to the layer's."""
    diff = ref = dot = norm_b = 0.0
    with torch.no_grad():
        for x, y in zip(inputs, outputs):
            z = block(x).double()
            y = y.double()
            diff += float(((z - y) ** 2).sum())
            ref += float((y ** 2).sum())
            dot += float((z * y).sum())
            norm_b += float((z ** 2).sum())
    return {"rel_l2": (diff / ref) ** 0.5 if ref else float("nan"),
            "cosine": dot / ((ref * norm_b) ** 0.5) if ref and norm_b else float("nan")}
