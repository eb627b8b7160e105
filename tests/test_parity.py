"""Same weights, same inputs -> same prediction: ComfyUI's trunk + our head (what users sample with) against
the official-convention model on diffusers' Z-Image trunk (l2p/pixel_dit.py), in both checkpoint layouts."""

from __future__ import annotations

import importlib

import pytest
import torch

from harness.inprocess import import_pack
from l2p.format.layouts import official_to_comfy
from l2p.pixel_dit import PixelDiT, official_state_dict
from l2p.tiny import tiny_l2p


@pytest.fixture(scope="module")
def model_mod():
    return importlib.import_module(import_pack().__name__ + ".nodes.comfy_core")


@pytest.fixture(scope="module")
def tiny():
    trunk, head = tiny_l2p(seed=7)
    sd = official_state_dict(trunk, head)
    reference = PixelDiT(trunk, head)
    reference.train(False)
    return reference, sd


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


CASES = [  # (H, W, batch, caption tokens): token grids that are not multiples of 32, batch 2, long captions
    (64, 64, 1, 7),
    (48, 80, 2, 40),
    (96, 112, 1, 33),
]


@pytest.mark.parametrize("layout", ["official", "comfy_prefixed"])
def test_comfy_model_matches_official_convention(model_mod, tiny, layout):
    reference, sd = tiny
    if layout == "comfy_prefixed":
        sd = {f"model.diffusion_model.{k}": v for k, v in official_to_comfy(sd).items()}
    patcher = model_mod.load_l2p_state_dict(dict(sd), dtype=torch.float32)
    assert isinstance(patcher.model, model_mod.L2PModel)
    dit = patcher.model.diffusion_model
    gen = torch.Generator().manual_seed(0)
    for h, w, b, n_tokens in CASES:
        x = torch.randn(b, 3, h, w, generator=gen)
        sigma = torch.rand(b, generator=gen)
        cap = torch.randn(b, n_tokens, 64, generator=gen)
        with torch.no_grad():
            want = reference(x, sigma, list(cap))
            got = dit(x, sigma, cap, n_tokens)
        assert got.shape == x.shape
        assert rel_err(got, want) < 1e-4, (h, w, b)


def test_denoised_is_x0_under_comfy_flow_convention(model_mod, tiny):
    """ComfyUI's CONST sampling turns the velocity into x0 = x - sigma * v; check it against the reference."""
    reference, sd = tiny
    patcher = model_mod.load_l2p_state_dict(dict(sd), dtype=torch.float32)
    x = torch.randn(1, 3, 64, 48)
    sigma = torch.tensor([0.6])
    cap = torch.randn(1, 9, 64)
    with torch.no_grad():
        denoised = patcher.model.apply_model(x, sigma, c_crossattn=cap, num_tokens=9)
        v = reference(x, sigma, [cap[0]])
    assert rel_err(denoised, x - sigma.view(-1, 1, 1, 1) * v) < 1e-4


@pytest.mark.parametrize("dtype,tolerance", [(torch.bfloat16, 0.05), (torch.float8_e4m3fn, 0.2)])
def test_reduced_precision_storage_stays_close(model_mod, tiny, dtype, tolerance):
    reference, sd = tiny
    patcher = model_mod.load_l2p_state_dict(dict(sd), dtype=dtype)
    dit = patcher.model.diffusion_model
    assert dit.layers[0].attention.qkv.weight.dtype == dtype
    assert dit.local_decoder.dec1[0].weight.dtype == dtype
    x, sigma, cap = torch.randn(1, 3, 64, 64), torch.tensor([0.5]), torch.randn(1, 8, 64)
    with torch.no_grad():
        want = reference(x, sigma, [cap[0]])
        got = patcher.model.apply_model(x, sigma, c_crossattn=cap, num_tokens=8)
    assert rel_err(got, x - 0.5 * want) < tolerance
