"""Image sizes for L2P models: presets, validity per patch/head, snapping and the token grid.

Sides must be multiples of both the patch size and the head's pooling factor (``head_multiple``): 16 at
1K, 64 at 4K, 128 at 8K, 320 at 10K (uhr-heads.md §3). Nodes, the frontend hints and the trainer's
buckets all use these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .head import head_multiple

PRESETS: dict[str, tuple[int, int]] = {
    "1024x1024 (1K square)": (1024, 1024),
    "1152x896 (1K 9:7)": (1152, 896),
    "896x1152 (1K 7:9)": (896, 1152),
    "1216x832 (1K 3:2)": (1216, 832),
    "832x1216 (1K 2:3)": (832, 1216),
    "1344x768 (1K 16:9)": (1344, 768),
    "768x1344 (1K 9:16)": (768, 1344),
    "2048x2048 (2K)": (2048, 2048),
    "3840x2160 (4K UHD)": (3840, 2160),
    "4096x4096 (4K)": (4096, 4096),
    "7680x4320 (8K UHD)": (7680, 4320),
    "8192x8192 (8K)": (8192, 8192),
    "10240x10240 (10K)": (10240, 10240),
}
CUSTOM = "custom (width x height)"
FITS = ("reject", "snap up", "snap nearest")

# The sampling nodes' input limits (nodes/sampling.py), also enforced by the frontend's hint route
# (nodes/routes.py). The largest side is ComfyUI's MAX_RESOLUTION, which l2p/ cannot import.
MIN_SIDE = 16  # L2PEmptyImage width / height
MAX_BATCH = 4096  # L2PEmptyImage batch_size
SHIFT_MIN, SHIFT_MAX = 0.01, 100.0  # L2PNoiseShift shift


def side_multiple(patch_size: int, head_variant: str) -> int:
    return math.lcm(patch_size, head_multiple(head_variant))


def snap(side: int, multiple: int, how: str) -> int:
    if how == "snap up":
        return -(-side // multiple) * multiple
    if how == "snap nearest":
        return max(multiple, round(side / multiple) * multiple)
    raise ValueError(f"unknown fit {how!r}: use one of {', '.join(FITS)}")


@dataclass(frozen=True)
class SizePlan:
    width: int
    height: int
    patch_size: int
    multiple: int

    @property
    def tokens(self) -> tuple[int, int]:
        return self.width // self.patch_size, self.height // self.patch_size

    def describe(self) -> str:
        tw, th = self.tokens
        return (f"{self.width}x{self.height}: {tw}x{th} = {tw * th} tokens at patch {self.patch_size} "
                f"(sides in multiples of {self.multiple})")


def plan_size(width: int, height: int, patch_size: int, head_variant: str, fit: str = "reject") -> SizePlan:
    """Check or snap a size; the one-line error names the nearest valid sides."""
    multiple = side_multiple(patch_size, head_variant)
    sides = {"width": width, "height": height}
    for name, side in sides.items():
        if side % multiple:
            if fit == "reject":
                lo, hi = side // multiple * multiple, (side // multiple + 1) * multiple
                raise ValueError(f"{name} {side} is not a multiple of {multiple} (patch {patch_size}, head "
                                 f"{head_variant}): use {lo or hi} or {hi}, or set fit to snap")
            sides[name] = snap(side, multiple, fit)
    return SizePlan(sides["width"], sides["height"], patch_size, multiple)
