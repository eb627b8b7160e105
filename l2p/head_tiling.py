"""Exact spatial tiling of the Detailer Heads, and their activation-memory estimate.

Tiling (uhr-heads.md §4). The heads are full-image U-Nets, so a tile needs a halo: an output pixel depends on
input pixels within ``receptive_radius`` per axis (1k 60, 4k/10k 252, 8k 508 px; measured in
tests/test_heads.py). A tile's core equals the untiled output exactly when

* every tile origin, halo included, is on the head's pooling grid (2**levels), so pooling cells and nearest
  upsampling line up with the untiled run;
* it is also on the token grid (the patch), so the feature map slices at whole tokens; the 10k head also needs
  a 320 px grid so that its floor(0.4 i) token-to-bottleneck mapping is the same in every tile. All of these
  are ``grid = lcm(head.multiple, head.patch_size)``: 16 (1k), 64 (4k), 128 (8k), 320 (10k);
* the halo is at least the receptive radius, rounded up to the grid: 64, 256, 512, 320 px;
* tiles are clipped to the image, never padded, so the convs' zero padding at the true border is untouched.

Memory. ``peak_activation_elements`` traces the head's sampling forward (``DetailerHead.forward`` without
autograd: SiLUs in place, outer levels recomputed per strip, levels decoded in strips) on the meta device and
returns the peak of its live elements, so the estimate is the forward's own tensor lifetimes, not a model of
them. Times the element size that is the activation bytes; ``HEAD_SLACK`` covers conv workspaces and
allocator rounding.

Sampling memory (``sampling_memory``): what one model call needs besides the weights, so that a size that cannot
fit is refused before sampling starts. The call's peak is the larger of the trunk stage (one NextDiT block's
live activations per token, ``trunk_memory_bytes``) and the head stage (the unified tokens, the feature map and
the head, tiled or not), plus the padded pixels and the sampler's full-size copies (noise, x, model input and
output). Attention scores count by backend (``attention_workspace_bytes``): none where attention is linear in
memory (flash, xformers, PyTorch SDPA), a chunk of them where ComfyUI chunks it to the free memory (sub-quadratic
and split attention, its default where PyTorch attention is off: CPU, Apple MPS, most AMD). ``fitting_size``
searches the largest size or batch whose estimate fits. Pure torch, no ComfyUI import.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .head import HEAD_VARIANTS, DetailerHead
from .schedule import native_pixels

# Margin on the trunk's per-token model for kernel workspaces and allocator rounding: an assumption, not a measurement.
SLACK = 1.25
# The head's estimate is a trace of its own forward, which the CPU matches to the byte (tests/test_heads.py); the
# margin is for a GPU's conv workspaces, not measured here.
HEAD_SLACK = 1.1


def tile_grid(head: DetailerHead | type[DetailerHead]) -> int:
    """Tile origins and sizes are multiples of this (pooling grid, token grid, and 320 px for 10k)."""
    return math.lcm(head.multiple, head.patch_size)


def tile_halo(head: DetailerHead | type[DetailerHead]) -> int:
    """Context on each side of a tile: the receptive radius rounded up to the tile grid."""
    grid = tile_grid(head)
    return -(-head.receptive_radius // grid) * grid


def _spans(size: int, tile: int, halo: int) -> list[tuple[int, int, int, int]]:
    """(core start, core end, region start, region end) along one axis; regions clipped to [0, size)."""
    return [(c0, min(c0 + tile, size), max(0, c0 - halo), min(size, c0 + tile + halo)) for c0 in range(0, size, tile)]


def run_head_tiled(head: DetailerHead, x: torch.Tensor, features: torch.Tensor, tile: int) -> torch.Tensor:
    """``head(x, features)`` computed in tiles of ``tile`` x ``tile`` output pixels, each run with an exact halo.

    ``tile`` is rounded up to ``tile_grid(head)``; ``tile <= 0``, or a tile that covers the image, runs the head
    once. ``features`` must be the token grid, [B, D, H/patch, W/patch]. Peak memory is that of one
    (tile + 2 halo)^2 region plus the output.
    """
    height, width = x.shape[-2:]
    head.check_size(height, width)
    p = head.patch_size
    if tuple(features.shape[-2:]) != (height // p, width // p):
        raise ValueError(f"tiling the {head.variant} Detailer Head needs the DiT feature map on the token grid, "
                         f"{height // p}x{width // p} for a {height}x{width} image, got "
                         f"{features.shape[-2]}x{features.shape[-1]}")
    grid = tile_grid(head)
    tile = -(-int(tile) // grid) * grid
    if tile <= 0 or (tile >= height and tile >= width):
        return head(x, features)
    halo = tile_halo(head)
    out = None
    for y0, y1, ya, yb in _spans(height, tile, halo):
        for x0, x1, xa, xb in _spans(width, tile, halo):
            part = head(x[..., ya:yb, xa:xb], features[..., ya // p:yb // p, xa // p:xb // p])
            if out is None:
                out = part.new_empty((*part.shape[:-2], height, width))
            out[..., y0:y1, x0:x1] = part[..., y0 - ya:y1 - ya, x0 - xa:x1 - xa]
            del part
    return out


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages created inside the mode that are still alive, and their peak (``peak``). A storage
    counts until it is freed, whichever tensor or view held it last; ``known`` storages (inputs, weights) never."""

    def __init__(self, *known: torch.Tensor):
        super().__init__()
        self.known = {t.untyped_storage()._cdata for t in known}
        self.live = self.peak = 0

    def _free(self, nbytes: int, key: int) -> None:
        self.live -= nbytes
        self.known.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage._cdata not in self.known:
                    self.known.add(storage._cdata)
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, storage.nbytes(), storage._cdata)
        return out


