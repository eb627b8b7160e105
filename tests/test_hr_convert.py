"""1K -> 4K/8K/10K conversion: the resized embedder keeps its response; the head inherits what fits."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from l2p.format.layouts import check_l2p, infer_config, official_to_comfy
from l2p.head import build_head, head_width_div
from l2p.hr_convert import inherited_head_tensors, l2p_to_variant, resize_patch_embedder
from l2p.init_fit import patchify
from l2p.pixel_dit import official_state_dict
from l2p.tiny import randomize_, tiny_l2p

# What a 1K head hands to each deeper head (same feature dim, same width divisor), written out: every tensor
# whose name and shape fit. 4K/8K: enc2-enc4, bottleneck, up4-up1, dec4-dec2, plus the biases of enc1 (3->64 in
# 1K, 32->64 in 4K) and out_conv (3 outputs); dec1 (->32) and out_conv's weight (16 inputs) are narrower. 10K
# has no enc4/up4/dec4, and its bottleneck takes 256 + D channels and its up3 512, so there only their biases fit.
INHERITED_4K_8K = [
    "bottleneck.0.bias", "bottleneck.0.weight", "dec2.0.bias", "dec2.0.weight", "dec3.0.bias", "dec3.0.weight",
    "dec4.0.bias", "dec4.0.weight", "enc1.0.bias", "enc2.0.bias", "enc2.0.weight", "enc3.0.bias",
    "enc3.0.weight", "enc4.0.bias", "enc4.0.weight", "out_conv.bias", "up1.1.bias", "up1.1.weight",
    "up2.1.bias", "up2.1.weight", "up3.1.bias", "up3.1.weight", "up4.1.bias", "up4.1.weight",
]
INHERITED = {
    "4k": INHERITED_4K_8K,
    "8k": INHERITED_4K_8K,
    "10k": [
        "bottleneck.0.bias", "dec2.0.bias", "dec2.0.weight", "dec3.0.bias", "dec3.0.weight", "enc1.0.bias",
        "enc2.0.bias", "enc2.0.weight", "enc3.0.bias", "enc3.0.weight", "out_conv.bias", "up1.1.bias",
        "up1.1.weight", "up2.1.bias", "up2.1.weight", "up3.1.bias",
    ],
}


@functools.cache
def one_k(width_div: int = 1) -> dict[str, torch.Tensor]:
    """A tiny 1K L2P model (official layout) whose head is ``width_div`` times narrower than the official one."""
    trunk, head = tiny_l2p(seed=2)
    if width_div != 1:
        head = randomize_(build_head("1k", 256, width_div=width_div), 3)
    return official_state_dict(trunk, head)


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


@pytest.mark.parametrize("width_div", [1, 4], ids=["official-width", "4x-narrower"])
@pytest.mark.parametrize("variant", ["4k", "8k", "10k"])
def test_the_deeper_head_inherits_every_tensor_whose_name_and_shape_fit(variant, width_div):
    """Issue 17: a 4x narrower 1K head (the replication world's) inherited only out_conv, because the new head
    was built at the official width whatever the source's; it is now as wide as the source's head."""
    sd = one_k(width_div)
    for name, source in (("official", sd), ("comfy", official_to_comfy(sd)),
                         ("prefixed", {f"model.diffusion_model.{k}": v for k, v in sd.items()})):
        assert inherited_head_tensors(source, variant) == INHERITED[variant], name
    if width_div == 1:
        return  # the official width's conversion: test_1k_model_becomes_a_valid_high_resolution_checkpoint
    out = l2p_to_variant(sd, variant, seed=1)
    assert head_width_div(out) == width_div and infer_config(out).head_variant == variant
    check_l2p(out)
    for name in INHERITED[variant]:
        assert out[f"local_decoder.{name}"] is sd[f"local_decoder.{name}"], name
    fresh = build_head(variant, 256, width_div=width_div).state_dict()
    new = [k for k in fresh if k not in INHERITED[variant]]
    assert new and all(out[f"local_decoder.{k}"].shape == fresh[k].shape for k in new)


def test_an_explicit_width_divisor_is_honoured():
    """A head of another width than the source's can be asked for; then little fits (here: out_conv only,
    whose 16 input channels the narrow 1K head and the official 4K head share)."""
    narrow = one_k(4)
    wide = l2p_to_variant(narrow, "4k", width_div=1)
    assert head_width_div(wide) == 1
    assert inherited_head_tensors(narrow, "4k", width_div=1) == ["out_conv.bias", "out_conv.weight"]
    eight = l2p_to_variant(narrow, "4k", width_div=8)
    assert head_width_div(eight) == 8 and eight["local_decoder.enc0.0.weight"].shape[0] == 16 // 8
    assert inherited_head_tensors(narrow, "4k", width_div=8) == ["out_conv.bias"]
    with pytest.raises(ValueError, match="does not divide"):
        l2p_to_variant(narrow, "4k", width_div=3)


def test_refusals():
    sd = official_state_dict(*tiny_l2p(seed=2))
    with pytest.raises(ValueError, match="already has the 1k head"):
        l2p_to_variant(sd, "1k")
    with pytest.raises(ValueError, match="unknown head"):
        l2p_to_variant(sd, "16k")
