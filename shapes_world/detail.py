"""High-frequency detail metrics: how much fine structure an image keeps.

An 8x-downsampling VAE followed by a 2x2 patchifier sees one token per 16x16 pixels, so detail finer than
about 4 px per cycle (1/4 cycles/pixel) is what it reconstructs worst. Stripes every 2 or 3 px sit at 1/2 and
1/3 cycles/pixel, well above that cutoff, so their survival is a sharp test of pixel-space generation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LUMA = np.asarray([0.299, 0.587, 0.114], np.float64)
DEFAULT_CUTOFF = 0.25  # cycles per pixel


def _batch(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """(N, H, W, 3) float64 from one (H, W, 3) image, a batch or a list (uint8 or float: ratios ignore scale)."""
    array = np.asarray(images, dtype=np.float64)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3) or (N, H, W, 3) RGB images, got shape {array.shape}")
    return array


def hf_energy(images: np.ndarray | Sequence[np.ndarray], cutoff: float = DEFAULT_CUTOFF) -> np.ndarray:
    """Per image: the share of the (mean-removed) luminance's spectral energy above ``cutoff`` cycles/pixel.

    0 for a uniform image; in 0..1 otherwise. Radial frequency, so horizontal and vertical detail count alike.
    """
    batch = _batch(images)
    luma = batch @ LUMA
    luma -= luma.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(luma)) ** 2
    fy = np.fft.fftfreq(luma.shape[1])[:, None]
    fx = np.fft.fftfreq(luma.shape[2])[None, :]
    high = np.hypot(fx, fy) > cutoff
    total = power.sum(axis=(1, 2))
    above = (power * high).sum(axis=(1, 2))
    return np.where(total > 0, above / np.where(total > 0, total, 1.0), 0.0)


def detail_ratio(
    generated: np.ndarray | Sequence[np.ndarray],
    reference: np.ndarray | Sequence[np.ndarray],
    cutoff: float = DEFAULT_CUTOFF,
) -> float:
    """Mean hf_energy of generated images over that of the ground-truth renders of the same prompts (1 = all
    the fine detail kept, 0 = none)."""
    ref = float(hf_energy(reference, cutoff).mean())
    if ref <= 0:
        raise ValueError("the reference images carry no high-frequency energy")
    return float(hf_energy(generated, cutoff).mean()) / ref


def stripe_contrast(images: np.ndarray | Sequence[np.ndarray], periods: Sequence[int] = (2, 3)) -> np.ndarray:
    """Per image: the grey-level depth of the strongest 2- or 3-px stripe pattern (about base - ink for a
    crisp striped background, near 0 for plain, dotted or blurred ones).

    The luminance is reduced to a row profile and a column profile by medians (robust to the objects on top),
    each profile is folded by the stripe period, and the depth is the spread of the folded phase means.
    """
    batch = _batch(images)
    luma = batch @ LUMA
    out = np.zeros(len(luma))
    for i, image in enumerate(luma):
        for profile in (np.median(image, axis=1), np.median(image, axis=0)):
            for period in periods:
                usable = len(profile) // period * period
                phases = profile[:usable].reshape(-1, period).mean(axis=0)
                out[i] = max(out[i], float(phases.max() - phases.min()))
    return out
