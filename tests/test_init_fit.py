"""The vae_* embedder fits: exact on a linear encoder, orthonormal rows for vae_orth, patch bookkeeping."""

from __future__ import annotations

import pytest
import torch

from l2p.init_fit import clean_share, fit_images, fit_linear_encoder, fit_pixel_embedder, patch_pairs, patchify
from l2p.schedule import shift_sigma


def linear_vae(weight: torch.Tensor):
    """A stand-in VAE encoder that is exactly linear per 16x16 pixel patch -> 2x2x16 latent patch."""
    def encode(images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        z = patchify(images, 16) @ weight.T  # [B*N, 64] in (ph, pw, c) order
        z = z.reshape(b, h // 16, w // 16, 2, 2, 16).permute(0, 5, 1, 3, 2, 4)
        return z.reshape(b, 16, h // 8, w // 8)
    return encode


def test_lsq_recovers_a_linear_encoder_exactly():
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(64, 768, generator=gen) * 0.05
    pixels, latents = patch_pairs(fit_images(8, 64, seed=1), linear_vae(m), 16, 2, 8)
    assert pixels.shape == (8 * 16, 768) and latents.shape == (8 * 16, 64)
    assert torch.allclose(latents, pixels @ m.T, atol=1e-5)  # the bookkeeping lines tokens up with patches
    fitted = fit_linear_encoder(pixels, latents, "vae_lsq", ridge=1e-8)
    assert (fitted @ pixels.T - m @ pixels.T).abs().max() < 1e-3


def test_orth_has_orthonormal_rows_so_pixel_noise_stays_unit_noise():
    pixels, latents = patch_pairs(fit_images(4, 64, seed=2), linear_vae(torch.randn(64, 768) * 0.05), 16, 2, 8)
    m = fit_linear_encoder(pixels, latents, "vae_orth")
    assert torch.allclose(m @ m.T, torch.eye(64), atol=1e-5)
    noise = torch.randn(20000, 768) @ m.T
    assert noise.std().item() == pytest.approx(1.0, abs=0.02)


def test_embedder_is_the_latent_embedder_composed_with_the_fit():
    w_lat, b_lat = torch.randn(32, 64), torch.randn(32)
    pixels, latents = torch.randn(500, 768), torch.randn(500, 64)
    w, b = fit_pixel_embedder(w_lat, b_lat, pixels, latents, "vae_lsq")
    assert w.shape == (32, 768) and torch.equal(b, b_lat)  # share 0: the latent bias
    assert torch.allclose(w, w_lat @ fit_linear_encoder(pixels, latents, "vae_lsq"))


def test_the_bias_has_the_least_expected_error_over_the_noise_levels():
    """Clean latents = A pixels + an offset; noisy inputs at sigma from the shifted grid, the same noise on both
    sides (vae_orth maps pixel noise to latent noise exactly): the bias with share E[1 - sigma] beats none and
    the full clean offset in expected squared error of the embedding."""
    gen = torch.Generator().manual_seed(0)
    a = torch.linalg.qr(torch.randn(768, 64, generator=gen))[0].T
    pixels = torch.rand(4000, 768, generator=gen) * 0.5 - 0.1  # non-zero mean, as images have
    latents = pixels @ a.T + torch.randn(64, generator=gen)  # an offset no linear map of pixels gives
    w_lat, b_lat = torch.randn(32, 64, generator=gen), torch.randn(32, generator=gen)
    m = fit_linear_encoder(pixels, latents, "vae_orth")
    share = clean_share(3.0)
    assert 0.2 < share < 0.5  # shift 3 draws mostly noisy inputs

    def expected_error(s: float) -> float:
        w, b = fit_pixel_embedder(w_lat, b_lat, pixels, latents, "vae_orth", share=s)
        total = 0.0
        for i in range(0, 1000, 50):
            sigma = shift_sigma(1 - i / 1000, 3.0)
            noise = torch.randn(pixels.shape, generator=gen)
            x_t, z_t = (1 - sigma) * pixels + sigma * noise, (1 - sigma) * latents + sigma * noise @ m.T
            total += ((x_t @ w.T + b) - (z_t @ w_lat.T + b_lat)).pow(2).mean().item()
        return total

    best = expected_error(share)
    assert best < 0.9 * expected_error(0.0) and best < 0.9 * expected_error(1.0)


def test_bad_patch_sizes_and_fits_are_refused():
    images = fit_images(1, 48, seed=0)
    with pytest.raises(ValueError, match="not a multiple of 16 pixels"):
        patch_pairs(images, lambda x: x, 8, 2, 8)
    with pytest.raises(ValueError, match="multiples of the patch size 32"):
        patch_pairs(images, lambda x: x, 32, 2, 8)
    with pytest.raises(ValueError, match="unknown fit"):
        fit_linear_encoder(torch.zeros(2, 3), torch.zeros(2, 3), "svd")


def test_fit_images_are_deterministic_and_in_range():
    a, b = fit_images(3, 32, seed=5), fit_images(3, 32, seed=5)
    assert torch.equal(a, b) and a.min() >= -1 and a.max() <= 1 and a.std() > 0.1
