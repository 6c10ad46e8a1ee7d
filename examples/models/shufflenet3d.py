"""A 3D-ShuffleNet-style net: grouped 1x1x1 convs, a 6D channel shuffle, depthwise 3x3x3."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ClassifierHead, ConvBNAct3d, scaled


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """View the clip as (B, g, C/g, T, H, W), swap g and C/g: a rank-6 tensor in the graph."""
    b, c, t, h, w = x.shape
    x = x.view(b, groups, c // groups, t, h, w).transpose(1, 2).contiguous()
    return x.view(b, c, t, h, w)


class ShuffleUnit3d(nn.Module):
    def __init__(self, cin, cout, groups, stride):
        super().__init__()
        self.stride = stride
        self.groups = groups
        branch_out = cout - cin if stride == 2 else cout
        mid = scaled(cout // 4, 1.0, minimum=groups, divisor=groups)
        self.compress = ConvBNAct3d(cin, mid, 1, padding=0, groups=groups)
        self.depthwise = ConvBNAct3d(mid, mid, 3, stride=stride, groups=mid, act=None)
        self.expand = ConvBNAct3d(mid, branch_out, 1, padding=0, groups=groups, act=None)
        self.pool = nn.AvgPool3d(3, stride=2, padding=1) if stride == 2 else None

    def forward(self, x):
        y = channel_shuffle(self.compress(x), self.groups)
        y = self.expand(self.depthwise(y))
        if self.pool is not None:
            return torch.relu(torch.cat([self.pool(x), y], dim=1))
        return torch.relu(x + y)


class ShuffleNet3d(nn.Module):
    def __init__(self, num_classes=400, width=1.0, groups=3, depths=(4, 8, 4)):
        super().__init__()
        base = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}[groups]
        stem = scaled(24, width, minimum=4 * groups, divisor=4 * groups)
        widths = [scaled(base * m, width, minimum=8 * groups, divisor=4 * groups) for m in (1, 2, 4)]
        self.stem = nn.Sequential(
            ConvBNAct3d(3, stem, 3, stride=(1, 2, 2)),
            nn.MaxPool3d(3, stride=(1, 2, 2), padding=1),
        )
        units, cin = [], stem
        for cout, depth in zip(widths, depths):
            for i in range(depth):
                units.append(ShuffleUnit3d(cin, cout, groups, 2 if i == 0 else 1))
                cin = cout
        self.units = nn.Sequential(*units)
        self.head = ClassifierHead(cin, num_classes)

    def forward(self, x):
        return self.head(self.units(self.stem(x)))


def shufflenet3d(num_classes=400, width=1.0, groups=3, depths=(4, 8, 4)):
    return ShuffleNet3d(num_classes=num_classes, width=width, groups=groups, depths=tuple(depths))
