"""``diffusers`` video VAEs (encoder and decoder exported apart) and a video diffusion transformer
with 3D rotary embeddings, tiny configurations, random weights.

Wrappers, each what a user exporting one half writes:
:class:`VaeEncoder` returns ``vae.encode(clip).latent_dist.mode()`` (the latent mean);
:class:`VaeDecoder` returns ``vae.decode(latents).sample``;
:class:`DenoiserStep` returns ``transformer(latents, timestep, text).sample``."""

from __future__ import annotations

from torch import nn

from . import ZooModel

PACKAGE = "diffusers"


class VaeEncoder(nn.Module):
    """Wrapper: clip -> ``vae.encode(clip).latent_dist.mode()``."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, clip):
        return self.vae.encode(clip).latent_dist.mode()


class VaeDecoder(nn.Module):
    """Wrapper: latents -> ``vae.decode(latents).sample``."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents):
        return self.vae.decode(latents).sample


class DenoiserStep(nn.Module):
    """Wrapper: one denoising step, ``transformer(latents, timestep, text).sample``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, latents, timestep, text):
        return self.net(hidden_states=latents, timestep=timestep, encoder_hidden_states=text).sample


def cogvideox():
    from diffusers import AutoencoderKLCogVideoX

    return AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 2, up_block_types=("CogVideoXUpBlock3D",) * 2,
        block_out_channels=(16, 32), latent_channels=4, layers_per_block=1, norm_num_groups=8,
        temporal_compression_ratio=2, sample_height=32, sample_width=32)


def wan():
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=16, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, attn_scales=[],
                            temperal_downsample=[True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)


def ltx():
    from diffusers import AutoencoderKLLTXVideo

    return AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(16, 32), down_block_types=("LTXVideoDownBlock3D",) * 2,
        decoder_block_out_channels=(16, 32), layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1),
        spatio_temporal_scaling=(True, False), decoder_spatio_temporal_scaling=(True, False),
        decoder_inject_noise=(False, False, False), downsample_type=("conv", "conv"),
        upsample_residual=(False, False), upsample_factor=(1, 1), patch_size=2, patch_size_t=1)


def mochi():
    from diffusers import AutoencoderKLMochi

    return AutoencoderKLMochi(
        encoder_block_out_channels=(32, 32, 32, 32), decoder_block_out_channels=(32, 32, 32, 32),
        latent_channels=4, layers_per_block=(1, 1, 1, 1, 1), temporal_expansions=(1, 2, 3),
        spatial_expansions=(2, 2, 2), add_attention_block=(False, True, True, True, True),
        latents_mean=(0.0,) * 4, latents_std=(1.0,) * 4)


# name: (factory, clip shape, latent shape, what)
VAES = {
    "cogvideox": (cogvideox, (1, 3, 9, 32, 32), (1, 4, 5, 16, 16),
                  "AutoencoderKLCogVideoX: causal Conv3d with replicate time padding, SpatialNorm3D"),
    "wan": (wan, (1, 3, 5, 32, 32), (1, 4, 2, 16, 16),
            "AutoencoderKLWan: causal Conv3d with per-chunk feature caches, RMS norm, frame-wise attention"),
    "ltx": (ltx, (1, 3, 9, 32, 32), (1, 8, 5, 8, 8),
            "AutoencoderKLLTXVideo: patchify to channels (rank-8 reshape), causal Conv3d, pixel-shuffle 3D"),
    "mochi": (mochi, (1, 3, 7, 64, 64), (1, 4, 2, 8, 8),
              "AutoencoderKLMochi: Fourier features, chunked GroupNorm, per-frame attention, 3D depth-to-space"),
}


def _vae(name: str, half: str):
    factory, clip, latents, _ = VAES[name]

    def build():
        vae = factory()
        return (VaeEncoder(vae), clip, None) if half == "encoder" else (VaeDecoder(vae), latents, None)

    return build


def wan_transformer():
    from diffusers import WanTransformer3DModel

    net = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                out_channels=4, text_dim=16, freq_dim=32, ffn_dim=64, num_layers=1,
                                rope_max_seq_len=32)
    return DenoiserStep(net), (1, 4, 4, 16, 16), [(1,), (1, 8, 16)]


MODELS = [
    ZooModel(f"{name}_vae_{half}", PACKAGE, "video VAE", _vae(name, half),
             what=f"{VAES[name][3]} ({half}; wrapper {'VaeEncoder' if half == 'encoder' else 'VaeDecoder'})")
    for name in VAES for half in ("encoder", "decoder")
] + [
    ZooModel("wan_transformer", PACKAGE, "video transformer", wan_transformer,
             what="WanTransformer3DModel (1 block): 3D RoPE over (T, H, W), timestep and text inputs (DenoiserStep)"),
]
