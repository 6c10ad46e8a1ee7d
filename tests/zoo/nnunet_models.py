"""nnU-Net's networks from ``dynamic-network-architectures`` (PlainConvUNet, ResidualEncoderUNet)
as nnU-Net configures them for 3d_fullres (InstanceNorm3d, LeakyReLU, no deep supervision at
export), on 1x1x32x32x32 volumes. No wrapper: the forward returns the logits volume."""

from __future__ import annotations

from torch import nn

from . import ZooModel

PACKAGE = "dynamic_network_architectures"
VOLUME = (1, 1, 32, 32, 32)


def _common():
    return dict(input_channels=1, n_stages=4, features_per_stage=(8, 16, 32, 64), conv_op=nn.Conv3d,
                kernel_sizes=3, strides=(1, 2, 2, 2), num_classes=2, n_conv_per_stage_decoder=(1, 1, 1),
                conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=False)


def plain_conv_unet():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    return PlainConvUNet(n_conv_per_stage=2, **_common()), VOLUME, None


def residual_encoder_unet():
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    return ResidualEncoderUNet(n_blocks_per_stage=(1, 2, 2, 2), **_common()), VOLUME, None


MODELS = [
    ZooModel("nnunet_plainconv", PACKAGE, "3D segmentation", plain_conv_unet,
             what="PlainConvUNet (nnU-Net default): strided Conv3d down, ConvTranspose3d up, InstanceNorm3d"),
    ZooModel("nnunet_resenc", PACKAGE, "3D segmentation", residual_encoder_unet,
             what="ResidualEncoderUNet (nnU-Net ResEnc): residual BasicBlockD encoder"),
]