@functools.lru_cache(maxsize=8)
def _meta_head(variant: str, feature_dim: int, in_channels: int) -> DetailerHead:
    return HEAD_VARIANTS[variant].cls(feature_dim, in_channels=in_channels, device="meta", dtype=torch.float32)


@functools.lru_cache(maxsize=4096)
def peak_activation_elements(variant: str, height: int, width: int, feature_dim: int = 3840,
                             in_channels: int = 3) -> int:
    """Peak live activation elements of one sampling forward of the head on one height x width image.

    Traced, not modelled: the real forward runs on the meta device (no memory, no arithmetic) under a mode that
    adds up the storages it creates and frees; the input image is counted as well (a tile slice may be copied),
    the caller's feature map and the weights are not. tests/test_heads.py checks the trace against the live bytes
    of the real forward on the CPU."""
    head = _meta_head(variant, feature_dim, in_channels)
    x = torch.empty(1, in_channels, height, width, device="meta", dtype=torch.float32)
    features = torch.empty(1, feature_dim, height // head.patch_size, width // head.patch_size, device="meta",
                           dtype=torch.float32)
    mode = LiveBytes(x, features, *head.parameters())
    with torch.no_grad(), mode:
        head(x, features)
    return mode.peak // 4 + in_channels * height * width  # float32 elements


def peak_activation_channels(variant: str, feature_dim: int = 3840, in_channels: int = 3) -> float:
    """``peak_activation_elements`` per image pixel at the variant's native size (1024² ... 10240²)."""
    side = math.isqrt(native_pixels(HEAD_VARIANTS[variant].cls.patch_size))
    return peak_activation_elements(variant, side, side, feature_dim, in_channels) / side ** 2


def head_memory_bytes(variant: str, height: int, width: int, batch: int, dtype_bytes: int,
                      feature_dim: int = 3840) -> int:
    """Estimated activation memory of one untiled sampling forward of the head on a batch of height x width
    images (``HEAD_SLACK`` included)."""
    return math.ceil(peak_activation_elements(variant, height, width, feature_dim) * batch * dtype_bytes * HEAD_SLACK)


def tiled_memory_bytes(variant: str, height: int, width: int, batch: int, dtype_bytes: int, tile: int,
                       feature_dim: int = 3840) -> int:
    """Estimated memory of ``run_head_tiled`` with this tile: the largest region's activations plus the output."""
    cls = HEAD_VARIANTS[variant].cls
    if tile <= 0 or (tile >= height and tile >= width):
        return head_memory_bytes(variant, height, width, batch, dtype_bytes, feature_dim)
    halo = tile_halo(cls)
    region = head_memory_bytes(variant, min(height, tile + 2 * halo), min(width, tile + 2 * halo), batch,
                               dtype_bytes, feature_dim)
    return region + batch * 3 * height * width * dtype_bytes


