"""The head variants beyond 1K through a real ComfyUI server: tiny 0.5K/4K/8K/10K models (patch 8/64/128/160 and
their heads) in both layouts sample at their native patch; the tiled head gives the untiled pixels; the
4K workflow's auto shift and snapping run; off-grid sizes get one line naming valid sizes."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from harness.server import ComfyServer
from l2p.format.layouts import official_to_comfy
from l2p.format.tensor_io import save_safetensors_atomic
from l2p.pixel_dit import official_state_dict
from l2p.tiny import DEMO_TE_FILE, tiny_l2p, write_demo_models

API = pathlib.Path(__file__).resolve().parents[1] / "workflows" / "api"
# patch, (w, h)
VARIANTS = {"0.5k": (8, (64, 48)), "4k": (64, (192, 128)), "8k": (128, (256, 256)), "10k": (160, (320, 320))}


@pytest.fixture(scope="module")
def server(comfy_server: ComfyServer) -> ComfyServer:
    write_demo_models(str(comfy_server.models_dir))
    for variant, (patch, _) in VARIANTS.items():
        sd = official_state_dict(*tiny_l2p(seed=3, patch_size=patch))
        folder = comfy_server.models_dir / "l2p"
        save_safetensors_atomic(sd, str(folder / f"tiny-{variant}-official.safetensors"))
        packed = {f"model.diffusion_model.{k}": v for k, v in official_to_comfy(sd).items()}
        save_safetensors_atomic(packed, str(folder / f"tiny-{variant}-comfy.safetensors"))
    return comfy_server


def prompt_for(name: str, ckpt: str, width: int, height: int, **changes) -> dict:
    prompt = json.loads((API / f"{name}.api.json").read_text())
    prompt["1"] = {"class_type": "L2PTextEncoderLoader", "inputs": {"text_encoder_name": DEMO_TE_FILE}}
    prompt["4"]["inputs"]["ckpt_name"] = ckpt
    prompt["6"]["inputs"].update(width=width, height=height, batch_size=1)
    prompt["7"]["inputs"]["steps"] = 2
    for node, inputs in changes.items():
        if "class_type" in inputs:
            prompt[node] = inputs
        else:
            prompt[node]["inputs"].update(inputs)
    return prompt


def images(server: ComfyServer, prompt: dict) -> list[np.ndarray]:
    result = server.run(prompt, timeout=600)
    assert result.ok, result.describe()
    return [np.asarray(Image.open(p)).astype(int) for p in server.output_images(result)]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_samples_in_both_layouts(server, variant):
    patch, (w, h) = VARIANTS[variant]
    official = images(server, prompt_for("l2p_tiny_demo", f"tiny-{variant}-official.safetensors", w, h))
    packed = images(server, prompt_for("l2p_tiny_demo", f"tiny-{variant}-comfy.safetensors", w, h))
    assert official[0].shape == (h, w, 3)
    assert np.array_equal(official[0], packed[0])
    assert official[0].std() > 0


def test_tiled_head_gives_the_untiled_pixels(server):
    w, h = 640, 384  # the 4K head's halo is 256 px: 2x2 tiles of 320 each need their neighbours
    tiling = {"class_type": "L2PHeadTiling", "inputs": {"model": ["4", 0], "mode": "off", "tile_size": 320}}
    base = prompt_for("l2p_tiny_demo", "tiny-4k-official.safetensors", w, h, **{"20": tiling})
    base["5"]["inputs"]["model"] = ["20", 0]
    untiled = images(server, base)
    base["20"]["inputs"]["mode"] = "fixed"
    tiled = images(server, base)
    assert np.abs(tiled[0] - untiled[0]).max() <= 1  # equal up to float rounding at 8 bits


def test_4k_workflow_snaps_and_shifts_automatically(server):
    prompt = prompt_for("l2p_zimage_4k", "tiny-4k-official.safetensors", 150, 100)
    prompt["6"]["inputs"]["preset"] = "custom (width x height)"
    result = server.run(prompt, timeout=600)
    assert result.ok, result.describe()
    (img,) = [np.asarray(Image.open(p)) for p in server.output_images(result)]
    assert img.shape == (128, 192, 3)  # snapped up to the 64-pixel grid, as the official pipeline rounds


def test_off_grid_sizes_name_the_valid_ones(server):
    result = server.run(prompt_for("l2p_tiny_demo", "tiny-10k-official.safetensors", 480, 320), timeout=300)
    assert not result.ok
    assert "width 480 is not a multiple of 320 (patch 160, head 10k): use 320 or 640" in result.error_message
