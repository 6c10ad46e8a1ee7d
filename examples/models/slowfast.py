"""A SlowFast-style two-pathway net on one input clip.

The slow pathway takes every ``alpha``-th frame (temporal slicing), the fast pathway all frames
with ``beta`` times fewer channels; a time-strided lateral Conv3d (kernel 5x1x1, stride alpha)
carries fast features into the slow pathway, where they are concatenated on channels.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNAct3d, scaled


class SlowFast(nn.Module):
    def __init__(self, num_classes=400, width=1.0, alpha=4, beta=8):
        super().__init__()
        self.alpha = alpha
        slow = [scaled(v, width) for v in (64, 128, 256)]
        fast = [max(4, s // beta) for s in slow]
        self.slow_stem = ConvBNAct3d(3, slow[0], (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3))
        self.fast_stem = ConvBNAct3d(3, fast[0], (5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3))
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.laterals = nn.ModuleList()
        self.slow_stages = nn.ModuleList()
        self.fast_stages = nn.ModuleList()
        for i in range(len(slow)):
            self.laterals.append(
                nn.Conv3d(fast[i], 2 * fast[i], (5, 1, 1), stride=(alpha, 1, 1), padding=(2, 0, 0))
            )
            if i + 1 < len(slow):
                stride = (1, 2, 2)
                # Slow pathway: no temporal kernel in early stages, as in SlowFast.
                self.slow_stages.append(
                    ConvBNAct3d(slow[i] + 2 * fast[i], slow[i + 1], (1 if i == 0 else 3, 3, 3), stride=stride)
                )
                self.fast_stages.append(ConvBNAct3d(fast[i], fast[i + 1], 3, stride=stride))
        self.avg = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(slow[-1] + 2 * fast[-1] + fast[-1], num_classes)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        s = self.pool(self.slow_stem(clip[:, :, :: self.alpha]))
        f = self.pool(self.fast_stem(clip))
        for i, lateral in enumerate(self.laterals):
            s = torch.cat([s, lateral(f)], dim=1)
            if i < len(self.slow_stages):
                s = self.slow_stages[i](s)
                f = self.fast_stages[i](f)
        pooled = torch.cat([self.avg(s).flatten(1), self.avg(f).flatten(1)], dim=1)
        return self.fc(pooled)


def slowfast(num_classes=400, width=1.0, alpha=4, beta=8):
    return SlowFast(num_classes=num_classes, width=width, alpha=alpha, beta=beta)
