"""MONAI's 3D segmentation networks on 1x1x32x32x32 volumes (SwinUNETR 32x32x64), small configurations.

Each is the library class itself (no wrapper: the forwards return the logits volume in eval
mode), so its state_dict exports with ``--arch monai.networks.nets:CLASS --arch-kwargs JSON``."""

from __future__ import annotations

import importlib

from . import ZooModel

PACKAGE = "monai"
VOLUME = (1, 1, 32, 32, 32)
# SwinUNETR halves every axis five times, and its bottleneck's InstanceNorm needs more than one
# element: 32x32x64.
SHAPES = {"SwinUNETR": (1, 1, 32, 32, 64)}
IO = dict(spatial_dims=3, in_channels=1, out_channels=2)

CONFIGS = {
    "UNet": dict(IO, channels=(8, 16, 32), strides=(2, 2), num_res_units=1),
    "BasicUNet": dict(IO, features=(8, 8, 16, 32, 64, 8)),
    "SegResNet": dict(IO, init_filters=8, blocks_down=(1, 2, 2), blocks_up=(1, 1)),
    "UNETR": dict(IO, img_size=32, feature_size=8, hidden_size=64, mlp_dim=128, num_heads=4),
    "SwinUNETR": dict(IO, feature_size=12, depths=(1, 1, 1, 1), num_heads=(3, 3, 3, 3)),
    "DynUNet": dict(IO, kernel_size=(3, 3, 3), strides=(1, 2, 2), upsample_kernel_size=(2, 2), filters=(8, 16, 32)),
    "AttentionUnet": dict(IO, channels=(8, 16, 32), strides=(2, 2)),
}

WHAT = {
    "UNet": "residual-unit UNet (strided Conv3d down, ConvTranspose3d up, InstanceNorm)",
    "BasicUNet": "BasicUNet: MaxPool3d down, ConvTranspose3d up, concatenated skips",
    "SegResNet": "SegResNet: GroupNorm residual blocks, trilinear upsampling",
    "UNETR": "UNETR: ViT encoder on 16^3 patches, deconvolution decoder",
    "SwinUNETR": "SwinUNETR: 3D shifted-window attention (window partition, masks, patch merging)",
    "DynUNet": "DynUNet (nnU-Net-style): InstanceNorm + LeakyReLU, ConvTranspose3d up",
    "AttentionUnet": "Attention U-Net: additive attention gates on the skips",
}


def _builder(cls: str):
    def build():
        net = getattr(importlib.import_module("monai.networks.nets"), cls)(**CONFIGS[cls])
        return net, SHAPES.get(cls, VOLUME), None

    return build


def _jsonable(kwargs: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


MODELS = [
    ZooModel(f"monai_{cls.lower()}", PACKAGE, "3D segmentation", _builder(cls),
             formats=("torchscript", "pt2", "state_dict"), arch=f"monai.networks.nets:{cls}",
             arch_kwargs=_jsonable(CONFIGS[cls]), what=WHAT[cls])
    for cls in CONFIGS
]
