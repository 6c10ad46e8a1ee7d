"""An X3D-style net: channel expansion, depthwise 3x3x3 convs, squeeze-excitation, swish."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ClassifierHead, ConvBNAct3d, scaled


class SqueezeExcite3d(nn.Module):
    """Gate of shape (B, C, 1, 1, 1) multiplied into the clip: a broadcasting 5D Mul."""

    def __init__(self, channels, ratio=0.0625):
        super().__init__()
        hidden = max(4, int(channels * ratio))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc1 = nn.Conv3d(channels, hidden, 1)
        self.fc2 = nn.Conv3d(hidden, channels, 1)

    def forward(self, x):
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))
        return x * gate


class X3DBlock(nn.Module):
    def __init__(self, cin, cout, expansion, stride, use_se):
        super().__init__()
        mid = cin * expansion
        self.expand = ConvBNAct3d(cin, mid, 1, padding=0)
        self.depthwise = ConvBNAct3d(mid, mid, 3, stride=(1, stride, stride), groups=mid, act=None)
        self.se = SqueezeExcite3d(mid) if use_se else nn.Identity()
        self.act = nn.SiLU()
        self.project = ConvBNAct3d(mid, cout, 1, padding=0, act=None)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = ConvBNAct3d(cin, cout, 1, stride=(1, stride, stride), padding=0, act=None)

    def forward(self, x):
        y = self.project(self.act(self.se(self.depthwise(self.expand(x)))))
        identity = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(y + identity)


class X3D(nn.Module):
    def __init__(self, num_classes=400, width=1.0, depths=(1, 2, 5, 3), expansion=2):
        super().__init__()
        c = [scaled(v, width) for v in (24, 48, 96, 192)]
        stem = scaled(24, width)
        self.stem = nn.Sequential(
            nn.Conv3d(3, stem, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
            nn.Conv3d(stem, stem, (5, 1, 1), padding=(2, 0, 0), groups=stem, bias=False),
            nn.BatchNorm3d(stem), nn.ReLU(),
        )
        blocks, cin = [], stem
        for cout, depth in zip(c, depths):
            for i in range(depth):
                blocks.append(X3DBlock(cin, cout, expansion, 2 if i == 0 else 1, use_se=i % 2 == 0))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.conv5 = ConvBNAct3d(cin, cin * expansion, 1, padding=0)
        self.head = ClassifierHead(cin * expansion, num_classes)

    def forward(self, x):
        return self.head(self.conv5(self.blocks(self.stem(x))))


def x3d(num_classes=400, width=1.0, depths=(1, 2, 5, 3)):
    return X3D(num_classes=num_classes, width=width, depths=tuple(depths))
