"""Small building blocks shared by the example video models."""

from __future__ import annotations

from torch import nn


def scaled(channels: int, width: float, minimum: int = 4, divisor: int = 4) -> int:
    """Scale a channel count by a width multiplier, keeping it divisible (groups need it)."""
    value = max(minimum, int(round(channels * width / divisor)) * divisor)
    return value


class ConvBNAct3d(nn.Sequential):
    """Conv3d + BatchNorm3d + activation, the unit most video nets are made of."""

    def __init__(self, cin, cout, kernel, stride=1, padding=None, groups=1, act=nn.ReLU):
        if isinstance(kernel, int):
            kernel = (kernel,) * 3
        if padding is None:
            padding = tuple(k // 2 for k in kernel)
        layers = [
            nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False),
            nn.BatchNorm3d(cout),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class BasicBlock3d(nn.Module):
    """ResNet basic block with two 3x3x3 convs (3D-ResNet18, R3D-18, ECO's 3D-Net)."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = ConvBNAct3d(cin, cout, 3, stride=stride)
        self.conv2 = ConvBNAct3d(cout, cout, 3, act=None)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = ConvBNAct3d(cin, cout, 1, stride=stride, padding=0, act=None)
        self.relu = nn.ReLU()

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class ClassifierHead(nn.Module):
    """Global average pool over T, H, W, then a linear classifier."""

    def __init__(self, cin, num_classes, dropout=0.0):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.dropout(self.pool(x).flatten(1)))
