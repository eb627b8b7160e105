"""Shared fixtures: one real headless ComfyUI server for the whole test session (starting one takes ~8 s)."""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Iterator

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # pyproject sets pythonpath = ["."]; this also covers running from elsewhere
    sys.path.insert(0, str(REPO))

from harness.comfyui_home import comfyui_home  # noqa: E402
from harness.server import ComfyServer  # noqa: E402

ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def comfy_server() -> Iterator[ComfyServer]:
    """A started ComfyServer with this pack symlinked into custom_nodes/; its log lands in test-artifacts/.

    Fails (never skips) when ComfyUI is missing: a skipped integration test would hide a broken setup.
    """
    try:
        home = comfyui_home()
    except FileNotFoundError:
        pytest.fail(
            f"ComfyUI not found at {comfyui_home(check=False)}: run `bash scripts/setup.sh` (or set COMFYUI_PATH)",
            pytrace=False,
        )
    server = ComfyServer(comfy_dir=home)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if os.environ.get("L2P_NO_ARTIFACTS") != "1":
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "comfyui-server.log").write_text(server.log_text())


@pytest.fixture
def comfy_models(comfy_server: ComfyServer) -> pathlib.Path:
    """The running server's models/ folder (models/<folder>/ exist for diffusion_models, l2p, vae, ...)."""
    return comfy_server.models_dir
