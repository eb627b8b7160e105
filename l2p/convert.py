"""Latent Z-Image-family DiT -> L2P initialisation (official layout), as the authors' conversion does.

Every source tensor whose name and shape still fit is copied unchanged; the latent patch embedder and
the final layer are dropped; a pixel patch embedder (``all_x_embedder.{p}-1``, p*p*3 inputs) and a
Detailer Head are added at PyTorch's default initialisation from a seeded generator (the ``official``
init, l2p-technical.md §1.6). Works on both source layouts (diffusers/official names and ComfyUI's).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .head import build_head
from .layouts import COMFY, L2PFormatError, comfy_to_official, detect_layout, strip_prefix

INITS = ("official",)
_LATENT_ONLY = ("x_embedder.", "all_x_embedder.", "final_layer.", "all_final_layer.", "norm_final.")


def latent_to_l2p(source: Mapping[str, torch.Tensor], patch_size: int = 16, init: str = "official",
                  seed: int = 0, head_variant: str = "1k") -> dict[str, torch.Tensor]:
    """Official-layout L2P state dict initialised from a latent source state dict."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: use one of {', '.join(INITS)}")
    sd = strip_prefix(source)
    if any(k.startswith("local_decoder.") for k in sd):
        raise L2PFormatError("the source is already an L2P model (it has local_decoder.*): load it with "
                             "L2PModelLoader instead of converting it")
    layout = detect_layout(sd.keys())
    if layout is None or "cap_embedder.1.weight" not in sd:
        raise L2PFormatError("the source is not a Z-Image/Lumina NextDiT model: supported sources are Z-Image "
                             "(Turbo or base) and Lumina-Image 2.0")
    body = {k: v for k, v in sd.items() if not k.startswith(_LATENT_ONLY)}
    if layout == COMFY:
        body = comfy_to_official(body, patch_size=patch_size)
    dim = int(sd["cap_embedder.1.weight"].shape[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        embedder = nn.Linear(patch_size * patch_size * 3, dim)
        head = build_head(head_variant, dim)
    dtype = sd["cap_embedder.1.weight"].dtype
    body[f"all_x_embedder.{patch_size}-1.weight"] = embedder.weight.detach().to(dtype)
    body[f"all_x_embedder.{patch_size}-1.bias"] = embedder.bias.detach().to(dtype)
    body.update({f"local_decoder.{k}": v.detach() for k, v in head.state_dict().items()})
    return body
