"""The model to train: an L2P checkpoint as ``l2p.pixel_dit.PixelDiT`` (diffusers' Z-Image trunk + head).

Weights are loaded by assignment into a meta-device skeleton (no second copy, no random init of 6B
parameters); the trainable set comes from a named policy, everything else is frozen (no gradients, no
optimizer state).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from l2p.arch import ARCHITECTURES
from l2p.format.keys import L2PFormatError, strip_prefix
from l2p.format.layouts import COMFY, L2PConfig, comfy_to_official, detect_layout, infer_config
from l2p.format.tensor_io import open_source
from l2p.pixel_dit import PixelDiT, official_names, pixel_dit_from_official
from l2p.policies import report, trainable_names


@dataclass
class LoadedModel:
    model: PixelDiT
    config: L2PConfig
    official: dict[str, torch.Tensor]  # the checkpoint's tensors (official names), the export's base
    metadata: dict[str, str]
    policy: str
    trainable: list[str]  # official names of the trained parameters


def model_header(path: str, src=None) -> L2PConfig:
    """An L2P checkpoint's configuration from its header alone, every tensor's name, shape and dtype checked; a
    file that is not a complete float L2P model is refused with one line (L2PFormatError) naming it."""
    try:
        return infer_config((src or open_source(path)).meta)
    except L2PFormatError as e:
        raise L2PFormatError(f"{os.path.basename(os.path.normpath(path))}: {e}") from None


def load_model(path: str, policy: str = "") -> LoadedModel:
    """An L2P checkpoint (either layout, any prefix) as a fp32 PixelDiT with its trainable set; a file that is
    not a complete float L2P model is refused with one line (L2PFormatError) before any weight is read."""
    src = open_source(path)
    cfg = model_header(path, src)
    sd = strip_prefix({k: src.get(k) for k in src.meta})
    if detect_layout(sd.keys()) == COMFY:
        sd = comfy_to_official(sd)
    if not ARCHITECTURES[cfg.arch].official_layout:
        raise ValueError(f"training {ARCHITECTURES[cfg.arch].label} conversions is not supported yet: the trainer "
                         "runs Z-Image-based L2P models")
    model = pixel_dit_from_official(sd, cfg, path)
    names = official_names(model)
    policy = policy or src.metadata.get("l2p.policy") or "official"
    chosen = trainable_names(names.values(), policy, cfg.n_layers)
    for n, p in model.named_parameters():
        p.requires_grad_(names[n] in chosen)
    return LoadedModel(model, cfg, sd, dict(src.metadata), policy, sorted(chosen))


def store_frozen(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Frozen parameters (no gradient, never updated) stored in ``dtype``, e.g. bf16 for half their memory."""
    for p in model.parameters():
        if not p.requires_grad and p.dtype != dtype:
            p.data = p.data.to(dtype)


def policy_report(loaded: LoadedModel) -> str:
    return str(report({k: v.shape for k, v in loaded.official.items()}, loaded.policy, loaded.config.n_layers))


def trainable_report(model: torch.nn.Module, what: str) -> str:
    """``lora rank 16 on 210 layers + head: 1,234 of 5,678 parameters trainable (21.7%)``."""
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = sum(p.numel() for n, p in model.named_parameters() if ".lora_A." not in n and ".lora_B." not in n)
    return f"{what}: {trained:,} of {base:,} parameters trainable ({100 * trained / base:.1f}%)"


def fsdp_units(model: PixelDiT) -> list[torch.nn.Module]:
    """The model's FSDP units (training/sharding.py): every refiner and main block, and the Detailer Head."""
    trunk = model.trunk
    return [*trunk.noise_refiner, *trunk.context_refiner, *trunk.layers, model.local_decoder]