def fewest_tiles_tile(size: int, count: int, grid: int) -> int:
    """The smallest tile (a multiple of ``grid``) that covers ``size`` in ``count`` tiles per side."""
    per_tile = -(-size // count)
    return -(-per_tile // grid) * grid


def auto_tile_size(variant: str, height: int, width: int, batch: int, free_bytes: int, dtype_bytes: int,
                   feature_dim: int = 3840) -> int:
    """The tile for ``run_head_tiled``: 0 (untiled) when the whole image fits in ``free_bytes``; else the fewest
    tiles per side whose estimate fits (the halos are the extra work: n tiles per side compute
    (side + 2 (n - 1) halo)² pixels, whatever the tile), at the smallest tile that gives that count (the least
    memory for that work); the smallest tile (one grid step) when none fits. Non-decreasing in ``free_bytes``
    (with 0, untiled, above every tile)."""
    if head_memory_bytes(variant, height, width, batch, dtype_bytes, feature_dim) <= free_bytes:
        return 0
    grid = tile_grid(HEAD_VARIANTS[variant].cls)
    long = max(height, width)
    for tile in sorted({fewest_tiles_tile(long, n, grid) for n in range(2, -(-long // grid) + 1)}, reverse=True):
        need = tiled_memory_bytes(variant, height, width, batch, dtype_bytes, tile, feature_dim)
        if tile < long and need <= free_bytes:
            return tile
    return grid


# One NextDiT block's live activations, in elements of the model's dtype per token: the peak of its attention
# half (residual stream, the blocks' input kept for block patches, the normed and modulated input, q/k/v, normed
# q and k, their rotated copies, the attention output: about 14 x dim) and its feed-forward half (stream, kept
# input and normed input, 3 x dim, with w1, SiLU(w1) and w3, 3 x ffn). The RoPE table is fp32 (8 bytes per
# head-dim entry and token). Token counts are rounded up to the 32-token padding of Z-Image.
ATTENTION_DIMS, FFN_DIMS, FFN_HIDDEN, ROPE_BYTES = 14, 3, 3, 8
TOKEN_PAD = 32
# Full-size float32 copies of the image that the sampler holds while the model runs: latent, noise, x, the model
# input, the first conditioning's output and core's negated output (the head's own output is in its estimate).
SAMPLER_COPIES = 6
# What a model call takes at any size beyond the parts above (runtime buffers, kernel workspaces): measured on
# this CPU as the gap between the measured peak and the parts at small sizes (bench/calibrate_memory.py).
CALL_OVERHEAD = 48 * 2**20


# ComfyUI's attention backends by the score memory they take on top of the per-token part: "linear" (flash, xformers,
# sage, PyTorch SDPA); "sub_quad" (core's attention_sub_quad: query chunks of 4096..256 tokens against all keys,
# the largest whose scores fit a quarter of the free memory, else 512); "split" (core's attention_split: slices of
# the score matrix sized to the free memory); "basic" (the whole matrix).
ATTENTION_BACKENDS = ("linear", "sub_quad", "split", "basic")
SUB_QUAD_CHUNKS, SUB_QUAD_FALLBACK = (4096, 2048, 1024, 512, 256), 512
# At the score peak: the scores and their softmax (core's sub-quad frees the scores after the softmax is made), next
# to what a block holds while attending (stream, normed input, q, k, v, output: about 6 x dim per token). Fitted to
# bench/calibrate_memory.py's peaks at two widths (dim 768 and 3840).
SCORE_COPIES, ATTENTION_LIVE_DIMS = 2, 6


def attention_workspace_bytes(backend: str, batch: int, heads: int, tokens: int, dtype_bytes: int,
                              free_bytes: int | None) -> int:
    """Attention score memory of one joint-attention call on ``batch`` sequences of ``tokens`` tokens."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}: one of {', '.join(ATTENTION_BACKENDS)}")
    rows = batch * heads
    if backend == "linear":
        return 0
    if backend == "sub_quad":
        free = float("inf") if free_bytes is None else free_bytes
        chunk = next((c for c in SUB_QUAD_CHUNKS if free / (rows * dtype_bytes * c * 4.0) >= tokens),
                     SUB_QUAD_FALLBACK)
        return SCORE_COPIES * rows * min(chunk, tokens) * tokens * dtype_bytes
    whole = SCORE_COPIES * rows * tokens * tokens * dtype_bytes
    return whole if backend == "basic" or free_bytes is None else min(whole, free_bytes)


def trunk_memory_bytes(tokens: int, dim: int, ffn_dim: int, head_dim: int, dtype_bytes: int) -> int:
    """Estimated activation peak of the DiT trunk on ``tokens`` tokens (all batch items; ``SLACK`` included)."""
    per_token = dtype_bytes * max(ATTENTION_DIMS * dim, FFN_DIMS * dim + FFN_HIDDEN * ffn_dim) + ROPE_BYTES * head_dim
    return math.ceil(per_token * tokens * SLACK)


def _pad(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class SamplingMemory:
    """The estimate of one model call on a batch of height x width images (bytes), by part."""

    height: int
    width: int
    batch: int
    tokens: int  # trunk tokens, all batch items
    trunk: int  # trunk stage
    head: int  # head stage: unified tokens, feature map and the head (tiled with ``tile``)
    tile: int  # the head's tile, 0 = untiled
    images: int  # padded pixels and the sampler's full-size copies
    overhead: int = CALL_OVERHEAD

    @property
    def total(self) -> int:
        return max(self.trunk, self.head) + self.images + self.overhead


def sampling_memory(variant: str, height: int, width: int, batch: int, dtype_bytes: int, *, patch: int, dim: int,
                    ffn_dim: int, head_dim: int, cap_tokens: int, tile: int | None,
                    sampler_copies: int = SAMPLER_COPIES, attention: str = "linear",
                    free_bytes: int | None = None) -> SamplingMemory:
    """Estimated memory of one model call (weights not included).

    ``tile``: the head's tile side (0 untiled), or None for the smallest tile (what ``auto`` falls back to, so
    the estimate is the least this size can need). ``sampler_copies``: full-size float32 copies of the image
    that the sampler holds on the same device during the call (``SAMPLER_COPIES`` before sampling starts).
    ``attention``: ComfyUI's attention backend (``ATTENTION_BACKENDS``), with the free memory it chunks to.
    """
    cls = HEAD_VARIANTS[variant].cls
    grid = tile_grid(cls)
    hp, wp = _pad(height, math.lcm(patch, cls.multiple)), _pad(width, math.lcm(patch, cls.multiple))
    img_tokens = (hp // patch) * (wp // patch)
    sequence = _pad(img_tokens, TOKEN_PAD) + _pad(cap_tokens, TOKEN_PAD)
    tokens = batch * sequence
    tile = grid if tile is None else int(tile)
    head = tiled_memory_bytes(variant, hp, wp, batch, dtype_bytes, tile, dim)
    head += (tokens + batch * img_tokens) * dim * dtype_bytes  # the unified tokens and the feature map
    images = batch * 3 * (hp * wp * dtype_bytes + height * width * 4 * sampler_copies)
    trunk = trunk_memory_bytes(tokens, dim, ffn_dim, head_dim, dtype_bytes)
    scores = attention_workspace_bytes(attention, batch, dim // head_dim, sequence, dtype_bytes, free_bytes)
    if scores:
        trunk = max(trunk, ATTENTION_LIVE_DIMS * dim * dtype_bytes * tokens + scores)
    return SamplingMemory(height, width, batch, tokens, trunk,
                          head, tile if tile > 0 and (tile < hp or tile < wp) else 0, images)


def fitting_size(need: Callable[[int, int, int], int], height: int, width: int, batch: int, grid: int,
                 budget: int) -> tuple[int, int, int] | None:
    """The largest (height, width, batch) with ``need(h, w, b) <= budget``: the largest batch at this size when
    batch > 1 and one image fits, else the largest size of about the same aspect (sides multiples of ``grid``)
    at batch 1; None when not even one grid cell fits. ``need`` must grow with each argument."""
    if need(height, width, 1) <= budget:
        lo, hi = 1, batch  # need(lo) fits, need(hi) does not (the caller's size does not fit)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if need(height, width, mid) <= budget else (lo, mid)
        return height, width, lo
    long = max(height, width)

    def sides(n: int) -> tuple[int, int]:  # n grid steps on the long side, the short one scaled and snapped
        side = n * grid
        return (max(grid, height * side // long // grid * grid), max(grid, width * side // long // grid * grid))

    lo, hi = 0, -(-long // grid)  # sides(hi) does not fit (the caller's size, batch 1, does not)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if need(*sides(mid), 1) <= budget else (lo, mid)
    return (*sides(lo), 1) if lo else None
