"""The source's VAE for the fitted and distilled inits: a diffusers ``AutoencoderKL`` folder, or a single VAE file as
ComfyUI keeps them (``models/vae``: the original ldm / Flux key names, safetensors only).

A single file carries no config: the widths, depth, latent channels, quant convs and mid attention are read from
its tensor shapes; the latent space's scale and shift are the source architecture's (``SourceArch``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

Tensor = torch.Tensor
LDM_PREFIXES = ("first_stage_model.", "vae.")


def _diffusers():
    try:
        from diffusers import AutoencoderKL
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    except ImportError:
        raise ValueError("the vae_* and distill inits need diffusers: pip install 'comfyui-l2p[train]'") from None
    return AutoencoderKL, convert_ldm_vae_checkpoint


def ldm_vae_config(sd: dict[str, Tensor]) -> dict:
    """diffusers ``AutoencoderKL`` arguments for an ldm-named VAE state dict, from its shapes."""
    if "decoder.conv_in.weight" not in sd or "encoder.conv_in.weight" not in sd:
        raise ValueError("not a VAE with an encoder in ldm / ComfyUI names (no encoder.conv_in / decoder.conv_in): "
                         "pass the source model's VAE file or its diffusers folder")
    levels = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.down."))
    widths = tuple(int(sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) for i in range(levels))
    depth = 1 + max(int(k.split(".")[4]) for k in sd if k.startswith("encoder.down.0.block."))
    quant = "quant_conv.weight" in sd
    return {"in_channels": int(sd["encoder.conv_in.weight"].shape[1]),
            "out_channels": int(sd["decoder.conv_out.weight"].shape[0]),
            "down_block_types": ("DownEncoderBlock2D",) * levels,
            "up_block_types": ("UpDecoderBlock2D",) * levels,
            "block_out_channels": widths, "layers_per_block": depth,
            "latent_channels": int(sd["decoder.conv_in.weight"].shape[1]), "use_quant_conv": quant,
            "use_post_quant_conv": "post_quant_conv.weight" in sd,
            "mid_block_add_attention": any(k.startswith("encoder.mid.attn_1.") for k in sd)}


def load_vae(path: str, scale: float, shift: float):
    """(AutoencoderKL in eval mode, scale, shift): a diffusers folder with its own config's scaling and shift
    factors, or an ldm-named .safetensors file with the given ones."""
    AutoencoderKL, convert = _diffusers()
    if os.path.isdir(path):
        vae = AutoencoderKL.from_pretrained(path, local_files_only=True, use_safetensors=True)
        return vae.train(False), vae.config.scaling_factor, vae.config.shift_factor or 0.0
    if not path.endswith(".safetensors") or not os.path.isfile(path):
        raise ValueError(f"{os.path.basename(path)}: the VAE must be a diffusers AutoencoderKL folder or a "
                         ".safetensors file")
    from safetensors.torch import load_file

    sd = load_file(path)
    for prefix in LDM_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    config = ldm_vae_config(sd)
    vae = AutoencoderKL(**config)
    vae.load_state_dict(convert(sd, vae.config), strict=True)
    return vae.float().train(False), scale, shift


def latent_encoder(vae, scale: float, shift: float) -> Callable[[Tensor], Tensor]:
    """Images [B, 3, H, W] in [-1, 1] -> the model's latents: the posterior mean, then (z - shift) * scale."""

    @torch.no_grad()
    def encode(images: Tensor) -> Tensor:
        device = next(vae.parameters()).device
        z = torch.cat([vae.encode(im[None].to(device, torch.float32)).latent_dist.mean for im in images])
        return (z - shift) * scale

    return encode
