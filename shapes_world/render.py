"""Rasterise a scene: crisp native-resolution background, anti-aliased shapes composited over it.

Only the shapes' coverage is supersampled; stripes and dots are drawn pixel-exact, because they are the fine,
high-frequency detail whose loss (through an 8x-downsampling VAE) the experiments measure.
"""

from __future__ import annotations

import numpy as np

from .scene import PALETTE, Background, Scene, SceneObject

SUPERSAMPLE = 4
DOT_SPACING = 5  # grid step of the dotted background, in native pixels


def render_background(background: Background, size: int) -> np.ndarray:
    """The background alone as a float32 (size, size, 3) array in 0..255."""
    image = np.empty((size, size, 3), np.float32)
    image[:] = background.base
    if background.kind == "striped":
        if background.vertical:
            image[:, :: background.period] = background.ink
        else:
            image[:: background.period] = background.ink
    elif background.kind == "dotted":
        rng = np.random.default_rng(background.seed)
        offsets = np.arange(DOT_SPACING // 2, size, DOT_SPACING)
        for gy in offsets:
            for gx in offsets:
                y, x = gy + int(rng.integers(-1, 2)), gx + int(rng.integers(-1, 2))
                h, w = int(rng.integers(1, 3)), int(rng.integers(1, 3))
                image[max(y, 0) : y + h, max(x, 0) : x + w] = background.ink
    return image


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Point-in-shape test on offsets from the centre; the triangle is upright isosceles, base = height."""
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":
        depth = dy + half  # distance below the apex
        return (dy <= half) & (np.abs(dx) <= depth / 2)
    raise ValueError(f"unknown shape {shape!r}")


def coverage(obj: SceneObject, size: int, supersample: int = SUPERSAMPLE) -> tuple[slice, slice, np.ndarray]:
    """The object's anti-aliased coverage in 0..1 over its (clipped) bounding-box window of the image."""
    half = obj.size / 2
    y0, y1 = max(int(np.floor(obj.y - half)) - 1, 0), min(int(np.ceil(obj.y + half)) + 1, size)
    x0, x1 = max(int(np.floor(obj.x - half)) - 1, 0), min(int(np.ceil(obj.x + half)) + 1, size)
    sub = (np.arange(supersample) + 0.5) / supersample
    ys = (np.arange(y0, y1)[:, None] + sub[None, :]).reshape(-1)
    xs = (np.arange(x0, x1)[:, None] + sub[None, :]).reshape(-1)
    hit = _inside(obj.shape, xs[None, :] - obj.x, ys[:, None] - obj.y, half).astype(np.float32)
    cov = hit.reshape(y1 - y0, supersample, x1 - x0, supersample).mean(axis=(1, 3))
    return slice(y0, y1), slice(x0, x1), cov


def render(scene: Scene) -> np.ndarray:
    """The scene's ground-truth image: (size, size, 3) uint8 RGB."""
    image = render_background(scene.background, scene.size)
    for obj in scene.objects:
        ys, xs, cov = coverage(obj, scene.size)
        color = np.asarray(PALETTE[obj.color], np.float32)
        window = image[ys, xs]
        image[ys, xs] = window + (color - window) * cov[..., None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_many(scenes: list[Scene]) -> np.ndarray:
    """Render scenes of one size into an (n, size, size, 3) uint8 batch."""
    return np.stack([render(scene) for scene in scenes]) if scenes else np.zeros((0, 64, 64, 3), np.uint8)
