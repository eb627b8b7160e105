"""1K -> 4K/8K/10K conversion: the resized embedder keeps its response; the head inherits what fits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from l2p.format.layouts import check_l2p, infer_config, official_to_comfy
from l2p.head import build_head
from l2p.hr_convert import inherited_head_tensors, l2p_to_variant, resize_patch_embedder
from l2p.init_fit import patchify
from l2p.pixel_dit import official_state_dict
from l2p.tiny import tiny_l2p


@pytest.mark.parametrize("q", [64, 128, 160])
def test_resized_embedder_embeds_an_upsampled_patch_like_the_original(q):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(32, 16 * 16 * 3, generator=gen)
    patches = torch.randn(6, 3, 16, 16, generator=gen).double()  # each patch resized on its own
    big = F.interpolate(patches, size=(q, q), mode="bilinear", align_corners=False)
    old = patchify(patches, 16) @ w.double().T
    new = patchify(big, q) @ resize_patch_embedder(w.double(), 16, q).T
    assert torch.allclose(new, old, atol=1e-8)


@pytest.mark.parametrize("variant,layout", [("4k", "official"), ("8k", "comfy"), ("10k", "official")])
def test_1k_model_becomes_a_valid_high_resolution_checkpoint(variant, layout):
    sd = official_state_dict(*tiny_l2p(seed=2))
    if layout == "comfy":
        sd = official_to_comfy(sd)
    out = l2p_to_variant(sd, variant, seed=1)
    check_l2p(out)
    cfg = infer_config(out)
    assert cfg.head_variant == variant and cfg.patch_size == {"4k": 64, "8k": 128, "10k": 160}[variant]
    inherited = inherited_head_tensors(sd, variant)
    assert "bottleneck.0.weight" in inherited or variant == "10k"  # 10K's bottleneck is (256 + D) wide
    assert "dec2.0.weight" in inherited
    for name in inherited:
        assert torch.equal(out[f"local_decoder.{name}"], sd[f"local_decoder.{name}"])
    fresh = build_head(variant, 256).state_dict()
    assert sorted(k[len("local_decoder."):] for k in out if k.startswith("local_decoder.")) == sorted(fresh)
    trunk = [k for k in sd if not k.startswith(("local_decoder.", "all_x_embedder.", "x_embedder."))]
    assert all(torch.equal(out[k], sd[k]) for k in trunk)


def test_refusals():
    sd = official_state_dict(*tiny_l2p(seed=2))
    with pytest.raises(ValueError, match="already has the 1k head"):
        l2p_to_variant(sd, "1k")
    with pytest.raises(ValueError, match="unknown head"):
        l2p_to_variant(sd, "16k")
