"""vit-pytorch's video and volume transformers (lucidrains), small configurations.

``vit_pytorch/__init__.py`` imports ``torchvision.transforms`` (for its DINO trainer), so the
package is imported under ``torchvision_stub`` where torchvision is missing; the models below
never touch torchvision. Their forwards return logits: no wrapper."""

from __future__ import annotations

import importlib

from . import ZooModel, torchvision_stub

PACKAGE = "vit_pytorch"
CLIP = (1, 3, 8, 32, 32)
SMALL = dict(num_classes=10, dim=64, heads=4, mlp_dim=128, dim_head=16)


def _module(name: str):
    with torchvision_stub():
        return importlib.import_module(f"vit_pytorch.{name}")


def vivit(variant: str):
    def build():
        net = _module("vivit").ViViT(image_size=32, image_patch_size=8, frames=8, frame_patch_size=2,
                                     spatial_depth=2, temporal_depth=2, variant=variant, **SMALL)
        return net, CLIP, None

    return build


def simple_vit_3d():
    net = _module("simple_vit_3d").SimpleViT(image_size=32, image_patch_size=8, frames=8, frame_patch_size=2, depth=2,
                                             **SMALL)
    return net, CLIP, None


def vit_3d():
    net = _module("vit_3d").ViT(image_size=32, image_patch_size=8, frames=8, frame_patch_size=2, depth=2, **SMALL)
    return net, CLIP, None


def cct_3d():
    net = _module("cct_3d").CCT(img_size=32, num_frames=8, embedding_dim=64, n_conv_layers=2, frame_kernel_size=3,
                                kernel_size=3, stride=1, padding=1, pooling_kernel_size=3, pooling_stride=2,
                                pooling_padding=1, num_layers=2, num_heads=4, mlp_ratio=2.0, num_classes=10,
                                positional_embedding="learnable")
    return net, CLIP, None


def vit_nd_rotary():
    # vit-pytorch picks flex_attention on CPUs with AVX2 and dense attention elsewhere; no ONNX
    # exporter takes flex_attention, so the dense path is what can be exported (a global switch of
    # vit_nd_masking, as on a CPU without AVX2).
    _module("vit_nd_masking").flex_attention_supported = lambda device: False
    net = _module("vit_nd_rotary").ViTND(ndim=3, input_shape=(8, 32, 32), patch_size=(2, 8, 8), depth=2, **SMALL)
    return net, CLIP, None


MODELS = [
    ZooModel("vp_vivit", PACKAGE, "video transformer", vivit("factorized_encoder"),
             what="ViViT factorized encoder (einops tubelets, spatial then temporal transformer)"),
    ZooModel("vp_vivit_fsa", PACKAGE, "video transformer", vivit("factorized_self_attention"),
             what="ViViT factorized self-attention (space and time attention alternate per block)"),
    ZooModel("vp_simple_vit_3d", PACKAGE, "video transformer", simple_vit_3d,
             what="SimpleViT 3D: 3D sin-cos position embedding on a (B, F, H, W, D) token grid"),
    ZooModel("vp_vit_3d", PACKAGE, "video transformer", vit_3d,
             what="ViT 3D: einops tubelets, cls token, learned position embedding"),
    ZooModel("vp_cct_3d", PACKAGE, "video transformer", cct_3d,
             what="CCT 3D: Conv3d + MaxPool3d tokenizer, sequence pooling"),
    ZooModel("vp_vit_nd_rotary", PACKAGE, "video transformer", vit_nd_rotary,
             what="ViTND (ndim=3) with golden-gate N-d rotary embeddings over (T, H, W)"),
]
