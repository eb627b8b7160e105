"""Input guards at the L2P model boundary, through a real ComfyUI server: each wrong input gives one line naming
what is wrong (and what to do) instead of a crash deep in core, a wrong-size or black image, or a process that
grows until the OS kills it; the server then renders the next valid prompt.

- conditioning from a text encoder of the wrong width, or holding NaN;
- a stock 4-channel EmptyLatentImage (core 0.3.75 would shrink the image 8x; newer cores resize it to pixels);
- a step whose output goes non-finite (a model file whose head overflows): the step and sigma are named;
- a size that cannot fit the device's memory even with the smallest head tile: refused within seconds, naming
  the estimate and a size or batch that fits.

A conditioning with no tokens cannot be built with stock nodes; it is checked on the model itself, in process.
"""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest
import torch
from PIL import Image

from harness.comfyui_home import comfyui_home
from harness.graph import tiny_demo_prompt
from harness.server import ComfyServer
from l2p.format.keys import HEAD_PREFIX
from l2p.pixel_dit import official_state_dict
from l2p.tiny import save_safetensors_atomic, tiny_l2p, tiny_qwen3_state_dict, write_demo_models

TE_WIDE48 = "guard-qwen3-width48.safetensors"
TE_NAN = "guard-qwen3-nan.safetensors"
L2P_OVERFLOW = "guard-l2p-overflowing-head.safetensors"


@pytest.fixture(scope="module")
def server(comfy_server: ComfyServer) -> ComfyServer:
    models = comfy_server.models_dir
    write_demo_models(str(models))
    te = models / "text_encoders"
    save_safetensors_atomic(tiny_qwen3_state_dict(seed=0, hidden_size=48), str(te / TE_WIDE48), dtype=torch.float16)
    nan = tiny_qwen3_state_dict(seed=0)
    nan["model.embed_tokens.weight"].fill_(float("nan"))
    save_safetensors_atomic(nan, str(te / TE_NAN), dtype=torch.float16)
    # Finite weights (a load-time check passes them) whose output overflows float32 at the first step.
    sd = official_state_dict(*tiny_l2p(seed=0))
    sd[HEAD_PREFIX + "out_conv.weight"].fill_(3e38)
    save_safetensors_atomic(sd, str(models / "l2p" / L2P_OVERFLOW))
    return comfy_server


def demo_prompt(**changes) -> dict:
    """The shipped tiny-demo API workflow, small and short; ``changes``: {node: {input: value} or a whole node}."""
    return tiny_demo_prompt(changes)


SEEDS = iter(range(1000, 2000))


def renders_next_valid_prompt(server: ComfyServer) -> None:
    result = server.run(demo_prompt(**{"7": {"seed": next(SEEDS)}}), timeout=300)
    assert result.ok, result.describe()
    (path,) = server.output_images(result)
    image = np.asarray(Image.open(path))
    assert image.shape == (64, 96, 3) and image.std() > 0


def one_line_error(server: ComfyServer, prompt: dict, node_type: str, timeout: float = 300) -> tuple[str, float]:
    result = server.run(prompt, timeout=timeout)
    assert not result.ok, "the prompt should have been refused"
    assert result.error["node_type"] == node_type, result.describe()
    message = result.error["exception_message"].strip()
    assert "\n" not in message and message.startswith("ComfyUI-L2P: "), message
    assert server.running
    return message, result.seconds


def test_conditioning_of_the_wrong_width_names_both_widths(server):
    message, _ = one_line_error(server, demo_prompt(**{"1": {"text_encoder_name": TE_WIDE48}}), "KSampler")
    assert "this conditioning is 48 wide, the model expects 64: wrong text encoder?" in message
    renders_next_valid_prompt(server)


def test_nan_conditioning_is_refused_before_sampling(server):
    message, _ = one_line_error(server, demo_prompt(**{"1": {"text_encoder_name": TE_NAN}}), "KSampler")
    assert "this conditioning holds NaN/inf values: check the text encoder" in message
    renders_next_valid_prompt(server)


def core_scales_empty_latents() -> bool:
    """Newer cores resize an empty latent to the model's pixels when its node gives its downscale ratio."""
    return "downscale_ratio_spacial" in (comfyui_home() / "comfy" / "sample.py").read_text()


def test_stock_empty_latent_image_is_refused_or_scaled_to_pixels(server):
    prompt = demo_prompt(**{"6": {"class_type": "EmptyLatentImage",
                                  "inputs": {"width": 96, "height": 64, "batch_size": 1}}})
    if core_scales_empty_latents():  # the stock latent becomes full-size pixels: nothing to refuse
        result = server.run(prompt, timeout=300)
        assert result.ok, result.describe()
        (path,) = server.output_images(result)
        assert np.asarray(Image.open(path)).shape == (64, 96, 3)
    else:  # core would sample a 12x8 image
        message, _ = one_line_error(server, prompt, "KSampler")
        assert ("this latent has 4 channels at 12x8, not the L2P model's 3-channel pixels: connect L2P Empty "
                "Image or VAEEncode(pixel_space), not EmptyLatentImage") in message
    renders_next_valid_prompt(server)


def test_non_finite_output_names_the_step_and_sigma(server):
    message, _ = one_line_error(server, demo_prompt(**{"4": {"ckpt_name": L2P_OVERFLOW}}), "KSampler")
    assert ("the model's output went NaN/inf at step 1 of 3 (sigma 1), running in float32: stopped instead of "
            "saving a black image") in message
    renders_next_valid_prompt(server)


