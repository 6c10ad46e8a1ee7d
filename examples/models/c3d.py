"""A C3D-style plain stack: 3x3x3 convs, max pools (the first keeps T), two FC layers."""

from __future__ import annotations

from torch import nn

from .layers import scaled


def _conv(cin, cout):
    return [nn.Conv3d(cin, cout, 3, padding=1), nn.ReLU()]


class C3D(nn.Module):
    def __init__(self, num_classes=101, width=1.0, fc_features=4096):
        super().__init__()
        c = [scaled(v, width) for v in (64, 128, 256, 512)]
        self.features = nn.Sequential(
            *_conv(3, c[0]), nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2)),
            *_conv(c[0], c[1]), nn.MaxPool3d(2, stride=2),
            *_conv(c[1], c[2]), *_conv(c[2], c[2]), nn.MaxPool3d(2, stride=2),
            *_conv(c[2], c[3]), *_conv(c[3], c[3]), nn.MaxPool3d(2, stride=2, ceil_mode=True),
            *_conv(c[3], c[3]), *_conv(c[3], c[3]), nn.MaxPool3d(2, stride=2, padding=(0, 1, 1)),
        )
        self.pool = nn.AdaptiveAvgPool3d(1)
        fc = scaled(fc_features, width)
        self.classifier = nn.Sequential(
            nn.Linear(c[3], fc), nn.ReLU(), nn.Dropout(0.5), nn.Linear(fc, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def c3d(num_classes=101, width=1.0):
    return C3D(num_classes=num_classes, width=width)
