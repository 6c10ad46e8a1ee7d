"""pytorchvideo's video classifiers (X3D, R(2+1)D, SlowFast, CSN, MViT), small configurations.

pytorchvideo.models imports ``torchvision.ops.RoIAlign`` at module level (for its detection
heads); where torchvision is missing that one import is stubbed (``torchvision_stub``)."""

from __future__ import annotations

import importlib

from torch import nn

from . import ZooModel, torchvision_stub

PACKAGE = "pytorchvideo"
CLIP = (1, 3, 8, 32, 32)


def _models(submodule: str):
    with torchvision_stub():
        return importlib.import_module(f"pytorchvideo.models.{submodule}")


def x3d():
    model = _models("x3d").create_x3d(
        input_clip_length=4, input_crop_size=32, model_num_class=10, width_factor=1.0, depth_factor=1.0,
        head_dim_out=64, dropout_rate=0.0, head_activation=nn.Softmax)
    return model, (1, 3, 4, 32, 32), None


def r2plus1d():
    model = _models("r2plus1d").create_r2plus1d(
        model_depth=50, stem_dim_out=8, model_num_class=10, dropout_rate=0.0, head_pool_kernel_size=(2, 1, 1))
    return model, CLIP, None


class SlowFastClips(nn.Module):
    """Wrapper: the two pathways' clips as two arguments (a list argument does not survive
    tracing), passed on as ``[slow, fast]``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, slow, fast):
        return self.net([slow, fast])


def slowfast():
    model = _models("slowfast").create_slowfast(
        model_depth=18, stem_dim_outs=(16, 2), model_num_class=10, dropout_rate=0.0,
        head_pool_kernel_sizes=((2, 1, 1), (8, 1, 1)))
    return SlowFastClips(model), (1, 3, 2, 32, 32), [(1, 3, 8, 32, 32)]


def csn():
    model = _models("csn").create_csn(
        model_depth=50, stem_dim_out=8, model_num_class=10, head_pool_kernel_size=(1, 2, 2))
    return model, CLIP, None


def mvit():
    model = _models("vision_transformers").create_multiscale_vision_transformers(
        spatial_size=32, temporal_size=8, depth=2, patch_embed_dim=16, num_heads=1, head_num_classes=10,
        embed_dim_mul=[[1, 2.0]], atten_head_mul=[[1, 2.0]], pool_q_stride_size=[[1, 1, 2, 2]],
        pool_kv_stride_adaptive=[1, 4, 4], pool_kvq_kernel=[3, 3, 3], head_dropout_rate=0.0)
    return model, CLIP, None


MODELS = [
    ZooModel("pv_x3d", PACKAGE, "video classifier", x3d, formats=("pt2",),
             not_applicable={"torchscript": "pytorchvideo's Swish is a torch.autograd.Function: torch.jit.save "
                                            "refuses the trace and torch.jit.script cannot compile it"},
             what="X3D (create_x3d, width/depth factor 1): depthwise 3x3x3 Conv3d, squeeze-excite, Swish"),
    ZooModel("pv_r2plus1d", PACKAGE, "video classifier", r2plus1d,
             what="R(2+1)D-50 (create_r2plus1d, 8-channel stem): (1,3,3) then (3,1,1) convolutions"),
    ZooModel("pv_slowfast", PACKAGE, "video classifier", slowfast,
             what="SlowFast (depth 18: one bottleneck per stage), two inputs (slow 2 frames, fast 8); "
                  "wrapper passes [slow, fast]"),
    ZooModel("pv_csn", PACKAGE, "video classifier", csn,
             what="CSN-50 (create_csn): channel-separated (depthwise) 3x3x3 bottlenecks"),
    ZooModel("pv_mvit", PACKAGE, "video transformer", mvit,
             what="MViT (create_multiscale_vision_transformers, depth 2): pooling attention with Conv3d pools"),
]
