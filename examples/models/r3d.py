"""An R3D-18-style residual net (about 33 M parameters at width 1.0)."""

from __future__ import annotations

from torch import nn

from .layers import BasicBlock3d, ClassifierHead, ConvBNAct3d, scaled


class R3D18(nn.Module):
    def __init__(self, num_classes=400, width=1.0):
        super().__init__()
        c = [scaled(v, width) for v in (64, 128, 256, 512)]
        self.stem = ConvBNAct3d(3, c[0], (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3))
        stages, cin = [], c[0]
        for i, cout in enumerate(c):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock3d(cin, cout, stride), BasicBlock3d(cout, cout)))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(c[3], num_classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


def r3d18(num_classes=400, width=1.0):
    return R3D18(num_classes=num_classes, width=width)
