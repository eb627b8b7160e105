"""The harness itself, against a real ComfyUI: stock nodes only, no model files, CPU.

If these fail, every pack test built on the ``comfy_server`` fixture would fail for reasons unrelated to the pack.
"""

from __future__ import annotations

import pathlib
import uuid

import pytest
from PIL import Image

from harness.server import ComfyServer, PromptRejected

STOCK_NODES = {"KSampler", "VAEDecode", "VAELoader", "SaveImage", "EmptyImage", "LoadImage"}
STOCK_NODES |= {"EmptyChromaRadianceLatentImage"}


def _prefix(tag: str) -> str:
    """A unique SaveImage prefix, so assertions never pick up files from another test in the same session."""
    return f"harness/{tag}_{uuid.uuid4().hex[:8]}"


def empty_image_prompt(width: int, height: int, color: int, prefix: str) -> dict:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": height, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def test_stock_node_types_present(comfy_server: ComfyServer) -> None:
    types = comfy_server.node_types()
    missing = STOCK_NODES - types
    assert not missing, f"stock node types missing: {sorted(missing)}\n{comfy_server.log_tail()}"
    vae_names = comfy_server.object_info()["VAELoader"]["input"]["required"]["vae_name"][0]
    assert "pixel_space" in vae_names


def test_base_directory_layout(comfy_server: ComfyServer, comfy_models: pathlib.Path) -> None:
    """models/, custom_nodes/ and the pack symlink live in the temp base dir, and ComfyUI reads models/ from it."""
    assert comfy_models == comfy_server.models_dir
    for sub in ("diffusion_models", "l2p", "text_encoders", "vae"):
        assert (comfy_models / sub).is_dir()
    link = comfy_server.custom_nodes_dir / "ComfyUI-L2P"
    assert link.is_symlink() and link.resolve() == pathlib.Path(__file__).resolve().parents[1]
    assert str(link) in comfy_server.log_text(), "ComfyUI did not try to import the symlinked pack"

    dummy = comfy_models / "vae" / f"harness_{uuid.uuid4().hex[:8]}.safetensors"
    dummy.write_bytes(b"not a real model")
    try:
        vae_names = comfy_server.object_info()["VAELoader"]["input"]["required"]["vae_name"][0]
        assert dummy.name in vae_names, f"{dummy} not listed by VAELoader: ComfyUI reads another models dir"
    finally:
        dummy.unlink()


def test_empty_image_to_png(comfy_server: ComfyServer) -> None:
    result = comfy_server.run(empty_image_prompt(96, 64, 0x3366CC, _prefix("empty")), timeout=120)
    assert result.ok, result.describe()
    (png,) = comfy_server.output_images(result)
    assert png.is_file() and png.suffix == ".png"
    assert png.is_relative_to(comfy_server.output_dir)
    with Image.open(png) as img:
        assert img.size == (96, 64)
        assert img.convert("RGB").getpixel((5, 5)) == (0x33, 0x66, 0xCC)


def test_a_run_reports_every_event_up_to_the_end(comfy_server: ComfyServer) -> None:
    """History is written before the last events are sent: a fast run must still hand them all to on_event."""
    for i in range(8):
        seen: list[tuple[str, object]] = []
        result = comfy_server.run(empty_image_prompt(32, 32, i, _prefix("events")), timeout=120,
                                  on_event=lambda kind, data, seen=seen: seen.append((kind, data.get("node"))))
        assert result.ok, result.describe()
        assert seen == [(k, d.get("node")) for k, d in result.events]
        assert ("execution_success", None) in seen and seen[-1] == ("executing", None), seen


def test_pixel_space_latent_decode_to_png(comfy_server: ComfyServer) -> None:
    """The pixel-space path L2P relies on: an RGB 'latent' decoded by VAELoader('pixel_space')."""
    prompt = {
        "1": {"class_type": "EmptyChromaRadianceLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 2}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": _prefix("radiance")}},
    }
    result = comfy_server.run(prompt, timeout=120)
    assert result.ok, result.describe()
    pngs = comfy_server.output_images(result)
    assert len(pngs) == 2
    for png in pngs:
        with Image.open(png) as img:
            assert img.size == (64, 48)
            lo, hi = img.convert("L").getextrema()
            assert 120 <= lo <= hi <= 135, "a zero pixel-space latent should decode to mid grey"


def test_bad_input_is_rejected_and_server_keeps_serving(comfy_server: ComfyServer) -> None:
    bad = empty_image_prompt(0, 64, 0, _prefix("bad"))  # width min is 1
    with pytest.raises(PromptRejected) as info:
        comfy_server.queue(bad)
    err = info.value
    assert err.status == 400
    assert "1" in err.node_errors, err.text
    assert "width" in err.text and "smaller than min" in err.text.lower(), err.text

    unknown = {"1": {"class_type": "NoSuchNodeL2P", "inputs": {}}}
    with pytest.raises(PromptRejected, match="NoSuchNodeL2P"):
        comfy_server.queue(unknown)

    result = comfy_server.run(empty_image_prompt(32, 32, 0xFFFFFF, _prefix("after_bad")), timeout=120)
    assert result.ok, result.describe()
    assert len(comfy_server.output_images(result)) == 1


def test_node_exception_is_reported(comfy_server: ComfyServer) -> None:
    """A node that raises at run time: the result carries ComfyUI's exception message, and the server goes on."""
    broken = comfy_server.input_dir / f"broken_{uuid.uuid4().hex[:8]}.png"
    broken.write_bytes(b"this is not a png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": broken.name}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": _prefix("broken")}},
    }
    try:
        result = comfy_server.run(prompt, timeout=120)
    finally:
        broken.unlink()
    assert result.status == "error", result.describe()
    assert result.error is not None and result.error["node_type"] == "LoadImage"
    assert "cannot identify image file" in (result.error_message or ""), result.describe()
    assert any(kind == "execution_error" for kind, _ in result.events), "the websocket execution_error was not seen"
    assert comfy_server.output_images(result) == []

    again = comfy_server.run(empty_image_prompt(16, 16, 0, _prefix("after_error")), timeout=120)
    assert again.ok, again.describe()
