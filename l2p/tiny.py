"""The reference models, built one way for tests, benches and the demo; tiny ones with seeded random weights.

``zimage_trunk`` is the one builder of the Z-Image DiT (diffusers' ``ZImageTransformer2DModel``, latent or as the
L2P pixel trunk, whose names are the official L2P layout) and ``reference_vae`` the one builder of the 8x, 16-channel
``AutoencoderKL``. The tiny L2P model is the pixel trunk with an L2P Detailer Head added; the text encoder is a
transformers Qwen3. Nothing is downloaded: the weights are drawn from a seeded generator.
"""

from __future__ import annotations

import os

import torch

from .arch import ZIMAGE
from .format.tensor_io import save_safetensors_atomic
from .head import build_head, variant_for_patch
from .pixel_dit import official_state_dict

# ComfyUI's NextDiT needs dim >= 256 (its timestep width); head size 64 keeps RoPE axes (16, 24, 24).
TINY_L2P = {"dim": 256, "n_layers": 2, "n_refiner_layers": 1, "n_heads": 4, "cap_feat_dim": 64, "patch_size": 16}
TINY_QWEN3 = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 2,
              "num_key_value_heads": 1, "head_dim": 32}


def zimage_trunk(*, in_channels: int, patch_size: int, dim: int, n_layers: int, n_refiner_layers: int,
                 n_heads: int, cap_feat_dim: int, seed: int | None = None,
                 device: str | torch.device | None = None) -> torch.nn.Module:
    """diffusers' Z-Image DiT (``ZImageTransformer2DModel``, final layer included): the one builder of the trunk.

    One patch size (frame patch 1), as many key/value heads as heads, and Z-Image's RoPE split of the head
    (``ZIMAGE.axes_dims``: a quarter, three eighths, three eighths). ``in_channels`` 16 with ``patch_size`` 2 is
    a latent Z-Image, 3 with a pixel patch the L2P trunk. Weights: diffusers' default init drawn from torch's
    global generator (seed it first for a reproducible model), or with ``seed`` every parameter filled by
    ``randomize_``. ``device`` "meta" builds shapes only.
    """
    from diffusers import ZImageTransformer2DModel

    axes = list(ZIMAGE.axes_dims(dim // n_heads))
    with torch.device(device or "cpu"):
        trunk = ZImageTransformer2DModel(all_patch_size=(patch_size,), all_f_patch_size=(1,), in_channels=in_channels,
                                         dim=dim, n_layers=n_layers, n_refiner_layers=n_refiner_layers,
                                         n_heads=n_heads, n_kv_heads=n_heads, cap_feat_dim=cap_feat_dim,
                                         axes_dims=axes)
    return trunk if seed is None else randomize_(trunk, seed)


# The Flux / Z-Image VAE: 16 latent channels, widths 128/256/512/512, 2 layers per block, no quant convs,
# and its latent format; ``reference_vae(**FLUX_VAE)``.
FLUX_VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "quant_convs": False,
            "sample_size": 1024, "scaling_factor": 0.3611, "shift_factor": 0.1159}
# The same architecture as ComfyUI's AutoencoderKL config (``ddconfig``, with ``embed_dim`` 16).
FLUX_VAE_DDCONFIG = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                     "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def reference_vae(block_out_channels: tuple[int, ...], *, layers_per_block: int = 1, latent_channels: int = 16,
                  norm_num_groups: int = 32, mid_attention: bool = True, quant_convs: bool = True,
                  sample_size: int = 32, scaling_factor: float = 0.18215, shift_factor: float | None = None,
                  decoder_only: bool = False, device: str | torch.device | None = None) -> torch.nn.Module:
    """diffusers' ``AutoencoderKL`` (RGB in and out): the one builder of the reference VAE.

    One encoder/decoder block per width (four widths: 8x down); the defaults besides 16 latent channels are
    diffusers' own. ``FLUX_VAE`` holds the Flux / Z-Image configuration; the tiny trained worlds of the benches
    pass narrow widths. ``decoder_only`` drops the encoder. Weights: diffusers' default init from torch's global
    generator (seed it first).
    """
    from diffusers import AutoencoderKL

    n = len(block_out_channels)
    with torch.device(device or "cpu"):
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                            up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(block_out_channels),
                            layers_per_block=layers_per_block, latent_channels=latent_channels,
                            norm_num_groups=norm_num_groups, sample_size=sample_size, scaling_factor=scaling_factor,
                            shift_factor=shift_factor, use_quant_conv=quant_convs, use_post_quant_conv=quant_convs,
                            mid_block_add_attention=mid_attention)
    if decoder_only:
        vae.encoder = None
    return vae


