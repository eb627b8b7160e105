"""Noise shift (manual, resolution-aware) and image sizes: formulas, nodes in-process, one-line refusals."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from harness.inprocess import import_pack
from l2p.schedule import auto_shift, native_pixels, sampling_sigmas, shift_sigma
from l2p.sizes import PRESETS, plan_size


def test_auto_shift_is_monotone_and_equals_manual_at_native_size():
    assert auto_shift(3.0, 1024, 1024, 16) == pytest.approx(3.0)
    assert auto_shift(3.0, 4096, 4096, 64) == pytest.approx(3.0)
    sizes = [(512, 512), (1024, 768), (1024, 1024), (2048, 2048), (3840, 2160), (4096, 4096), (8192, 8192)]
    values = [auto_shift(3.0, w, h, 16) for w, h in sizes]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert auto_shift(3.0, 2048, 2048, 16) == pytest.approx(6.0)  # 4x the pixels -> 2x the shift


def test_shifts_compose_by_multiplication_so_auto_is_a_second_shift():
    for s in (0.1, 0.5, 0.9):
        assert shift_sigma(shift_sigma(s, 3.0), 2.0) == pytest.approx(shift_sigma(s, 6.0))


def test_official_sigmas_at_shift_3():
    sig = sampling_sigmas(30, 3.0)
    assert sig[0] == 1.0 and sig[-1] == 0.0 and len(sig) == 31
    assert sig[15] == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))
    assert native_pixels(16) == 1024**2 and native_pixels(160) == 10240**2


def test_sizes_snap_or_reject_per_patch_and_head():
    assert plan_size(3840, 2160, 64, "1k", fit="snap up").tokens == (60, 34)  # the official pipeline's rounding
    assert plan_size(1010, 1010, 16, "1k", fit="snap nearest").width == 1008
    assert plan_size(1010, 1010, 16, "1k", fit="snap up").width == 1024
    with pytest.raises(ValueError, match=r"^width 100 is not a multiple of 16 .*use 96 or 112"):
        plan_size(100, 64, 16, "1k")
    assert "64x64 = 4096 tokens" in plan_size(1024, 1024, 16, "1k").describe()
    assert all(w % 16 == 0 and h % 16 == 0 for w, h in PRESETS.values())


@pytest.fixture(scope="module")
def nodes():
    return importlib.import_module(import_pack().__name__ + ".nodes.sampling")


@pytest.fixture(scope="module")
def model():
    from l2p.pixel_dit import official_state_dict
    from l2p.tiny import tiny_l2p

    model_mod = importlib.import_module(import_pack().__name__ + ".nodes.comfy_core")
    return model_mod.load_l2p_state_dict(official_state_dict(*tiny_l2p(seed=0)), dtype=torch.float32)


def test_noise_shift_node_patches_a_clone(nodes, model):
    before = model.get_model_object("model_sampling").shift
    latent = {"samples": torch.zeros(1, 3, 2048, 2048)}
    patched, info = nodes.L2PNoiseShift.execute(model, "auto", 3.0, latent).args
    assert patched.get_model_object("model_sampling").shift == pytest.approx(6.0)
    assert model.get_model_object("model_sampling").shift == before  # the input is not mutated
    assert "shift 6" in info and "sqrt(2048x2048 / 1024x1024)" in info
    manual, _ = nodes.L2PNoiseShift.execute(model, "manual", 4.5).args
    assert manual.get_model_object("model_sampling").shift == pytest.approx(4.5)
    sigmas = manual.get_model_object("model_sampling").sigma(torch.tensor([500.0]))
    assert math.isfinite(float(sigmas))
    with pytest.raises(ValueError, match="auto needs the latent"):
        nodes.L2PNoiseShift.execute(model, "auto", 3.0)


def test_empty_image_presets_and_info(nodes, model):
    latent, info = nodes.L2PEmptyImage.execute(64, 64, 1, model, "3840x2160 (4K UHD)", "snap up").args
    assert latent["samples"].shape == (1, 3, 2160, 3840) and "240x135 = 32400 tokens" in info
    latent, _ = nodes.L2PEmptyImage.execute(100, 64, 2, None, fit="snap up").args
    assert latent["samples"].shape == (2, 3, 64, 112)
