"""Closed-form least-squares fit of a block to the Conv3d it replaces, on calibration clips.

A block's output is linear in the weights of its fitted convs (``Block.stages``), and every
output channel has its own row of weights over the same features. So the fit is one ridge
regression shared by all output channels: accumulate G = Σ F Fᵀ and R = Σ F Yᵀ clip by clip,
solve G Θ = R. No SGD, and no more memory than one clip's features at a time.
"""

from __future__ import annotations

import torch

from .layout import clip_to_time
from .structures import Block


def fit_(block: Block, inputs: list[torch.Tensor], outputs: list[torch.Tensor], ridge: float = 1e-6) -> None:
    gram = rhs = None
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
        gram += ridge * gram.diagonal().mean().clamp_min(1e-12) * torch.eye(gram.shape[0], dtype=gram.dtype)
        theta = torch.linalg.solve(gram, rhs).T  # (S, D)
        offset = 0
        for stage in stages:
            conv = stage.conv
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(theta[:, offset:offset + fan_in].reshape(conv.weight.shape))
            offset += fan_in
            if conv.bias is not None:
                conv.bias.copy_(theta[:, offset])
                offset += 1


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
