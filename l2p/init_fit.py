"""A pixel patch embedder fitted to the source's latent embedding through its VAE (the ``vae_*`` inits).

The source embeds a latent patch z (2x2x16 for Z-Image) with ``W_lat z + b``; one 16x16 pixel patch x is
exactly one such latent token through the VAE encoder E (8x down, patch 2). The converted model starts
closer to what its frozen blocks expect when the pixel embedder reproduces that embedding:
``W_pix x + b ~= W_lat E(x) + b``. E is non-linear, so a linear map M with M x ~= E(x) is fitted on image
patches and ``W_pix = W_lat M``. Two fits:

* ``vae_lsq``  -- ridge least squares (the best linear M on clean images);
* ``vae_orth`` -- M with orthonormal rows (orthogonal Procrustes): the best such M on clean images that
  also maps pixel noise N(0, I) to latent noise N(0, I) exactly, which is what the source sees at high
  sigma (x_t = (1 - sigma) x0 + sigma noise is linear, so the noise part passes through M unchanged).

For patch sizes above 16 a pixel patch covers several latent tokens and the target is their mean.
Images are [-1, 1]; latents are in the source model's space (after the latent format's scale/shift).

The bias: M leaves an average offset d = mean(E(x)) - M mean(x) on clean patches. A noisy input is
(1 - sigma) clean + sigma noise and noise maps through M with mean zero, so the offset at sigma is (1 - sigma) d,
while a bias is fixed: the one with the least expected squared error over the training draws adds E[1 - sigma] d
(``clean_share`` of the shifted schedule), embedded by the latent embedder. Right on average, not at sigma 0 or 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedule import shift_sigma

FIT_INITS = ("vae_lsq", "vae_orth")


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B * (H/p) * (W/p), p*p*C] in (ph, pw, c) order, as NextDiT embeds patches."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(-1, p * p * c)


@torch.no_grad()
def patch_pairs(images: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor], patch_size: int,
                latent_patch: int, vae_downscale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel patches, target latent patches): one row per pixel patch of ``images`` [B, 3, H, W]."""
    per_token = latent_patch * vae_downscale
    if patch_size % per_token:
        raise ValueError(f"patch {patch_size} is not a multiple of {per_token} pixels (one latent token): "
                         f"use 16, 32, 64 ... for the vae_* inits, or the official init")
    h, w = images.shape[-2:]
    if h % patch_size or w % patch_size:
        raise ValueError(f"fit images are {w}x{h}: both sides must be multiples of the patch size {patch_size}")
    latents = encode(images).float()
    k = patch_size // per_token  # latent tokens per pixel patch side
    lp = latent_patch
    tokens = latents
    if k > 1:  # mean of the k*k latent patches under one pixel patch, each kept as its own lp x lp patch
        b, c, lh, lw = latents.shape
        grid = latents.reshape(b, c, lh // (lp * k), k, lp, lw // (lp * k), k, lp).mean(dim=(3, 6))
        tokens = grid.reshape(b, c, (lh // (lp * k)) * lp, (lw // (lp * k)) * lp)
    return patchify(images.float(), patch_size), patchify(tokens, lp)


@torch.no_grad()
def fit_linear_encoder(pixels: torch.Tensor, latents: torch.Tensor, method: str, ridge: float = 1e-3) -> torch.Tensor:
    """M [latent_width, pixel_width] with ``pixels @ M.T ~= latents`` (see the module docstring)."""
    x, z = pixels.double(), latents.double()
    if method == "vae_lsq":
        gram = x.T @ x
        gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
        return torch.linalg.solve(gram, x.T @ z).T.float()
    if method == "vae_orth":
        u, _, vh = torch.linalg.svd(x.T @ z, full_matrices=False)
        return (u @ vh).T.float()
    raise ValueError(f"unknown fit {method!r}: use one of {', '.join(FIT_INITS)}")


def clean_share(shift: float, n: int = 1000) -> float:
    """E[1 - sigma] over the training draws (the ``shift``-ed uniform grid): the clean image's average share of a
    noisy input."""
    return sum(1 - shift_sigma(1 - i / n, shift) for i in range(n)) / n


def fit_pixel_embedder(latent_weight: torch.Tensor, latent_bias: torch.Tensor, pixels: torch.Tensor,
                       latents: torch.Tensor, method: str, share: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [dim, p*p*3], bias [dim]) of the pixel embedder: the latent embedder composed with M, its bias plus
    ``share`` times the embedded clean offset (module docstring; ``clean_share``)."""
    m = fit_linear_encoder(pixels, latents, method)
    w = latent_weight.float()
    offset = latents.float().mean(0) - m @ pixels.float().mean(0)
    return w @ m, latent_bias.float() + share * (w @ offset)


def fit_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """[n, 3, size, size] in [-1, 1]: procedural pictures (smooth colour fields, soft shapes, edges, stripes,
    fine texture) with a natural-image-like spread of frequencies; made offline from ``seed``."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen)

    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        a = rand(2) * 6.2832
        img = rand(3, 1, 1) * 2 - 1 + (rand(3, 1, 1) - 0.5) * (torch.cos(a[0]) * xx + torch.sin(a[0]) * yy)
        for _ in range(int(rand(1).item() * 6) + 1):  # soft-edged ellipses and hard rectangles
            cx, cy, rx, ry = rand(4) * torch.tensor([2, 2, 0.6, 0.6]) - torch.tensor([1, 1, -0.05, -0.05])
            d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
            hard = rand(1).item() < 0.5
            mask = (d < 1).float() if hard else torch.sigmoid((1 - d) * (4 + 20 * rand(1)))
            img = img * (1 - mask) + (rand(3, 1, 1) * 2 - 1) * mask
        freq = 4 + 60 * rand(1)
        stripes = torch.sin(freq * (torch.cos(a[1]) * xx + torch.sin(a[1]) * yy))
        img = img + 0.3 * rand(1) * stripes * (rand(3, 1, 1) - 0.5)
        img = img + 0.08 * rand(1) * torch.randn(3, size, size, generator=gen)
        out[i] = img.clamp(-1, 1)
    return out
