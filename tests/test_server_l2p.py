"""End to end through a real ComfyUI server: L2PModelLoader -> stock KSampler / SamplerCustomAdvanced ->
VAEDecode(pixel_space) -> SaveImage, on tiny official-layout checkpoints the tests create."""

from __future__ import annotations

import copy
import pathlib

import numpy as np
import pytest
from PIL import Image

from harness.graph import tiny_demo_prompt
from harness.server import ComfyServer
from l2p.format.layouts import official_to_comfy
from l2p.tiny import (
    DEMO_L2P_FILE,
    official_trunk,
    randomize_,
    save_safetensors_atomic,
    write_demo_models,
)


@pytest.fixture(scope="module")
def server(comfy_server: ComfyServer) -> ComfyServer:
    write_demo_models(str(comfy_server.models_dir))
    return comfy_server


def demo_prompt(**changes) -> dict:
    """The shipped tiny-demo API workflow, small and short; ``changes``: {node: {input: value} or a whole node}."""
    return tiny_demo_prompt(changes)


def pixels(server: ComfyServer, prompt: dict) -> list[np.ndarray]:
    result = server.run(prompt, timeout=300)
    assert result.ok, result.describe()
    return [np.asarray(Image.open(p)) for p in server.output_images(result)]


def test_pack_imports_without_failure(server):
    assert server.import_failures() == []
    assert {"L2PModelLoader", "L2PEmptyImage", "L2PTextEncoderLoader"} <= server.node_types()
    info = server.object_info()["L2PModelLoader"]["input"]["required"]
    assert DEMO_L2P_FILE in info["ckpt_name"][1]["options"]


def test_png_has_requested_size_and_same_seed_same_pixels(server):
    first = pixels(server, demo_prompt(**{"7": {"steps": 3, "seed": 11}}))
    other = pixels(server, demo_prompt(**{"7": {"steps": 3, "seed": 12}}))  # also evicts the cached run
    again = pixels(server, demo_prompt(**{"7": {"steps": 3, "seed": 11}}))
    assert len(first) == 1 and first[0].shape == (64, 96, 3)
    assert np.array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])


def test_batch_of_two_gives_two_different_images(server):
    images = pixels(server, demo_prompt(**{"6": {"width": 64, "height": 80, "batch_size": 2}}))
    assert len(images) == 2 and all(im.shape == (80, 64, 3) for im in images)
    assert not np.array_equal(images[0], images[1])


def test_sizes_whose_token_count_is_not_a_multiple_of_32(server):
    # 112x48 -> 7x3 = 21 tokens (the official code fails on such grids)
    (image,) = pixels(server, demo_prompt(**{"6": {"width": 112, "height": 48, "batch_size": 1}}))
    assert image.shape == (48, 112, 3)


def test_sampler_custom_advanced_and_auraflow_shift(server):
    prompt = demo_prompt()
    del prompt["7"]
    prompt.update({
        "20": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
        "21": {"class_type": "CFGGuider", "inputs": {"model": ["5", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                      "cfg": 2.0}},
        "22": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "23": {"class_type": "BasicScheduler", "inputs": {"model": ["5", 0], "scheduler": "simple", "steps": 3,
                                                           "denoise": 1.0}},
        "24": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["20", 0], "guider": ["21", 0],
                                                                  "sampler": ["22", 0], "sigmas": ["23", 0],
                                                                  "latent_image": ["6", 0]}},
    })
    prompt["9"]["inputs"]["samples"] = ["24", 0]
    (image,) = pixels(server, prompt)
    assert image.shape == (64, 96, 3)


def test_img2img_through_pixel_space_vae_encode(server):
    source = (np.indices((64, 96)).sum(0) % 2 * 255).astype(np.uint8)
    Image.fromarray(np.stack([source] * 3, -1)).save(server.input_dir / "checker.png")
    prompt = demo_prompt(**{"7": {"steps": 4, "denoise": 0.3}})
    prompt["30"] = {"class_type": "LoadImage", "inputs": {"image": "checker.png"}}
    prompt["31"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["30", 0], "vae": ["8", 0]}}
    prompt["7"]["inputs"]["latent_image"] = ["31", 0]
    (image,) = pixels(server, prompt)
    assert image.shape == (64, 96, 3)


