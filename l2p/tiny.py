"""Tiny models of the real architectures, with random weights, for tests and the demo.

The L2P trunk comes from diffusers' ``ZImageTransformer2DModel`` (its names are the official L2P layout)
with the latent final layer dropped and an L2P Detailer Head added; the text encoder is a transformers
Qwen3. Nothing is downloaded: the weights are drawn from a seeded generator.
"""

from __future__ import annotations

import os

import torch

from .format.tensor_io import save_safetensors_atomic
from .head import build_head, variant_for_patch
from .pixel_dit import official_state_dict

# ComfyUI's NextDiT needs dim >= 256 (its timestep width); head size 64 keeps RoPE axes (16, 24, 24).
TINY_L2P = {"dim": 256, "n_layers": 2, "n_refiner_layers": 1, "n_heads": 4, "cap_feat_dim": 64, "patch_size": 16}
TINY_QWEN3 = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 2,
              "num_key_value_heads": 1, "head_dim": 32}


def official_trunk(dim: int, n_layers: int, n_refiner_layers: int, n_heads: int, cap_feat_dim: int,
                   patch_size: int = 16, device: str | torch.device | None = None):
    """diffusers' Z-Image DiT on pixel patches (in_channels 3): the official trunk, by key names and maths."""
    from diffusers import ZImageTransformer2DModel

    head_dim = dim // n_heads
    axes = [head_dim // 4, head_dim * 3 // 8, head_dim * 3 // 8]
    with torch.device(device or "cpu"):
        return ZImageTransformer2DModel(all_patch_size=(patch_size,), all_f_patch_size=(1,), in_channels=3, dim=dim,
                                        n_layers=n_layers, n_refiner_layers=n_refiner_layers, n_heads=n_heads,
                                        n_kv_heads=n_heads, cap_feat_dim=cap_feat_dim, axes_dims=axes)


def tiny_latent_zimage(seed: int = 0, **overrides) -> dict[str, torch.Tensor]:
    """A latent Z-Image DiT (patch 2 over 16 latent channels, final layer included) in diffusers' names."""
    from diffusers import ZImageTransformer2DModel

    cfg = {**TINY_L2P, **overrides}
    head_dim = cfg["dim"] // cfg["n_heads"]
    trunk = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=cfg["dim"],
                                     n_layers=cfg["n_layers"], n_refiner_layers=cfg["n_refiner_layers"],
                                     n_heads=cfg["n_heads"], n_kv_heads=cfg["n_heads"],
                                     cap_feat_dim=cfg["cap_feat_dim"],
                                     axes_dims=[head_dim // 4, head_dim * 3 // 8, head_dim * 3 // 8])
    return {k: v.contiguous() for k, v in randomize_(trunk, seed).state_dict().items()}


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