HUGE = {  # id: (L2PEmptyImage inputs, its model input connected, head tiling, the refusing node, the message)
    "16384-square": ({"width": 16384, "height": 16384, "batch_size": 1}, True, "auto", "L2PEmptyImage",
                     r"16384x16384 \(batch 1\) needs about [\d.]+ GiB to sample on cpu \(trunk [\d.]+ GiB for "
                     r"[\d,]+ tokens, head [\d.]+ GiB in 16 px tiles, images [\d.]+ GiB\) but [\d.]+ GiB is free: "
                     r"use at most (\d+)x(\d+)$"),
    "batch-4096": ({"width": 1024, "height": 1024, "batch_size": 4096}, True, "auto", "L2PEmptyImage",
                   r"1024x1024 \(batch 4096\) needs about [\d.]+ GiB to sample on cpu .* is free: use batch_size "
                   r"(\d+) or less at this size$"),
    "batch-4096-no-model": ({"width": 1024, "height": 1024, "batch_size": 4096}, False, "auto", "L2PEmptyImage",
                            r"1024x1024 \(batch 4096\) is 48.0 GiB of pixels, and sampling holds 6 copies of them, "
                            r"but cpu has [\d.]+ GiB free: use batch_size (\d+) or less \(connect the model input "
                            r"for the whole estimate\)$"),
    # The sampler's own check, before it makes noise: the untiled head alone (about 28 GiB of float32 at 10240²)
    # is more than this machine's RAM.
    "10240-square-untiled": ({"width": 10240, "height": 10240, "batch_size": 1}, False, "off", "KSampler",
                             r"10240x10240 \(batch 1\) needs about [\d.]+ GiB to sample on cpu \(.*, head [\d.]+ GiB "
                             r"untiled, .*\) but [\d.]+ GiB is free: tile the head \(L2P Head Tiling mode auto\) "
                             r"and it fits$"),
}


@pytest.mark.parametrize("case", list(HUGE))
def test_a_size_that_cannot_fit_is_refused_in_seconds(server, case):
    inputs, with_model, tiling, node_type, pattern = HUGE[case]
    prompt = demo_prompt(**{"6": inputs})
    if not with_model:
        del prompt["6"]["inputs"]["model"]
    if tiling != "auto":
        prompt["20"] = {"class_type": "L2PHeadTiling", "inputs": {"model": ["4", 0], "mode": tiling,
                                                                    "tile_size": 1024}}
        prompt["5"]["inputs"]["model"] = ["20", 0]
    message, seconds = one_line_error(server, prompt, node_type, timeout=120)
    found = re.search(pattern, message)
    assert found, message
    suggested = [int(g) for g in found.groups()]
    assert all(0 < n < int(inputs["width"]) * int(inputs["batch_size"]) for n in suggested), message
    assert len(suggested) != 2 or suggested[0] % 16 == 0, message
    assert seconds < 10, f"refused after {seconds:.1f} s"  # here 0.01-0.4 s, not minutes of growth until killed
    renders_next_valid_prompt(server)


# In process: the model itself (no server), for what stock nodes cannot build.

@pytest.fixture(scope="module")
def dit():
    from harness.inprocess import import_pack

    core = importlib.import_module(import_pack().__name__ + ".nodes.comfy_core")
    model = core.load_l2p_state_dict(official_state_dict(*tiny_l2p(seed=3)), dtype=torch.float32)
    return core, model.model.diffusion_model


def test_conditioning_without_tokens_is_one_line(dit):
    core, model = dit
    with pytest.raises(core.L2PInputError) as err, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32), torch.tensor([0.5]), torch.zeros(1, 0, 64), 0)
    message = str(err.value)
    assert "\n" not in message and "this conditioning has no tokens (shape (1, 0, 64))" in message
    with torch.no_grad():  # the same call with one token runs
        assert model(torch.zeros(1, 3, 32, 32), torch.tensor([0.5]), torch.zeros(1, 1, 64), 1).shape == (1, 3, 32, 32)


def test_the_estimate_grows_and_the_suggestion_is_the_largest_that_fits():
    from l2p.head_tiling import fitting_size, sampling_memory

    def need(h: int, w: int, b: int, tile: int | None = None) -> int:  # the tiny model's widths, float32
        return sampling_memory("1k", h, w, b, 4, patch=16, dim=256, ffn_dim=682, head_dim=64, cap_tokens=64,
                               tile=tile).total

    assert need(2048, 2048, 1) > need(1024, 2048, 1) > need(1024, 1024, 1) and need(1024, 1024, 2) > need(1024, 1024, 1)
    def head(tile: int | None) -> int:
        return sampling_memory("1k", 2048, 2048, 1, 4, patch=16, dim=256, ffn_dim=682, head_dim=64, cap_tokens=64,
                               tile=tile).head

    assert head(0) > head(512) > head(None)  # untiled, a tile, the smallest
    assert need(2048, 2048, 1, 0) > need(2048, 2048, 1, 512) >= need(2048, 2048, 1)  # the trunk can lead a small tile
    budget = need(2000, 1000, 1)
    h, w, b = fitting_size(need, 4096, 2048, 1, 16, budget)
    assert b == 1 and h % 16 == 0 and w % 16 == 0 and abs(h / w - 2) < 0.05
    assert need(h, w, 1) <= budget < need(h + 16, w + 16, 1)
    assert fitting_size(need, 1024, 1024, 64, 16, need(1024, 1024, 5)) == (1024, 1024, 5)
    assert fitting_size(need, 1024, 1024, 1, 16, 1) is None
