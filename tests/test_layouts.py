"""Unit tests of l2p/: key maps both ways, configuration from shapes, head shapes, refusals."""

from __future__ import annotations

import pytest
import torch

from l2p.arch import LUMINA2, ZIMAGE
from l2p.format.layouts import (
    COMFY,
    OFFICIAL,
    L2PFormatError,
    check_l2p,
    comfy_to_official,
    detect_layout,
    infer_config,
    official_to_comfy,
    strip_prefix,
    to_comfy_layout,
)
from l2p.head import DetailerHead1K, build_head, detect_head_variant
from l2p.pixel_dit import official_state_dict
from l2p.tiny import tiny_l2p


@pytest.fixture(scope="module")
def official() -> dict[str, torch.Tensor]:
    trunk, head = tiny_l2p(seed=3)
    return official_state_dict(trunk, head)


def test_official_to_comfy_fuses_qkv_in_q_k_v_order(official):
    comfy = official_to_comfy(official)
    assert detect_layout(official) == OFFICIAL and detect_layout(comfy) == COMFY
    qkv = comfy["layers.1.attention.qkv.weight"]
    dim = official["layers.1.attention.to_q.weight"].shape[0]
    assert torch.equal(qkv[:dim], official["layers.1.attention.to_q.weight"])
    assert torch.equal(qkv[dim:2 * dim], official["layers.1.attention.to_k.weight"])
    assert torch.equal(qkv[2 * dim:], official["layers.1.attention.to_v.weight"])
    assert torch.equal(comfy["x_embedder.weight"], official["all_x_embedder.16-1.weight"])
    assert torch.equal(comfy["context_refiner.0.attention.out.weight"],
                       official["context_refiner.0.attention.to_out.0.weight"])
    assert torch.equal(comfy["noise_refiner.0.attention.q_norm.weight"],
                       official["noise_refiner.0.attention.norm_q.weight"])
    # 4 tensors per block become 1 (q, k, v -> qkv): 4 blocks here
    assert len(comfy) == len(official) - 2 * 4


def test_round_trip_is_exact_both_ways(official):
    back = comfy_to_official(official_to_comfy(official))
    assert back.keys() == official.keys()
    assert all(torch.equal(back[k], official[k]) for k in official)
    comfy = official_to_comfy(official)
    again = official_to_comfy(comfy_to_official(comfy))
    assert again.keys() == comfy.keys() and all(torch.equal(again[k], comfy[k]) for k in comfy)


def test_prefix_is_stripped_and_layouts_agree(official):
    packed = {f"model.diffusion_model.{k}": v for k, v in official_to_comfy(official).items()}
    assert strip_prefix(packed).keys() == official_to_comfy(official).keys()
    a, b = to_comfy_layout(official), to_comfy_layout(packed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_config_from_shapes_same_in_both_layouts(official):
    cfg = infer_config(official)
    assert cfg == infer_config(official_to_comfy(official))
    assert (cfg.dim, cfg.n_heads, cfg.n_layers, cfg.n_noise_refiner, cfg.n_context_refiner) == (256, 4, 2, 1, 1)
    assert (cfg.cap_feat_dim, cfg.patch_size, cfg.head_variant) == (64, 16, "1k")
    assert (cfg.ffn_hidden_dim, cfg.t_embed_hidden, cfg.adaln_dim) == (int(256 / 3 * 8), 1024, 256)
    assert cfg.axes_dims == (16, 24, 24)


def test_config_follows_other_sizes():
    trunk, head = tiny_l2p(seed=0, dim=384, n_heads=6, n_layers=3, n_refiner_layers=2, cap_feat_dim=96)
    cfg = infer_config(official_state_dict(trunk, head))
    assert (cfg.dim, cfg.n_heads, cfg.n_layers, cfg.n_noise_refiner, cfg.cap_feat_dim) == (384, 6, 3, 2, 96)


def test_axes_dims_match_comfyui_for_both_nextdit_sources():
    assert ZIMAGE.axes_dims(128) == (32, 48, 48)  # ComfyUI model_detection: Z-Image
    assert LUMINA2.axes_dims(96) == (32, 32, 32)  # ComfyUI model_detection: Lumina 2
    with pytest.raises(L2PFormatError, match="cannot be split"):
        ZIMAGE.axes_dims(72)


def test_head_shapes_and_parameter_count():
    head = DetailerHead1K(feature_dim=3840)
    assert sum(p.numel() for p in head.parameters()) == 10_085_123  # l2p-technical.md §1.3
    assert len(head.state_dict()) == 28 and sorted(head.state_dict()) == sorted(DetailerHead1K.expected_keys())
    small = build_head("1k", 32)
    x, feats = torch.randn(2, 3, 48, 80), torch.randn(2, 32, 3, 5)
    assert small(x, feats).shape == (2, 3, 48, 80)
    # a coarser feature map is upsampled into the bottleneck (official behaviour)
    assert small(x, torch.randn(2, 32, 1, 1)).shape == (2, 3, 48, 80)
    assert detect_head_variant([f"local_decoder.{k}" for k in DetailerHead1K.expected_keys()]) == "1k"


def test_latent_z_image_is_refused_with_one_line(official):
    latent = {k: v for k, v in official.items() if not k.startswith("local_decoder.")}
    latent["all_final_layer.2-1.linear.weight"] = torch.zeros(64, 256)
    with pytest.raises(L2PFormatError, match="latent Z-Image") as e:
        check_l2p(latent)
    assert "\n" not in str(e.value)


def test_missing_head_and_partial_head_are_refused(official):
    no_head = {k: v for k, v in official.items() if not k.startswith("local_decoder.")}
    with pytest.raises(L2PFormatError, match="local_decoder.* is missing"):
        check_l2p(no_head)
    partial = {k: v for k, v in official.items() if not k.startswith("local_decoder.dec2")}
    with pytest.raises(L2PFormatError, match="2 tensors of local_decoder missing"):
        infer_config(partial)


def test_other_models_are_refused():
    with pytest.raises(L2PFormatError, match="not a Z-Image/NextDiT"):
        check_l2p({"down_blocks.0.weight": torch.zeros(1)})


def test_incomplete_qkv_is_refused(official):
    broken = {k: v for k, v in official.items() if k != "layers.0.attention.to_v.weight"}
    with pytest.raises(L2PFormatError, match="only \\['k', 'q'\\] of q/k/v"):
        official_to_comfy(broken)
