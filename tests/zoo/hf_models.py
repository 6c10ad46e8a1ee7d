"""Hugging Face ``transformers`` video transformers, built from configs (random weights, no hub).

Every model is wrapped in :class:`ClipToLogits`: transformers' video models take ``pixel_values``
as ``(B, T, C, H, W)`` and return an output dataclass; a user exporting one for edge3d's
``(B, C, T, H, W)`` clips writes this wrapper."""

from __future__ import annotations

from torch import nn

from . import ZooModel

PACKAGE = "transformers"
CLIP = (1, 3, 8, 32, 32)
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


class ClipToLogits(nn.Module):
    """Wrapper: ``(B, C, T, H, W)`` clip -> the model's ``(B, T, C, H, W)`` keyword input -> ``.logits``."""

    def __init__(self, net, keyword: str = "pixel_values"):
        super().__init__()
        self.net = net
        self.keyword = keyword

    def forward(self, clip):
        return self.net(**{self.keyword: clip.permute(0, 2, 1, 3, 4)}).logits


def videomae():
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    config = VideoMAEConfig(image_size=32, patch_size=8, num_frames=8, tubelet_size=2, num_labels=10,
                            use_mean_pooling=True, **SMALL)
    return ClipToLogits(VideoMAEForVideoClassification(config)), CLIP, None


def timesformer():
    from transformers import TimesformerConfig, TimesformerForVideoClassification

    config = TimesformerConfig(image_size=32, patch_size=8, num_frames=8, num_labels=10,
                               attention_type="divided_space_time", **SMALL)
    return ClipToLogits(TimesformerForVideoClassification(config)), CLIP, None


def vivit():
    from transformers import VivitConfig, VivitForVideoClassification

    config = VivitConfig(image_size=32, num_frames=8, tubelet_size=[2, 8, 8], num_labels=10, **SMALL)
    return ClipToLogits(VivitForVideoClassification(config)), CLIP, None


def vjepa2():
    from transformers import VJEPA2Config, VJEPA2ForVideoClassification

    config = VJEPA2Config(crop_size=32, frames_per_clip=8, tubelet_size=2, patch_size=8, hidden_size=64,
                          num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2.0, num_pooler_layers=1,
                          pred_hidden_size=32, pred_num_attention_heads=2, pred_num_hidden_layers=1,
                          num_labels=10)
    return ClipToLogits(VJEPA2ForVideoClassification(config), "pixel_values_videos"), CLIP, None


MODELS = [
    ZooModel("hf_videomae", PACKAGE, "video transformer", videomae,
             what="VideoMAEForVideoClassification: Conv3d tubelet embedding, joint space-time attention"),
    ZooModel("hf_timesformer", PACKAGE, "video transformer", timesformer,
             what="TimesformerForVideoClassification: divided space-time attention (Conv2d patches)"),
    ZooModel("hf_vivit", PACKAGE, "video transformer", vivit,
             what="VivitForVideoClassification: Conv3d tubelet embedding (2x8x8)"),
    ZooModel("hf_vjepa2", PACKAGE, "video transformer", vjepa2,
             what="VJEPA2ForVideoClassification: 3D rotary position embeddings (T, H, W), attentive pooler"),
]
