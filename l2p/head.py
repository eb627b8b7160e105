"""The L2P Detailer Heads: small full-image U-Nets that replace the DiT's final layer.

Facts (l2p-technical.md §1.3, §1.7; uhr-heads.md §2-§4). Every head is the same kind of U-Net:

* ``enc`` = 3x3 conv + SiLU (its output is the skip), then 2x max-pooling;
* ``bottleneck`` = 1x1 conv + SiLU on ``cat([pooled, DiT feature map])`` (the raw output of the last DiT
  block, no norm) -- the only conditioning; there is no timestep or text input of its own;
* ``up`` = nearest 2x upsampling + 3x3 conv (no activation; the conv sits at index 1, ``up4.1.weight``);
* ``dec`` = 3x3 conv + SiLU on ``cat([up, skip])``; ``out_conv`` = 1x1 conv back to 3 channels.

The raw output approximates ``x0 - noise``. The variants differ in their stages (outermost first):

=====  =====  ========================================================  ==============================
head   patch  stages (enc / up / dec)                                   bottleneck (D = feature dim)
=====  =====  ========================================================  ==============================
0.5k   8      enc1..enc3 3->64->128->256 (no enc4; up3 512->256)        (256+D)->512 at H/8
1k     16     enc1..enc4 3->64->128->256->512                           (512+D)->512 at H/16
4k     64     enc0 3->16, enc0b ->32, enc1 ->64 .. enc4 ->512           (512+D)->512 at H/64
8k     128    enc_8k 3->3, then the 4k stages                           (512+D)->512 at H/128
10k    160    enc_10k_a 3->3, enc0 .. enc3 ->256 (no enc4; up3 512->256)  (256+D)->512 at H/64
=====  =====  ========================================================  ==============================

0.5k is the pack's own, not a released head: the 1k head without its innermost level (as 10k is the 4k head without
enc4), for DiTs with 8-pixel patches (the replication's 8x8-token world); the token grid enters exactly.

Feature injection: the 1k head nearest-interpolates the feature map if its shape differs from the bottleneck;
4k and 8k concatenate it as is (it must be the H/p x W/p token grid); 10k has its bottleneck at H/64 but its
tokens at H/160 and resizes them with legacy ``nearest`` (official code: a hard-coded 160x160, identical at
10240x10240; here the real bottleneck size, which needs sides that are multiples of 320 = lcm(160, 64)).

Parameter names match the official ``local_decoder.*`` keys. ``ops`` lets ComfyUI pass its own layer classes
(manual dtype cast, fp8 storage, offloading, LoRA patching); plain torch uses ``torch.nn``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .format.keys import HEAD_PREFIX

TORCH_OPS = SimpleNamespace(Conv2d=nn.Conv2d)
# Sampling runs a level in this many row strips once it has STREAM_MIN_ROWS rows (DetailerHead.forward): a strip's
# temporaries are 1/16 of the level's, its halo rows a few percent of its work. The outer RECOMPUTED_LEVELS levels
# recompute their skips per strip (their convs are the cheapest: 3 or 16 input channels) instead of keeping them.
STREAM_STRIPS, STREAM_MIN_ROWS, RECOMPUTED_LEVELS = 16, 256, 2


def _conv(ops, cin: int, cout: int, k: int, device=None, dtype=None) -> nn.Module:
    return ops.Conv2d(cin, cout, kernel_size=k, padding=k // 2, device=device, dtype=dtype)


def _pool(h: torch.Tensor) -> torch.Tensor:
    """The 2x max-pooling between levels (a module-level function so that tests can swap it)."""
    return F.max_pool2d(h, 2)


class Stage(NamedTuple):
    """One U-Net level, outermost first: its three module names and output channels.

    Inputs follow from the neighbours: ``enc`` takes the previous level's skip (or the image), ``up`` takes
    the inner level's ``dec`` output (or the bottleneck), ``dec`` takes ``up_out + enc_out``.
    """

    enc: str
    up: str
    dec: str
    enc_out: int
    up_out: int
    dec_out: int


def _stages(suffixes: Iterable[str], enc_out: Iterable[int], up_out: Iterable[int],
            dec_out: Iterable[int]) -> tuple[Stage, ...]:
    """Stages named enc<s>/up<s>/dec<s> for each suffix (``enc0b``, ``up0b``, ``dec0b``)."""
    return tuple(Stage(f"enc{s}", f"up{s}", f"dec{s}", e, u, d)
                 for s, e, u, d in zip(suffixes, enc_out, up_out, dec_out, strict=True))


_STAGES_1K = _stages(["1", "2", "3", "4"], [64, 128, 256, 512], [64, 128, 256, 512], [64, 64, 128, 256])
_STAGES_05K = _STAGES_1K[:-1]  # up3 takes the bottleneck's 512 channels down to 256
_STAGES_4K = _stages(["0", "0b", "1", "2", "3", "4"], [16, 32, 64, 128, 256, 512], [16, 32, 64, 128, 256, 512],
                     [16, 16, 32, 64, 128, 256])
_STAGE_8K = Stage("enc_8k", "up_8k", "dec_8k", 3, 16, 16)
_STAGE_10K = Stage("enc_10k_a", "up_10k_a", "dec_10k_a", 3, 16, 16)
# 10k: the 4k stages without enc4/up4/dec4, and up3 takes the bottleneck's 512 channels down to 256.
_STAGES_10K = (_STAGE_10K, *_STAGES_4K[:-1])


def _narrow(channels: int, width_div: int) -> int:
    """A stage's width in a head ``width_div`` times narrower; the 3-channel image stages stay as they are."""
    if channels <= 3:
        return channels
    if width_div < 1 or channels % width_div:
        raise ValueError(f"head width divisor {width_div} does not divide the head's {channels} channels: use a "
                         "power of two up to 16")
    return channels // width_div


