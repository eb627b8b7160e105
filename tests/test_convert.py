"""Latent source -> L2P initialisation: shared tensors copied bit for bit, new parts added, loads and runs."""

from __future__ import annotations

import importlib

import pytest
import torch

from harness.inprocess import import_pack
from l2p.convert import latent_to_l2p
from l2p.format.layouts import L2PFormatError, check_l2p, infer_config, official_to_comfy
from l2p.tiny import TINY_L2P, official_trunk, randomize_


@pytest.fixture(scope="module")
def latent_source() -> dict[str, torch.Tensor]:
    cfg = {**TINY_L2P, "patch_size": 2}
    from diffusers import ZImageTransformer2DModel

    trunk = ZImageTransformer2DModel(all_patch_size=(2,), in_channels=16, dim=cfg["dim"], n_layers=cfg["n_layers"],
                                     n_refiner_layers=1, n_heads=cfg["n_heads"], n_kv_heads=cfg["n_heads"],
                                     cap_feat_dim=cfg["cap_feat_dim"], axes_dims=[16, 24, 24])
    return dict(randomize_(trunk, seed=4).state_dict())


@pytest.mark.parametrize("layout", ["official", "comfy"])
def test_conversion_copies_what_fits_and_adds_pixel_parts(latent_source, layout):
    source = latent_source
    if layout == "comfy":
        renamed = {("x_embedder." + k.split(".")[-1] if k.startswith("all_x_embedder.") else k): v
                   for k, v in source.items() if not k.startswith("all_final_layer.")}
        source = {f"model.diffusion_model.{k}": v for k, v in official_to_comfy(renamed).items()}
    out = latent_to_l2p(source, patch_size=16, seed=1)
    check_l2p(out)
    cfg = infer_config(out)
    assert (cfg.patch_size, cfg.dim, cfg.n_layers) == (16, 256, 2)
    assert out["all_x_embedder.16-1.weight"].shape == (256, 768)
    assert not any(k.startswith(("all_final_layer.", "all_x_embedder.2-1")) for k in out)
    copied = [k for k in latent_source if not k.startswith(("all_final_layer.", "all_x_embedder."))]
    assert copied and all(torch.equal(out[k], latent_source[k]) for k in copied)
    again = latent_to_l2p(source, patch_size=16, seed=1)
    assert all(torch.equal(again[k], out[k]) for k in out)  # seeded init: reproducible


def test_converted_model_loads_and_predicts(latent_source):
    model_mod = importlib.import_module(import_pack().__name__ + ".nodes.comfy_core")
    patcher = model_mod.load_l2p_state_dict(latent_to_l2p(latent_source), dtype=torch.float32)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        out = patcher.model.apply_model(x, torch.tensor([0.7]), c_crossattn=torch.randn(1, 5, 64), num_tokens=5)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_refuses_l2p_and_foreign_sources(latent_source):
    trunk = official_trunk(**TINY_L2P)
    l2p_like = {**trunk.state_dict(), "local_decoder.out_conv.weight": torch.zeros(3, 64, 1, 1)}
    with pytest.raises(L2PFormatError, match="already an L2P model"):
        latent_to_l2p(l2p_like)
    with pytest.raises(L2PFormatError, match="supported sources are Z-Image"):
        latent_to_l2p({"double_blocks.0.img_attn.qkv.weight": torch.zeros(3, 1)})
