"""A 1K L2P model -> a high-resolution variant (4K / 8K / 10K) ready for training.

* The patch embedder is resized from p to q pixels so that it *keeps its response*: with ``B`` the linear
  (bilinear) resize of a p x p patch to q x q, the new weight solves ``W_q B = W_p``, i.e. ``W_q = W_p B+``
  (pseudo-inverse resize, as FlexiViT does for ViT patch embeddings). Embedding a patch upsampled to q
  pixels gives exactly what the 1K model gave for the original patch.
* The deeper Detailer Head starts from the 1K head wherever a tensor's name and shape match (encoder
  stages enc2-enc4, the bottleneck, up4-up1 and dec4-dec2 for 4K/8K); the new outer stages keep their
  seeded default init, as the official conversion does for anything that does not fit. The new head is as
  wide as the source's (``head_width_div``, read from its bottleneck) unless a width divisor is given: a
  narrow 1K head (the CPU replication world's) only fits a head narrowed the same way.
* The trunk is copied unchanged. The trainer takes the result like any converted model.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from .format.keys import HEAD_PREFIX, L2PFormatError, has_head, head_part, strip_prefix
from .format.layouts import OFFICIAL, X_EMBEDDER_RE, detect_layout, infer_patch_size
from .head import HEAD_VARIANTS, build_head, detect_head_variant, head_width_div


def resize_matrix(p: int, q: int) -> torch.Tensor:
    """[q*q, p*p]: bilinear resize of one p x p channel to q x q, as a matrix (float64)."""
    basis = torch.eye(p * p, dtype=torch.float64).reshape(p * p, 1, p, p)
    out = F.interpolate(basis, size=(q, q), mode="bilinear", align_corners=False)
    return out.reshape(p * p, q * q).T


def resize_patch_embedder(weight: torch.Tensor, p: int, q: int, channels: int = 3) -> torch.Tensor:
    """[dim, p*p*C] in (ph, pw, c) order -> [dim, q*q*C] with W_q B = W_p per channel."""
    dim = weight.shape[0]
    b_pinv = torch.linalg.pinv(resize_matrix(p, q))  # [p*p, q*q]
    w = weight.double().reshape(dim, p * p, channels)
    out = torch.einsum("dkc,kn->dnc", w, b_pinv)
    return out.reshape(dim, q * q * channels).to(weight.dtype)


def _fresh_head(sd: Mapping[str, torch.Tensor], variant: str, width_div: int | None,
                device: str | None = None) -> dict[str, torch.Tensor]:
    """``variant``'s default head for the prefix-stripped ``sd``: its feature dim, ``width_div`` or the source's."""
    if width_div is None:
        width_div = head_width_div(sd)
    return build_head(variant, int(sd["cap_embedder.1.weight"].shape[0]), device=device,
                      width_div=width_div).state_dict()


def _fits(old: Mapping[str, torch.Tensor], name: str, fresh: torch.Tensor) -> bool:
    return name in old and tuple(old[name].shape) == tuple(fresh.shape)


def l2p_to_variant(sd: Mapping[str, torch.Tensor], variant: str, seed: int = 0,
                   width_div: int | None = None) -> dict[str, torch.Tensor]:
    """An L2P state dict (either layout) re-headed as ``variant`` with its embedder resized to that patch.

    ``width_div``: the new head's width divisor (``build_head``); default: the source head's."""
    sd = strip_prefix(sd)
    if not has_head(sd):
        raise L2PFormatError("the source has no Detailer Head: convert a latent model with python -m l2p.convert "
                             "--head VARIANT instead")
    if variant not in HEAD_VARIANTS:
        raise ValueError(f"unknown head {variant!r}: use one of {', '.join(HEAD_VARIANTS)}")
    current = detect_head_variant(sd.keys())
    if current == variant:
        raise ValueError(f"the model already has the {variant} head: nothing to convert")
    layout = detect_layout(sd.keys())
    p = infer_patch_size(sd)
    q = HEAD_VARIANTS[variant].cls.patch_size
    out: dict[str, torch.Tensor] = {}
    for key, tensor in sd.items():
        if key.startswith(HEAD_PREFIX):
            continue
        m = X_EMBEDDER_RE.match(key)
        if m or key.startswith("x_embedder."):
            suffix = key.rsplit(".", 1)[1]
            name = f"all_x_embedder.{q}-1.{suffix}" if layout == OFFICIAL else f"x_embedder.{suffix}"
            out[name] = resize_patch_embedder(tensor, p, q) if suffix == "weight" else tensor
            continue
        out[key] = tensor
    dtype = sd["cap_embedder.1.weight"].dtype
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = _fresh_head(sd, variant, width_div)
    old = head_part(sd)
    for name, fresh in head.items():
        out[HEAD_PREFIX + name] = old[name] if _fits(old, name, fresh) else fresh.to(dtype)
    return out


def inherited_head_tensors(sd: Mapping[str, torch.Tensor], variant: str, width_div: int | None = None) -> list[str]:
    """The head tensors (names without ``local_decoder.``) that ``l2p_to_variant(sd, variant, width_div=...)``
    takes over from ``sd``, sorted (for reports and tests)."""
    sd = strip_prefix(sd)
    old = head_part(sd)
    return sorted(k for k, v in _fresh_head(sd, variant, width_div, device="meta").items() if _fits(old, k, v))
