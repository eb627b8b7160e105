"""Noise shift and the flow-matching schedule (Z-Image's conventions), shared by nodes and trainer.

Z-Image samples and trains on shifted sigmas ``shift * s / (1 + (shift - 1) * s)`` (shift 3 at 1K,
l2p-technical.md §1.5, §1.6). This map scales the noise-to-signal ratio ``sigma / (1 - sigma)`` by
``shift``, so two shifts compose by multiplication.

Resolution-aware shift (``auto``): at ``n`` pixels instead of the model's native ``n0``, an image holds
about ``n / n0`` times as many pixels per unit of content; averaging them cancels noise, so the same noise
level destroys less of the picture. Keeping the signal-to-noise ratio per unit of content equal needs the
noise standard deviation scaled by ``sqrt(n / n0)`` (the resolution-dependent timestep shift of SD3,
Esser et al. 2024), i.e. the shift multiplied by it:

    shift(n) = shift_native * sqrt(n / n0)

It equals the manual value at the native size and grows monotonically with the pixel count. An L2P
model's native size is its 64 x 64 token grid times its patch (1024² at patch 16, 4096² at patch 64).
"""

from __future__ import annotations

import math

NATIVE_TOKENS_SIDE = 64  # L2P keeps the DiT at 64 x 64 = 4096 tokens at every native resolution


def native_pixels(patch_size: int) -> int:
    return (NATIVE_TOKENS_SIDE * patch_size) ** 2


def auto_shift(shift_native: float, width: int, height: int, patch_size: int) -> float:
    """The resolution-aware shift for a ``width`` x ``height`` image on a model with ``patch_size``."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size {width}x{height} must be positive")
    return shift_native * math.sqrt(width * height / native_pixels(patch_size))


def shift_sigma(sigma: float, shift: float) -> float:
    """Z-Image's / SD3's time shift of one sigma in [0, 1] (ComfyUI's ``time_snr_shift``)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def sampling_sigmas(steps: int, shift: float) -> list[float]:
    """The official sampler's sigmas: ``linspace(1, 0, steps + 1)[:-1]`` shifted, then a final 0."""
    return [shift_sigma(1 - i / steps, shift) for i in range(steps)] + [0.0]
