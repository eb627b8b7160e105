"""The official flow-matching Euler sampler, with optional classifier-free guidance, in plain torch.

ComfyUI samples L2P models with its own KSampler; this is for the places that run without ComfyUI: the
trainer's validation images and the benchmarks. ``velocity(x, sigma)`` returns ``noise - x0`` (Z-Image's
flow convention), so one Euler step is ``x += v * (sigma_next - sigma)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euler_sample(velocity: Velocity, noise: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Integrate from ``noise`` (at ``sigmas[0]``, usually 1) down the given sigmas (ending at 0)."""
    x = noise
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        x = x + velocity(x, torch.full((x.shape[0],), float(s), device=x.device)) * (s_next - s)
    return x


def guided(cond: Velocity, uncond: Velocity, scale: float) -> Velocity:
    """Classifier-free guidance on the velocity (equal to guiding x0 for a linear flow, as ComfyUI's cfg does)."""
    if scale == 1.0:
        return cond

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        u = uncond(x, sigma)
        return u + scale * (cond(x, sigma) - u)

    return velocity
