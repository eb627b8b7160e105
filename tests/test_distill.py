"""The aligned conversion (``init distill``): its noise map, where it aligns, that it trains only the new interface
and the head, that it beats the plain fitted conversion, and the CLI on a ComfyUI VAE file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import safetensors
import torch
import torch.nn.functional as F

from l2p.convert import latent_to_l2p
from l2p.distill import (
    DistillConfig,
    align_block,
    distilled_conversion,
    image_batches,
    pixel_noise,
    unpatchify,
    zero_captions,
)
from l2p.format.layouts import infer_config
from l2p.format.tensor_io import DictSource
from l2p.init_fit import fit_images, patch_pairs, patchify
from l2p.pixel_dit import pixel_dit_from_official
from l2p.tiny import reference_vae, tiny_latent_zimage
from l2p.vae_io import latent_encoder, load_vae
from tests.test_convert_nodes import write_diffusers_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAP_DIM, SIZE, WIDTH_DIV = 64, 64, 4
STEPS = DistillConfig(align_steps=40, head_steps=40, lr=1e-3, head_lr=1e-3)


def test_unpatchify_inverts_patchify():
    x = torch.randn(2, 3, 32, 48)
    assert torch.equal(unpatchify(patchify(x, 16), tuple(x.shape), 16), x)


def test_pixel_noise_carries_the_latent_noise_and_is_standard_normal():
    m = torch.linalg.qr(torch.randn(768, 64))[0].T  # orthonormal rows, [latent width, pixel width]
    eps = torch.randn(256, 16, 8, 8)
    gen = torch.Generator().manual_seed(0)
    x = pixel_noise(eps, m, (256, 3, 64, 64), 16, 2, gen)
    assert torch.allclose(patchify(x, 16) @ m.T, patchify(eps, 2), atol=1e-5)
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    cov = torch.cov(patchify(x, 16).T)  # every pixel of a patch independent, variance 1
    assert (cov - torch.eye(768)).abs().max() < 0.12  # 4096 samples: sampling error ~0.016


def test_alignment_stops_at_the_first_frozen_block():
    def names(blocks):
        return {f"layers.{i}.w" for i in blocks} | {"noise_refiner.0.w"}

    assert align_block(names([0, 29]), 30) == 1
    assert align_block(names([0, 1, 2, 3, 4, 25, 26, 27, 28, 29]), 30) == 5
    assert align_block(names([29]), 30) == 0
    with pytest.raises(ValueError, match="trains every main block"):
        align_block(names(range(4)), 4)


@pytest.fixture(scope="module")
def world():
    torch.manual_seed(0)
    source = tiny_latent_zimage(seed=1, n_layers=4)
    untouched = {k: v.clone() for k, v in source.items()}
    vae = reference_vae((32, 32, 64, 64), latent_channels=16).train(False)
    encode = latent_encoder(vae, 0.5, 0.1)
    pairs = patch_pairs(fit_images(8, SIZE, 0), encode, 16, 2, 8)
    sd, meta, report = distilled_conversion(DictSource(source), encode, image_batches(None, SIZE, 2, CAP_DIM, 0),
                                            pairs, policy="paper", head_width_div=WIDTH_DIV, cfg=STEPS)
    assert all(torch.equal(source[k], untouched[k]) for k in source), "distill changed the source's tensors"
    plain = latent_to_l2p(source, init="vae_orth", fit_pairs=pairs, policy="paper", head_width_div=WIDTH_DIV)
    return {"source": source, "vae": vae, "encode": encode, "sd": sd, "meta": meta, "report": report,
            "plain": plain}


def test_distill_trains_only_the_interface_and_the_head(world):
    sd, plain, report = world["sd"], world["plain"], world["report"]
    assert sd.keys() == plain.keys()
    assert report.align_block == 1  # paper trains block 0 and the last: block 1 is the first frozen one
    assert report.aligned == ["all_x_embedder.16-1", "layers.0", "noise_refiner.0"]
    trained = (*report.aligned, "local_decoder")
    changed = {k for k in sd if not torch.equal(sd[k], plain[k])}
    assert changed and all(k.startswith(trained) for k in changed), sorted(changed)[:5]
    assert {k.split(".")[0] for k in changed} == {"all_x_embedder", "layers", "noise_refiner", "local_decoder"}
    assert all(sd[k].dtype == plain[k].dtype for k in sd)


def test_distill_records_what_it_did(world):
    meta = world["meta"]
    assert meta["l2p.init"] == "distill" and meta["l2p.policy"] == "paper"
    rec = json.loads(meta["l2p.distill"])
    assert rec["align_block"] == 1 and rec["config"]["align_steps"] == STEPS.align_steps
    assert rec["images"] == 2 * (STEPS.align_steps + STEPS.head_steps)
    # each step draws new images and noise: the first steps' losses estimate the error before training
    assert rec["align_loss"][1] < 0.8 * rec["align_loss"][0], rec
    assert rec["head_loss"][1] < rec["head_loss"][0], rec


def flow_loss(sd: dict, images: torch.Tensor, seed: int) -> float:
    """The flow-matching loss of an official-layout model on ``images`` at fixed sigmas and noise."""
    model = pixel_dit_from_official(sd, infer_config(sd)).train(False)
    gen = torch.Generator().manual_seed(seed)
    sigma = torch.rand(len(images), generator=gen)
    noise = torch.randn(images.shape, generator=gen)
    s = sigma.view(-1, 1, 1, 1)
    cap = zero_captions(len(images), CAP_DIM)
    with torch.no_grad():
        return F.mse_loss(model((1 - s) * images + s * noise, sigma, cap), noise - images).item()


def test_the_distilled_model_predicts_better_than_the_plain_conversion(world):
    held_out = fit_images(16, SIZE, seed=999)
    distilled, plain = flow_loss(world["sd"], held_out, 1), flow_loss(world["plain"], held_out, 1)
    assert distilled < 0.9 * plain, (distilled, plain)


def test_distill_refuses_a_patch_that_is_not_one_latent_token(world):
    with pytest.raises(ValueError, match="one pixel patch per latent token"):
        distilled_conversion(DictSource(world["source"]), world["encode"], iter(()), (None, None), patch_size=32)


def test_a_latent_patch_1_source_distills_at_pixel_patch_8_with_the_0_5k_head():
    """The 8x8-token world: a source with latent patch 1 reads as one; its latent token is 8 pixels, so distill
    runs at patch 8 (16 is refused, naming 8) and the 0.5K head decodes the token grid at its own resolution."""
    from l2p.head import head_for_patch

    source = tiny_latent_zimage(seed=1, n_layers=4, patch_size=1)
    vae = reference_vae((32, 32, 64, 64), latent_channels=16).train(False)
    encode = latent_encoder(vae, 0.5, 0.1)
    with pytest.raises(ValueError, match=r"one pixel patch per latent token \(patch 8 "):
        distilled_conversion(DictSource(source), encode, iter(()), (None, None), patch_size=16)
    pairs = patch_pairs(fit_images(8, SIZE, 0), encode, 8, 1, 8)
    sd, meta, report = distilled_conversion(DictSource(source), encode, image_batches(None, SIZE, 2, CAP_DIM, 0),
                                            pairs, patch_size=8, policy="paper", head_variant=head_for_patch(8),
                                            head_width_div=WIDTH_DIV, cfg=STEPS)
    cfg = infer_config(sd)
    assert (cfg.patch_size, cfg.head_variant, meta["l2p.head_variant"]) == (8, "0.5k", "0.5k")
    assert report.align_loss[1] < 0.8 * report.align_loss[0], report
    model = pixel_dit_from_official(sd, cfg, "the distilled model").train(False)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        out = model(x, torch.tensor([0.5]), [torch.zeros(1, CAP_DIM)])
    assert out.shape == x.shape and torch.isfinite(out).all()


def comfy_vae_file(path: str) -> tuple[torch.nn.Module, dict]:
    """ComfyUI's own AutoencoderKL (random weights) saved as a models/vae file; (it, its config)."""
    from harness.inprocess import import_comfy

    import_comfy()
    from comfy.ldm.models.autoencoder import AutoencoderKL

    from l2p.format.tensor_io import save_safetensors_atomic
    from l2p.tiny import randomize_

    ddconfig = {"double_z": True, "z_channels": 16, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
                "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    vae = randomize_(AutoencoderKL(ddconfig=ddconfig, embed_dim=16), seed=3).train(False)
    save_safetensors_atomic({k: v.contiguous() for k, v in vae.state_dict().items()}, path)
    return vae, ddconfig


def test_a_comfyui_vae_file_encodes_as_comfyui_does(tmp_path):
    comfy_vae, _ = comfy_vae_file(str(tmp_path / "vae.safetensors"))
    ours, scale, shift = load_vae(str(tmp_path / "vae.safetensors"), 0.3611, 0.1159)
    x = fit_images(2, 64, seed=5)
    with torch.no_grad():
        expected = comfy_vae.encode(x)  # ComfyUI's: the posterior's mode
        got = ours.encode(x).latent_dist.mean
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    assert (scale, shift) == (0.3611, 0.1159)


def test_cli_distills_with_a_comfyui_vae_file_and_an_image_folder(tmp_path):
    from PIL import Image

    source = tiny_latent_zimage(seed=2, n_layers=4)
    write_diffusers_folder(tmp_path / "Z-Image-Tiny", source)
    comfy_vae_file(str(tmp_path / "vae.safetensors"))
    images = tmp_path / "images"
    images.mkdir()
    for i, im in enumerate(fit_images(3, 80, seed=7)):
        Image.fromarray(((im + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).save(images / f"{i}.png")
    out = tmp_path / "distilled.safetensors"
    done = subprocess.run([sys.executable, "-m", "l2p.convert", "--source", str(tmp_path / "Z-Image-Tiny"), "--out",
                           str(out), "--init", "distill", "--vae", str(tmp_path / "vae.safetensors"), "--policy",
                           "paper", "--head-width-div", "4", "--distill-images", str(images), "--distill-size",
                           "32", "--distill-steps", "3", "--distill-head-steps", "2", "--device", "cpu"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "distill align" in done.stderr and "distill head" in done.stderr  # progress bars
    assert "tokens aligned at block 1 by all_x_embedder.16-1, layers.0, noise_refiner.0" in done.stdout
    with safetensors.safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["l2p.init"] == "distill" and json.loads(meta["l2p.distill"])["images"] == 2 * 5
    assert str(tmp_path) not in json.dumps(meta)


def test_a_dataset_folder_distills_with_its_own_captions(tmp_path):
    """Each image comes with the text features cached beside it; a folder where some image has none falls back to
    zero captions; features of another text encoder's width are a one-line error."""
    from PIL import Image

    from dataset.folder import conditioning_file_bytes

    feats = [torch.randn(3 + i, CAP_DIM) for i in range(3)]
    for i, im in enumerate(fit_images(3, 32, seed=5)):
        Image.fromarray(((im + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).save(tmp_path / f"{i:05d}.png")
        (tmp_path / f"{i:05d}.cond.safetensors").write_bytes(conditioning_file_bytes(feats[i]))
    batches = image_batches(str(tmp_path), 32, 2, CAP_DIM, seed=0)
    for _ in range(3):
        images, caps = next(batches)
        assert images.shape == (2, 3, 32, 32) and len(caps) == 2
        for cap in caps:  # every caption is one of the files' own, whole
            assert any(cap.shape == f.shape and torch.equal(cap, f) for f in feats)
    (tmp_path / "00003.png").write_bytes((tmp_path / "00000.png").read_bytes())
    _, caps = next(image_batches(str(tmp_path), 32, 2, CAP_DIM, seed=0))
    assert all(torch.equal(c, z) for c, z in zip(caps, zero_captions(2, CAP_DIM), strict=True))
    (tmp_path / "00003.cond.safetensors").write_bytes(conditioning_file_bytes(torch.randn(4, CAP_DIM + 1)))
    with pytest.raises(ValueError, match=r"are not \[tokens, 64\]") as err:
        next(image_batches(str(tmp_path), 32, 4, CAP_DIM, seed=0))  # a batch of all four items
    assert "\n" not in str(err.value) and str(tmp_path) not in str(err.value)