@pytest.fixture(scope="module")
def packed_file(server: ComfyServer) -> str:
    """The demo model re-saved in the ComfyUI-packed layout with prefix, in models/diffusion_models."""
    from safetensors.torch import load_file

    src = server.models_dir / "l2p" / DEMO_L2P_FILE
    packed = {f"model.diffusion_model.{k}": v for k, v in official_to_comfy(load_file(src)).items()}
    name = "l2p-tiny-packed.safetensors"
    save_safetensors_atomic(packed, str(server.models_dir / "diffusion_models" / name))
    return name


def test_comfy_packed_layout_with_prefix_loads_too(server, packed_file):
    official = pixels(server, demo_prompt(**{"7": {"seed": 99}}))
    comfy = pixels(server, demo_prompt(**{"4": {"ckpt_name": packed_file}, "7": {"seed": 99}}))
    assert np.abs(official[0].astype(int) - comfy[0].astype(int)).max() <= 1


def test_fp8_storage_samples(server):
    (image,) = pixels(server, demo_prompt(**{"4": {"weight_dtype": "fp8_e4m3fn"}, "7": {"seed": 5}}))
    assert image.shape == (64, 96, 3)


def test_empty_image_rejects_sides_off_the_patch_grid(server):
    result = server.run(demo_prompt(**{"6": {"width": 100}}), timeout=120)
    assert not result.ok and result.error["node_type"] == "L2PEmptyImage"
    expected = "width 100 is not a multiple of 16 (patch 16, head 1k): use 96 or 112, or set fit to snap"
    assert expected in result.error_message


def bad_files(folder: pathlib.Path) -> dict[str, str]:
    """name -> text the node error must carry."""
    good = (folder / DEMO_L2P_FILE).read_bytes()
    (folder / "bad-corrupt.safetensors").write_bytes(b"\x00" * 8 + b"definitely not a header" * 10)
    (folder / "bad-truncated.safetensors").write_bytes(good[: len(good) // 2])
    from safetensors.torch import load_file

    sd = load_file(folder / DEMO_L2P_FILE)
    partial = {k: v for k, v in sd.items() if not k.startswith("local_decoder.dec1")}
    save_safetensors_atomic(partial, str(folder / "bad-no-dec1.safetensors"))
    latent = randomize_(official_trunk(dim=256, n_layers=1, n_refiner_layers=1, n_heads=4, cap_feat_dim=64,
                                       patch_size=16), seed=1)
    latent_sd = {k: v for k, v in latent.state_dict().items()}
    save_safetensors_atomic(latent_sd, str(folder / "bad-latent-zimage.safetensors"))
    head_only = {k: v for k, v in sd.items() if k.startswith("local_decoder.")}
    save_safetensors_atomic(head_only, str(folder / "bad-head-only.safetensors"))
    return {
        "bad-corrupt.safetensors": "is truncated or corrupt",
        "bad-truncated.safetensors": "is truncated or corrupt",
        "bad-no-dec1.safetensors": "tensors of local_decoder missing",
        "bad-latent-zimage.safetensors": "latent Z-Image",
        "bad-head-only.safetensors": "Detailer Head alone",
    }


def test_bad_files_give_one_line_errors_and_server_keeps_serving(server):
    expected = bad_files(server.models_dir / "l2p")
    for name, text in expected.items():
        result = server.run(demo_prompt(**{"4": {"ckpt_name": name}}), timeout=120)
        assert not result.ok and result.error["node_type"] == "L2PModelLoader"
        message = result.error["exception_message"].strip()
        assert text in message and name in message and "\n" not in message, message
        assert server.running
    assert len(pixels(server, demo_prompt(**{"7": {"seed": 1234}}))) == 1


def test_stock_unet_loader_detects_l2p_instead_of_loading_garbage(server, packed_file):
    """The pack registers L2P with ComfyUI's own detection, so UNETLoader gives the same model."""
    prompt = demo_prompt(**{"7": {"seed": 77}})
    ours = pixels(server, copy.deepcopy(prompt))
    prompt["4"] = {"class_type": "UNETLoader", "inputs": {"unet_name": packed_file,
                                                          "weight_dtype": "default"}}
    stock = pixels(server, prompt)
    assert np.abs(ours[0].astype(int) - stock[0].astype(int)).max() <= 1
