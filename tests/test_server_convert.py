"""Conversion end to end through a real ComfyUI server: a tiny latent Z-Image in diffusers folder form ->
L2PSourceModelLoader -> L2PConvert -> L2PSaveCheckpoint + KSampler; then the saved file through
L2PModelLoader samples the same pixels (bit-identical round trip)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from harness.server import ComfyServer
from l2p.tiny import DEMO_TE_FILE, write_demo_models
from tests.test_convert_nodes import install_tiny_source

WORKFLOWS = pathlib.Path(__file__).resolve().parents[1] / "workflows" / "api"
SMALL = {"6": {"width": 64, "height": 48, "batch_size": 1}, "7": {"steps": 2}}


@pytest.fixture(scope="module")
def server(comfy_server: ComfyServer) -> ComfyServer:
    write_demo_models(str(comfy_server.models_dir))
    install_tiny_source(comfy_server.models_dir)
    return comfy_server


def workflow(name: str, changes: dict) -> dict:
    prompt = json.loads((WORKFLOWS / f"{name}.api.json").read_text())
    for node, inputs in changes.items():
        prompt[node]["inputs"].update(inputs)
    return prompt


def convert_prompt(**changes) -> dict:
    """The shipped conversion workflow on the tiny models: official init (no VAE on this machine)."""
    prompt = workflow("l2p_convert_zimage", {**SMALL, "11": {"source": "tiny-zimage/"}, "13": {"init": "official"}})
    for node, inputs in changes.items():
        prompt[node]["inputs"].update(inputs)
    prompt["1"] = {"class_type": "L2PTextEncoderLoader", "inputs": {"text_encoder_name": DEMO_TE_FILE}}
    del prompt["12"], prompt["13"]["inputs"]["vae"]
    return prompt


def images(server: ComfyServer, result) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in server.output_images(result)]


def test_convert_save_load_sample_round_trip(server):
    result = server.run(convert_prompt(**{"14": {"filename_prefix": "e2e/tiny-converted"}}), timeout=300)
    assert result.ok, result.describe()
    (saved,) = result.outputs["14"]["text"]
    assert saved.startswith("e2e/tiny-converted_") and (server.models_dir / "l2p" / saved).is_file()
    converted = images(server, result)
    assert converted[0].shape == (48, 64, 3)

    again = server.run(workflow("l2p_tiny_demo", {**SMALL, "4": {"ckpt_name": saved}}), timeout=300)
    assert again.ok, again.describe()
    assert np.array_equal(images(server, again)[0], converted[0])


def test_wrong_inputs_fail_the_node_not_the_server(server):
    bad = convert_prompt(**{"13": {"init": "vae_lsq"}})  # no VAE connected
    result = server.run(bad, timeout=300)
    assert not result.ok and "needs the source's VAE" in result.error_message
    result = server.run(convert_prompt(**{"13": {"policy": "custom", "custom_blocks": "7-9"}}), timeout=300)
    assert not result.ok and "outside 0-1" in result.error_message
    assert server.run(convert_prompt(), timeout=300).ok  # the server still serves
