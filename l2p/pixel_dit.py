"""The L2P model in plain torch on diffusers' Z-Image trunk (the training and reference world).

diffusers' ``ZImageTransformer2DModel`` carries the official L2P key names and Z-Image's maths; its latent
final layer is swapped for a module that hands the exact Ht*Wt image tokens to the Detailer Head.
Conventions (official ``model_fn_z_image``): model time = 1 - sigma (the trunk scales it by 1000), the
head predicts ``x0 - noise`` and the model returns its negation, ``noise - x0``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .format.keys import with_head_prefix
from .format.layouts import L2PConfig
from .head import build_head


class _TakeImageTokens(nn.Module):
    """Stands in for the latent final layer: keeps the unified tokens, returns zeros of the expected width."""

    def __init__(self, out_width: int):
        super().__init__()
        self.out_width = out_width
        self.tokens: torch.Tensor | None = None

    def forward(self, unified: torch.Tensor, c=None, **_) -> torch.Tensor:
        self.tokens = unified
        return unified.new_zeros(*unified.shape[:2], self.out_width)


class PixelDiT(nn.Module):
    """trunk (official layout) + ``local_decoder``; ``state_dict()`` is the official L2P layout."""

    def __init__(self, trunk: nn.Module, head: nn.Module | None = None, head_variant: str = "1k"):
        super().__init__()
        (self.patch_size,) = trunk.all_patch_size
        key = f"{self.patch_size}-1"
        trunk.all_final_layer[key] = _TakeImageTokens(self.patch_size ** 2 * 3)
        self.trunk = trunk
        self.local_decoder = head if head is not None else build_head(head_variant, trunk.dim)

    def features(self, x: torch.Tensor, t_model: torch.Tensor, cap_feats: list[torch.Tensor]) -> torch.Tensor:
        """[B, dim, Ht, Wt]: the raw last-block output at the real (unpadded) image tokens, image first."""
        self.trunk([xi.unsqueeze(1) for xi in x], t_model, cap_feats, patch_size=self.patch_size)
        tokens = self.trunk.all_final_layer[f"{self.patch_size}-1"].tokens
        b, _, h, w = x.shape
        ht, wt = h // self.patch_size, w // self.patch_size
        return tokens[:, :ht * wt].reshape(b, ht, wt, -1).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cap_feats: list[torch.Tensor]) -> torch.Tensor:
        """Flow velocity ``noise - x0`` for noisy pixels x = (1 - sigma) x0 + sigma noise in [-1, 1]."""
        feats = self.features(x, 1.0 - sigma, cap_feats)
        return -self.local_decoder(x, feats)

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        return official_state_dict(self.trunk, self.local_decoder)


def official_state_dict(trunk: nn.Module, head: nn.Module) -> dict[str, torch.Tensor]:
    """Official L2P layout: the trunk without its latent final layer, plus ``local_decoder.*``."""
    sd = {k: v for k, v in trunk.state_dict().items() if not k.startswith("all_final_layer.")}
    sd.update(with_head_prefix(head.state_dict()))
    return sd


def official_names(model: PixelDiT) -> dict[str, str]:
    """PixelDiT parameter name -> official L2P name (``trunk.`` dropped; the head keeps ``local_decoder.``)."""
    return {n: n[len("trunk."):] if n.startswith("trunk.") else n for n, _ in model.named_parameters()}


def pixel_dit_from_official(sd: Mapping[str, torch.Tensor], cfg: L2PConfig, what: str = "the model") -> PixelDiT:
    """A float32 PixelDiT holding an official-layout state dict: weights assigned into a meta-device skeleton (no
    second copy, no random init of 6B parameters). A state dict that does not match ``cfg`` is refused in one line
    naming ``what``."""
    from .tiny import official_trunk

    trunk = official_trunk(cfg.dim, cfg.n_layers, cfg.n_noise_refiner, cfg.n_heads, cfg.cap_feat_dim, cfg.patch_size,
                           device="meta")
    with torch.device("meta"):
        head = build_head(cfg.head_variant, cfg.dim, width_div=cfg.head_width_div)
    model = PixelDiT(trunk, head, head_variant=cfg.head_variant)
    names = official_names(model)
    expected = set(names.values()) | {k for k, _ in model.named_buffers()}
    missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or unexpected:
        raise ValueError(f"{what} does not match its own architecture ({len(missing)} tensors missing, e.g. "
                         f"{(missing or unexpected)[0]}): convert or export it again")
    model.load_state_dict({n: sd[o].float() for n, o in names.items()}, assign=True, strict=True)
    return model