class DetailerHead(nn.Module):
    """A Detailer Head U-Net built from ``STAGES`` (outermost first) with the official key names.

    Subclasses set the class attributes; ``forward(x, features)`` takes the noisy image [B, C, H, W] (sides
    multiples of ``multiple``) and the DiT feature map [B, D, H/patch, W/patch] and returns [B, C, H, W].
    """

    variant: str
    STAGES: tuple[Stage, ...]
    bottleneck_out = 512
    levels: int  # number of 2x poolings; the bottleneck is at H / 2**levels
    patch_size: int  # DiT patch: the feature map is H/patch x W/patch
    multiple: int  # image sides must be multiples of this
    receptive_radius: int  # px an output pixel can depend on, per axis (uhr-heads.md §4; tests/test_heads.py)
    feature_injection: str  # "interpolate_if_differs" (1k), "exact" (4k, 8k), "resize" (10k)

    def __init__(self, feature_dim: int, in_channels: int = 3, ops=TORCH_OPS, device=None, dtype=None,
                 width_div: int = 1):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        if width_div != 1:  # a narrower head of the same design (the CPU replication world); keys unchanged
            self.STAGES = tuple(Stage(st.enc, st.up, st.dec, *(_narrow(c, width_div) for c in st[3:]))
                                for st in self.STAGES)
            self.bottleneck_out = _narrow(self.bottleneck_out, width_div)
        self.width_div = width_div
        cin = in_channels
        for st in self.STAGES:
            self.add_module(st.enc, nn.Sequential(_conv(ops, cin, st.enc_out, 3, **kw), nn.SiLU()))
            cin = st.enc_out
        self.bottleneck = nn.Sequential(_conv(ops, cin + feature_dim, self.bottleneck_out, 1, **kw), nn.SiLU())
        cin = self.bottleneck_out
        for st in reversed(self.STAGES):
            self.add_module(st.up, nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                 _conv(ops, cin, st.up_out, 3, **kw)))
            self.add_module(st.dec, nn.Sequential(_conv(ops, st.up_out + st.enc_out, st.dec_out, 3, **kw),
                                                  nn.SiLU()))
            cin = st.dec_out
        self.out_conv = _conv(ops, cin, in_channels, 1, **kw)

    @classmethod
    def expected_keys(cls) -> list[str]:
        """The ``local_decoder.*`` tensor names (without the prefix), in registration order."""
        names = [st.enc + ".0" for st in cls.STAGES] + ["bottleneck.0"]
        for st in reversed(cls.STAGES):
            names += [st.up + ".1", st.dec + ".0"]
        names.append("out_conv")
        return [f"{n}.{p}" for n in names for p in ("weight", "bias")]

    def check_size(self, height: int, width: int) -> None:
        """Raise a one-line ValueError unless an image of this size fits the head."""
        m = self.multiple
        if height % m or width % m:
            h, w = -(-height // m) * m, -(-width // m) * m
            raise ValueError(f"the {self.variant} Detailer Head needs image sides that are multiples of {m}, got "
                             f"{height}x{width} (pad or resize to e.g. {h}x{w})")

    def fit_features(self, features: torch.Tensor, size: torch.Size, image: tuple[int, int]) -> torch.Tensor:
        """The DiT feature map at the bottleneck's ``size``, as this variant injects it."""
        if features.shape[-2:] == size:
            return features
        if self.feature_injection == "exact":
            p = self.patch_size
            raise ValueError(f"the {self.variant} Detailer Head needs the DiT feature map at H/{p} x W/{p} = "
                             f"{size[0]}x{size[1]} tokens for a {image[0]}x{image[1]} image, got "
                             f"{features.shape[-2]}x{features.shape[-1]}")
        # legacy "nearest" (src = floor(dst * in/out)), as the official 1k and 10k code; not "nearest-exact"
        return F.interpolate(features, size=tuple(size), mode="nearest")

    def forward(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """x: noisy image [B, C, H, W]; features: DiT map [B, D, Ht, Wt] (see ``fit_features``).

        With autograd (training) every level runs whole. Without it (sampling) the same convolutions run on the
        same inputs in a different order, for memory (``head_tiling.head_memory_bytes`` traces it): SiLUs in place;
        the outer ``RECOMPUTED_LEVELS`` levels, full-resolution and cheap, run in row strips and their skips are
        recomputed from the image per strip instead of kept; every level with ``STREAM_MIN_ROWS`` rows decodes in
        strips. A strip is computed on its rows plus a halo as deep as its convs reach and keeps its own rows."""
        self.check_size(x.shape[-2], x.shape[-1])
        sampling = not torch.is_grad_enabled()
        outer = min(RECOMPUTED_LEVELS, len(self.STAGES) - 1) if sampling else 0
        skips = []
        if outer:
            h = self._strips(x.shape[-2] >> outer, stream_rows(x.shape[-2]) >> outer, 0,
                             lambda a, b: _pool(self._skip_rows(x, outer - 1, 2 * a, 2 * b)))
        else:
            h = x
        for st in self.STAGES[outer:]:
            h = _conv_silu(getattr(self, st.enc), h, sampling)
            skips.append(h)
            h = _pool(h)
        # a resized feature map is a temporary of the call, freed as soon as it is used
        fitted = [self.fit_features(features, h.shape[-2:], (x.shape[-2], x.shape[-1])).to(h.dtype)]
        h = _conv_silu(self.bottleneck, torch.cat([h, fitted.pop()], dim=1), sampling)
        for level in reversed(range(len(self.STAGES))):
            skip = skips.pop() if level >= outer else None
            height = x.shape[-2] >> level
            rows = stream_rows(height) if sampling else height
            h = self._strips(height, rows, 2, functools.partial(self._decode_rows, level, h, skip, x, sampling))
            del skip
        return h

    def _decode_rows(self, level: int, inner: torch.Tensor, skip: torch.Tensor | None, x: torch.Tensor,
                     inplace: bool, a: int, b: int) -> torch.Tensor:
        """Rows a..b of ``dec(cat([up(inner), skip]))`` (and ``out_conv`` at level 0); the skip's rows are
        recomputed from ``x`` when it was not kept. Rows next to a cut that is not the image border are wrong."""
        st = self.STAGES[level]
        skip_rows = skip[..., a:b, :] if skip is not None else self._skip_rows(x, level, a, b)
        h = torch.cat([getattr(self, st.up)(inner[..., a // 2:b // 2, :]), skip_rows], dim=1)
        del skip_rows
        h = _conv_silu(getattr(self, st.dec), h, inplace)
        return self.out_conv(h) if level == 0 else h  # out_conv is 1x1: its halo rows cost little

    def _skip_rows(self, x: torch.Tensor, level: int, r0: int, r1: int) -> torch.Tensor:
        """Rows r0..r1 of the encoder output (the skip) at ``level``, from the image rows they depend on: each level's
        3x3 conv reaches one row, and its input is the pooled output of the level above (exact rows, twice as many)."""
        height = x.shape[-2] >> level
        a, b = max(0, r0 - 1), min(height, r1 + 1)
        h = x[..., a:b, :].contiguous() if level == 0 else _pool(self._skip_rows(x, level - 1, 2 * a, 2 * b))
        h = _conv_silu(getattr(self, self.STAGES[level].enc), h, True)
        return h if (a, b) == (r0, r1) else h[..., r0 - a:r1 - a, :]

    @staticmethod
    def _strips(height: int, rows: int, halo: int, compute) -> torch.Tensor:
        """A level ``height`` rows tall, ``rows`` at a time: ``compute(a, b)`` gives rows a..b, of which the ``halo``
        rows next to a cut inside the image are dropped; the kept rows fill one tensor. One strip (no cut) returns
        ``compute``'s result as it is."""
        rows = max(1, rows)
        out = None
        for r0 in range(0, height, rows):
            r1 = min(height, r0 + rows)
            a, b = max(0, r0 - halo), min(height, r1 + halo)
            part = compute(a, b)
            if rows >= height:
                return part
            if out is None:
                out = part.new_empty((*part.shape[:-2], height, part.shape[-1]))
            out[..., r0:r1, :] = part[..., r0 - a:r1 - a, :]
            del part
        return out


def stream_rows(height: int) -> int:
    """Rows per strip for a level ``height`` rows tall: ``STREAM_STRIPS`` even-sized strips when the level has at
    least ``STREAM_MIN_ROWS`` rows, else the whole level (one strip, no halo)."""
    if height < STREAM_MIN_ROWS:
        return height
    rows = -(-height // STREAM_STRIPS)
    return rows + rows % 2


def _conv_silu(block: nn.Module, h: torch.Tensor, inplace: bool) -> torch.Tensor:
    """A ``Sequential(conv, SiLU)`` block; without autograd the SiLU overwrites the conv output."""
    return F.silu(block[0](h), inplace=inplace)


class DetailerHead1K(DetailerHead):
    """The 1K head (patch 16): 4 levels, bottleneck at H/16 x W/16 where the DiT feature map enters."""

    variant = "1k"
    STAGES = _STAGES_1K
    channels = (64, 128, 256, 512)
    levels = 4
    patch_size = 16
    multiple = 16
    receptive_radius = 60
    feature_injection = "interpolate_if_differs"


class DetailerHead05K(DetailerHead):
    """The pack's 0.5K head (patch 8; not released): the 1K head's outer three levels, bottleneck at H/8 = the
    token grid, so an 8-pixel-patch DiT's tokens are decoded at their own resolution."""

    variant = "0.5k"
    STAGES = _STAGES_05K
    levels = 3
    patch_size = 8
    multiple = 8
    receptive_radius = 28  # tests/test_heads.py: interval propagation and gradient support
    feature_injection = "exact"


class DetailerHead4K(DetailerHead):
    """The 4K head (patch 64): 6 levels 3->16->32->64->128->256->512, bottleneck at H/64 = the token grid."""

    variant = "4k"
    STAGES = _STAGES_4K
    levels = 6
    patch_size = 64
    multiple = 64
    receptive_radius = 252
    feature_injection = "exact"


class DetailerHead8K(DetailerHead):
    """The 8K head (patch 128): enc_8k 3->3 + pool around the 4K U-Net, bottleneck at H/128 = the token grid."""

    variant = "8k"
    STAGES = (_STAGE_8K, *_STAGES_4K)
    levels = 7
    patch_size = 128
    multiple = 128
    receptive_radius = 508
    feature_injection = "exact"


class DetailerHead10K(DetailerHead):
    """The 10K head (patch 160): enc_10k_a 3->3 + pool, the 4K U-Net without enc4, bottleneck (256+D) at H/64.

    The H/160 token map is nearest-resized to the H/64 bottleneck: tokens alternately cover 3 and 2 cells.
    """

    variant = "10k"
    STAGES = _STAGES_10K
    levels = 6
    patch_size = 160
    multiple = 320  # lcm(160, 2**6): whole tokens and whole bottleneck cells
    receptive_radius = 252
    feature_injection = "resize"


@dataclass(frozen=True)
class HeadVariant:
    name: str
    cls: type[DetailerHead]

    def expected_keys(self) -> list[str]:
        return self.cls.expected_keys()


HEAD_VARIANTS: dict[str, HeadVariant] = {v.name: v for v in (
    HeadVariant("10k", DetailerHead10K), HeadVariant("8k", DetailerHead8K), HeadVariant("4k", DetailerHead4K),
    HeadVariant("1k", DetailerHead1K), HeadVariant("0.5k", DetailerHead05K))}


def detect_head_variant(keys: Iterable[str]) -> str:
    """Which Detailer Head the ``local_decoder.*`` keys describe (the 1K head when there are none).

    The variant whose key set differs least from the file's (ties: the larger head), so a head with a tensor or
    two missing or extra is still read as what it is and strict loading names the difference, instead of a
    missing marker tensor turning a 4K head into a 1K one with dozens of "unexpected" tensors."""
    head_keys = {k.split(HEAD_PREFIX, 1)[1] for k in keys if HEAD_PREFIX in k}  # under any checkpoint prefix
    if not head_keys:
        return "1k"
    return min(HEAD_VARIANTS.values(), key=lambda v: len(head_keys.symmetric_difference(v.expected_keys()))).name


def build_head(variant: str, feature_dim: int, in_channels: int = 3, ops=TORCH_OPS, device=None,
               dtype=None, width_div: int = 1) -> DetailerHead:
    """``width_div`` > 1 builds every stage that many times narrower (official heads: 1)."""
    return HEAD_VARIANTS[variant].cls(feature_dim, in_channels=in_channels, ops=ops, device=device, dtype=dtype,
                                      width_div=width_div)


def head_width_div(keys_to_shapes) -> int:
    """How many times narrower than the official head a ``local_decoder`` is (1 for released checkpoints),
    read from its bottleneck (512 output channels in every official variant)."""
    for key, value in keys_to_shapes.items():
        if key.endswith(HEAD_PREFIX + "bottleneck.0.weight"):
            out = int(value.shape[0])
            if out < 1 or DetailerHead.bottleneck_out % out:
                raise ValueError(f"the Detailer Head's bottleneck has {out} channels; expected 512 divided by a "
                                 "power of two: the file is not an L2P checkpoint of a known head")
            return DetailerHead.bottleneck_out // out
    return 1


def head_multiple(variant: str) -> int:
    """Image sides must be multiples of this: 2 ** pooling levels (10k: lcm(160, 64) = 320)."""
    return HEAD_VARIANTS[variant].cls.multiple


def head_for_patch(patch_size: int) -> str:
    """The head a conversion at this pixel patch gets: the variant made for it (8 -> "0.5k", 16 -> "1k", ...),
    else the 1K head, which resizes the token map to its bottleneck."""
    try:
        return variant_for_patch(patch_size)
    except ValueError:
        return "1k"


def variant_for_patch(patch_size: int) -> str:
    """The head variant that goes with a DiT patch size (16 -> "1k", 64 -> "4k", 128 -> "8k", 160 -> "10k")."""
    for variant in HEAD_VARIANTS.values():
        if variant.cls.patch_size == patch_size:
            return variant.name
    supported = ", ".join(f"{v.cls.patch_size} ({v.name})" for v in reversed(HEAD_VARIANTS.values()))
    raise ValueError(f"no L2P Detailer Head for patch size {patch_size}: supported patches are {supported}")
