"""The real 6B architecture, built on the meta device (no memory): the official 545-tensor layout maps key
for key onto ComfyUI's trunk + our head, nothing missing or unexpected."""

from __future__ import annotations

import importlib

import torch

from harness.inprocess import import_pack
from l2p.format.layouts import comfy_to_official, infer_config, official_to_comfy
from l2p.head import build_head
from l2p.pixel_dit import official_state_dict
from l2p.tiny import official_trunk

REAL = {"dim": 3840, "n_layers": 30, "n_refiner_layers": 2, "n_heads": 30, "cap_feat_dim": 2560, "patch_size": 16}


def real_official_layout() -> dict[str, torch.Tensor]:
    trunk = official_trunk(**REAL, device="meta")
    with torch.device("meta"):
        head = build_head("1k", REAL["dim"])
    return official_state_dict(trunk, head)


def test_official_layout_has_545_tensors_with_known_shapes():
    sd = real_official_layout()
    assert len(sd) == 545  # l2p-technical.md §1.4: 30x15 + 2x15 + 2x13 + 11 + 28
    assert sd["all_x_embedder.16-1.weight"].shape == (3840, 768)
    assert sd["layers.10.attention.to_q.weight"].shape == (3840, 3840)
    assert sd["layers.0.feed_forward.w1.weight"].shape == (10240, 3840)
    assert sd["local_decoder.bottleneck.0.weight"].shape == (512, 4352, 1, 1)
    assert sd["local_decoder.dec4.0.weight"].shape == (256, 1024, 3, 3)


def test_real_size_maps_key_for_key_onto_comfy_trunk():
    pack = import_pack()
    model_mod = importlib.import_module(pack.__name__ + ".nodes.comfy_core")
    official = real_official_layout()
    cfg = infer_config(official)
    assert (cfg.dim, cfg.n_heads, cfg.n_layers, cfg.n_noise_refiner, cfg.cap_feat_dim) == (3840, 30, 30, 2, 2560)
    assert (cfg.ffn_hidden_dim, cfg.t_embed_hidden, cfg.adaln_dim, cfg.axes_dims) == (10240, 1024, 256, (32, 48, 48))
    import comfy.ops

    with torch.device("meta"):
        dit = model_mod.NextDiTL2P(**model_mod.unet_config_for(cfg), operations=comfy.ops.disable_weight_init)
    ours = {k: v.shape for k, v in dit.state_dict().items()}
    mapped = {k: v.shape for k, v in official_to_comfy(official).items()}
    assert sorted(set(mapped) - set(ours)) == []  # nothing unexpected
    assert sorted(set(ours) - set(mapped)) == []  # nothing missing
    assert all(ours[k] == mapped[k] for k in ours)
    assert ours["layers.0.attention.qkv.weight"] == (11520, 3840)
    back = comfy_to_official(dit.state_dict(), patch_size=16)
    assert sorted(back) == sorted(official)


def real_latent_zimage(layout: str) -> dict[str, torch.Tensor]:
    """The 6B latent Z-Image-Turbo (patch 2 over 16 channels, final layer) on the meta device."""
    from diffusers import ZImageTransformer2DModel

    with torch.device("meta"):
        dit = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=3840,
                                       n_layers=30, n_refiner_layers=2, n_heads=30, n_kv_heads=30, cap_feat_dim=2560,
                                       axes_dims=[32, 48, 48])
    sd = dict(dit.state_dict())
    if layout == "comfy":
        sd = {f"model.diffusion_model.{k}": v for k, v in official_to_comfy(sd).items()}
    return sd


def test_converting_real_z_image_gives_exactly_the_official_l2p_layout():
    """Planning on meta tensors: both source layouts convert to the released 545-tensor layout, shape for shape."""
    from l2p.convert import plan_conversion
    from l2p.format.tensor_io import DictSource

    official = real_official_layout()
    for layout in ("official", "comfy"):
        conv = plan_conversion(DictSource(real_latent_zimage(layout)), source_hash="meta")
        planned = {p.name: tuple(p.meta.shape) for p in conv.plan}
        assert planned == {k: tuple(v.shape) for k, v in official.items()}, layout
        assert conv.metadata["l2p.policy_report"].startswith("official: 2,5")  # ~2.55B trainable
