"""Each trainable-set policy trains exactly what it names, at tiny and at real Z-Image size (meta device)."""

from __future__ import annotations

import pytest
import torch

from l2p.format.layouts import official_to_comfy
from l2p.head import build_head
from l2p.pixel_dit import official_state_dict
from l2p.policies import parse_ranges, report, trainable_names
from l2p.tiny import official_trunk

REAL = {"dim": 3840, "n_layers": 30, "n_refiner_layers": 2, "n_heads": 30, "cap_feat_dim": 2560, "patch_size": 16}


@pytest.fixture(scope="module")
def real():
    trunk = official_trunk(**REAL, device="meta")
    with torch.device("meta"):
        head = build_head("1k", 3840)
    return trunk, head, official_state_dict(trunk, head)


def count(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def test_paper_policy_is_embedder_noise_refiner_first_last_block_and_head(real):
    """Real Z-Image size: paper trains exactly the pixel embedder, both noise refiners, blocks 0 and 29 and the
    head; the context refiner, the t/cap embedders and the pad tokens stay frozen."""
    trunk, head, sd = real
    names = trainable_names(sd, "paper", 30)
    trained_modules = (trunk.all_x_embedder, trunk.noise_refiner, trunk.layers[0], trunk.layers[29])
    expected_names = {f"{prefix}.{n}" for prefix, m in zip(
        ("all_x_embedder", "noise_refiner", "layers.0", "layers.29"), trained_modules, strict=True)
        for n, _ in m.named_parameters()} | {f"local_decoder.{n}" for n, _ in head.named_parameters()}
    assert names == expected_names
    assert {n.split(".")[0] for n in set(sd) - names} == {
        "layers", "context_refiner", "t_embedder", "cap_embedder", "x_pad_token", "cap_pad_token"}
    assert {n.split(".")[1] for n in names if n.startswith(("layers.", "noise_refiner."))} == {"0", "1", "29"}
    assert {n.split(".")[1] for n in names if n.startswith("noise_refiner.")} == {"0", "1"}
    rep = report({k: v.shape for k, v in sd.items()}, "paper", 30)
    assert rep.trainable == count(*trained_modules, head) == 736_679_427
    assert rep.total == 6_166_464_515 and f"{rep.fraction:.1%}" == "11.9%"  # README "Policies"


def test_paper_policy_trains_the_same_weights_in_the_comfy_layout(real):
    _, _, sd = real
    comfy = official_to_comfy(sd)
    names = trainable_names(comfy, "paper", 30)
    assert {n.split(".")[0] for n in names} == {"x_embedder", "noise_refiner", "layers", "local_decoder"}
    assert {n.split(".")[1] for n in names if n.startswith("noise_refiner.")} == {"0", "1"}
    assert {n.split(".")[1] for n in names if n.startswith("layers.")} == {"0", "29"}
    shapes = {k: v.shape for k, v in comfy.items()}
    official = report({k: v.shape for k, v in sd.items()}, "paper", 30)
    assert report(shapes, "paper", 30).trainable == official.trainable


def test_official_policy_freezes_exactly_the_middle_20_blocks(real):
    trunk, head, sd = real
    names = trainable_names(sd, "official", 30)
    frozen = set(sd) - names
    assert {int(n.split(".")[1]) for n in frozen} == set(range(5, 25))
    assert all(n.startswith("layers.") for n in frozen)
    expected = count(trunk, head) - count(*trunk.layers[5:25]) - count(trunk.all_final_layer)
    rep = report({k: v.shape for k, v in sd.items()}, "official", 30)
    assert rep.trainable == expected and rep.total == count(trunk, head) - count(trunk.all_final_layer)
    assert 0.40 < rep.fraction < 0.43  # ~2.55B of 6.2B (l2p-technical.md §1.6)


def test_custom_ranges():
    assert parse_ranges("0-2, 27-29", 30) == {0, 1, 2, 27, 28, 29}
    assert parse_ranges("-1", 30) == {29}
    with pytest.raises(ValueError, match="outside 0-29"):
        parse_ranges("28-31", 30)
    with pytest.raises(ValueError, match="bad block range"):
        parse_ranges("a-b", 30)
    with pytest.raises(ValueError, match="unknown policy"):
        trainable_names([], "everything", 30)