def official_trunk(dim: int, n_layers: int, n_refiner_layers: int, n_heads: int, cap_feat_dim: int,
                   patch_size: int = 16, device: str | torch.device | None = None) -> torch.nn.Module:
    """diffusers' Z-Image DiT on pixel patches (in_channels 3): the official trunk, by key names and maths."""
    return zimage_trunk(in_channels=3, patch_size=patch_size, dim=dim, n_layers=n_layers,
                        n_refiner_layers=n_refiner_layers, n_heads=n_heads, cap_feat_dim=cap_feat_dim, device=device)


def tiny_latent_zimage(seed: int = 0, **overrides) -> dict[str, torch.Tensor]:
    """A latent Z-Image DiT (patch 2 over 16 latent channels unless ``patch_size`` overrides it, final layer
    included) in diffusers' names."""
    cfg = {**TINY_L2P, "patch_size": ZIMAGE.latent_patch, **overrides}
    trunk = zimage_trunk(in_channels=ZIMAGE.latent_channels, seed=seed, **cfg)
    return {k: v.contiguous() for k, v in trunk.state_dict().items()}


def randomize_(module: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Fill every parameter (pad tokens and norms too) from a seeded generator so tests see all of them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * scale
            p.copy_((1.0 + noise) if p.ndim == 1 and name.endswith("weight") else noise)  # norm gains near 1
    return module


def tiny_l2p(seed: int = 0, **overrides) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(official trunk, Detailer Head) with seeded random weights; the head variant follows the patch size."""
    cfg = {**TINY_L2P, **overrides}
    trunk = randomize_(official_trunk(**cfg), seed)
    head = randomize_(build_head(variant_for_patch(cfg["patch_size"]), cfg["dim"]), seed + 1)
    return trunk, head


def tiny_qwen3_state_dict(seed: int = 0, **overrides) -> dict[str, torch.Tensor]:
    """A Qwen3 text encoder (transformers layout, ``model.*``) with the full Qwen tokenizer vocabulary."""
    from transformers import Qwen3Config, Qwen3Model

    cfg = Qwen3Config(vocab_size=151936, **{**TINY_QWEN3, **overrides})
    torch.manual_seed(seed)
    model = Qwen3Model(cfg)
    return {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}


DEMO_L2P_FILE = "l2p-tiny-demo.safetensors"
DEMO_TE_FILE = "l2p-tiny-qwen3.safetensors"


def write_demo_models(models_dir: str, seed: int = 0) -> tuple[str, str]:
    """The demo's embedded models, rebuilt bit-identically from their seed: ``l2p/`` and ``text_encoders/``."""
    trunk, head = tiny_l2p(seed=seed)
    l2p_path = os.path.join(models_dir, "l2p", DEMO_L2P_FILE)
    te_path = os.path.join(models_dir, "text_encoders", DEMO_TE_FILE)
    save_safetensors_atomic(official_state_dict(trunk, head), l2p_path, metadata={"l2p.seed": str(seed)})
    save_safetensors_atomic(tiny_qwen3_state_dict(seed=seed), te_path, dtype=torch.float16)
    return l2p_path, te_path
