"""ECO-Lite as modified in the 4D-only video convolution paper (its Table I).

The 2D-Net (the first Inception layers) runs per frame and yields 96 channels at 28x28; the 3D-Net
is the tail of a 3D-ResNet18: three stages of two basic blocks with 128, 256 and 512 channels,
the last two stages striding by 2 in T, H and W. At width 1.0 the 3D-Net has about 33 M
parameters, the paper's Conv3D row of Table II.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import BasicBlock3d, ClassifierHead, scaled


class FrameNet2d(nn.Module):
    """A compact stand-in for the Inception 2D-Net: 3xHxW frames to 96x28x28 features.

    Frames are folded into the batch (B*T, C, H, W), as ECO does, and unfolded again for the
    3D-Net; the fold and unfold are the 5D reshapes a lowering has to deal with.
    """

    def __init__(self, width=1.0, out_channels=96):
        super().__init__()
        c32, c64, c192 = scaled(32, width), scaled(64, width), scaled(192, width)
        self.features = nn.Sequential(
            nn.Conv2d(3, c32, 3, stride=2, bias=False), nn.BatchNorm2d(c32), nn.ReLU(),
            nn.Conv2d(c32, c32, 3, bias=False), nn.BatchNorm2d(c32), nn.ReLU(),
            nn.Conv2d(c32, c64, 3, padding=1, bias=False), nn.BatchNorm2d(c64), nn.ReLU(),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(c64, c192, 3, bias=False), nn.BatchNorm2d(c192), nn.ReLU(),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(c192, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(),
        )

    def forward(self, clip):
        b, c, t, h, w = clip.shape
        frames = clip.transpose(1, 2).reshape(b * t, c, h, w)
        feats = self.features(frames)
        _, c2, h2, w2 = feats.shape
        return feats.reshape(b, t, c2, h2, w2).transpose(1, 2)


class EcoLite3DNet(nn.Module):
    """The 3D-Net of Table I; with ``with_2d_net`` it takes RGB clips instead of 96-ch features."""

    def __init__(self, num_classes=400, width=1.0, in_channels=96, with_2d_net=False):
        super().__init__()
        self.frame_net = FrameNet2d(width, in_channels) if with_2d_net else None
        c1, c2, c3 = scaled(128, width), scaled(256, width), scaled(512, width)
        self.conv3d_1 = nn.Sequential(BasicBlock3d(in_channels, c1), BasicBlock3d(c1, c1))
        self.conv3d_2 = nn.Sequential(BasicBlock3d(c1, c2, stride=2), BasicBlock3d(c2, c2))
        self.conv3d_3 = nn.Sequential(BasicBlock3d(c2, c3, stride=2), BasicBlock3d(c3, c3))
        self.head = ClassifierHead(c3, num_classes, dropout=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frame_net is not None:
            x = self.frame_net(x)
        return self.head(self.conv3d_3(self.conv3d_2(self.conv3d_1(x))))


def eco_lite(num_classes=400, width=1.0, with_2d_net=False):
    return EcoLite3DNet(num_classes=num_classes, width=width, with_2d_net=with_2d_net)
