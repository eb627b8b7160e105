"""The L2P Detailer Head: a small full-image U-Net that replaces the DiT's final layer.

Facts (l2p-technical.md §1.3): four 3x3 conv + SiLU stages 3->64->128->256->512 with 2x max-pooling,
a 1x1 bottleneck on [pooled features ; DiT feature map] (the raw output of the last DiT block, no norm),
nearest 2x upsampling + 3x3 conv, skip concatenation, and a 1x1 output conv back to 3 channels. No
timestep or text input of its own. The raw output approximates ``x0 - noise``. Sides must be multiples
of 16 (four pools). Parameter names match the official ``local_decoder.*`` keys.

``ops`` lets ComfyUI pass its own layer classes (manual dtype cast, fp8 storage, offloading, LoRA
patching); plain torch uses ``torch.nn``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

TORCH_OPS = SimpleNamespace(Conv2d=nn.Conv2d)


def _conv(ops, cin: int, cout: int, k: int, device=None, dtype=None) -> nn.Module:
    return ops.Conv2d(cin, cout, kernel_size=k, padding=k // 2, device=device, dtype=dtype)


class DetailerHead1K(nn.Module):
    """The 1K head (patch 16): 4 levels, bottleneck at H/16 x W/16 where the DiT feature map enters."""

    levels = 4
    channels = (64, 128, 256, 512)

    def __init__(self, feature_dim: int, in_channels: int = 3, ops=TORCH_OPS, device=None, dtype=None):
        super().__init__()
        c1, c2, c3, c4 = self.channels
        kw = {"device": device, "dtype": dtype}
        self.enc1 = nn.Sequential(_conv(ops, in_channels, c1, 3, **kw), nn.SiLU())
        self.enc2 = nn.Sequential(_conv(ops, c1, c2, 3, **kw), nn.SiLU())
        self.enc3 = nn.Sequential(_conv(ops, c2, c3, 3, **kw), nn.SiLU())
        self.enc4 = nn.Sequential(_conv(ops, c3, c4, 3, **kw), nn.SiLU())
        self.bottleneck = nn.Sequential(_conv(ops, c4 + feature_dim, c4, 1, **kw), nn.SiLU())
        self.up4 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(ops, c4, c4, 3, **kw))
        self.dec4 = nn.Sequential(_conv(ops, c4 + c4, c3, 3, **kw), nn.SiLU())
        self.up3 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(ops, c3, c3, 3, **kw))
        self.dec3 = nn.Sequential(_conv(ops, c3 + c3, c2, 3, **kw), nn.SiLU())
        self.up2 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(ops, c2, c2, 3, **kw))
        self.dec2 = nn.Sequential(_conv(ops, c2 + c2, c1, 3, **kw), nn.SiLU())
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(ops, c1, c1, 3, **kw))
        self.dec1 = nn.Sequential(_conv(ops, c1 + c1, c1, 3, **kw), nn.SiLU())
        self.out_conv = _conv(ops, c1, in_channels, 1, **kw)

    @staticmethod
    def expected_keys() -> list[str]:
        names = [f"enc{i}.0" for i in range(1, 5)] + ["bottleneck.0"] + [f"up{i}.1" for i in range(1, 5)]
        names += [f"dec{i}.0" for i in range(1, 5)] + ["out_conv"]
        return [f"{n}.{p}" for n in names for p in ("weight", "bias")]

    def forward(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """x: noisy image [B, C, H, W] (H, W multiples of 16); features: DiT map [B, dim, Ht, Wt]."""
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        e4 = self.enc4(F.max_pool2d(e3, 2))
        p4 = F.max_pool2d(e4, 2)
        if features.shape[-2:] != p4.shape[-2:]:
            features = F.interpolate(features, size=p4.shape[-2:], mode="nearest")
        b = self.bottleneck(torch.cat([p4, features.to(p4.dtype)], dim=1))
        d4 = self.dec4(torch.cat([self.up4(b), e4], dim=1))
        d3 = self.dec3(torch.cat([self.up3(d4), e3], dim=1))
        d2 = self.dec2(torch.cat([self.up2(d3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out_conv(d1)


@dataclass(frozen=True)
class HeadVariant:
    name: str
    cls: type[nn.Module]
    marker: str  # a local_decoder key only this variant has

    def expected_keys(self) -> list[str]:
        return self.cls.expected_keys()


# Ordered most specific first: detection takes the first variant whose marker key is present.
HEAD_VARIANTS: dict[str, HeadVariant] = {
    "1k": HeadVariant("1k", DetailerHead1K, "enc1.0.weight"),
}


def detect_head_variant(keys: Iterable[str]) -> str:
    """Which Detailer Head the ``local_decoder.*`` keys describe (defaults to the 1K head)."""
    head_keys = {k.split("local_decoder.", 1)[1] for k in keys if "local_decoder." in k}
    for variant in HEAD_VARIANTS.values():
        if variant.marker in head_keys:
            return variant.name
    return "1k"


def build_head(variant: str, feature_dim: int, in_channels: int = 3, ops=TORCH_OPS, device=None,
               dtype=None) -> nn.Module:
    return HEAD_VARIANTS[variant].cls(feature_dim, in_channels=in_channels, ops=ops, device=device, dtype=dtype)


def head_multiple(variant: str) -> int:
    """Image sides must be multiples of this (2 ** number of pooling levels)."""
    return 2 ** HEAD_VARIANTS[variant].cls.levels
