"""Shared fixtures: one real headless ComfyUI server for the whole test session (starting one takes ~8 s)."""

from __future__ import annotations

import os
import pathlib
import shutil
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
        _DISK.server_base = server.base_dir
        _DISK.server_own = _server_paths()  # the server's own folders (models/<folder>/): never a module's to remove
        yield server
    finally:
        _DISK.server_base = None
        server.stop()
        if os.environ.get("L2P_NO_ARTIFACTS") != "1":
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "comfyui-server.log").write_text(server.log_text())


@pytest.fixture
def comfy_models(comfy_server: ComfyServer) -> pathlib.Path:
    """The running server's models/ folder (models/<folder>/ exist for diffusion_models, l2p, vae, ...)."""
    return comfy_server.models_dir


# ----------------------------------------------------------------------------------------------- disk
# The suite writes hundreds of MB of tiny-but-real checkpoints; CI machines may have a few GB free. Each
# module's files go when the module ends (kept when one of its tests failed, for a look), and the largest
# footprint seen is printed at the end, so a test that starts hoarding shows up in the log before a full disk.


class _DiskWatch:
    server_base: pathlib.Path | None = None
    server_own: set[pathlib.Path] = set()
    peak: tuple[int, str] = (0, "")


_DISK = _DiskWatch()
_SERVER_SCRATCH = ("models", "output")  # where tests put files; input/ holds only small prompt banks


def _tree_bytes(root: pathlib.Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def _server_paths() -> set[pathlib.Path]:
    """Every file and folder under the shared server's scratch folders."""
    base = _DISK.server_base
    if base is None:
        return set()
    return {path for sub in _SERVER_SCRATCH for path in (base / sub).rglob("*")}


def _record_footprint(module: str, basetemp: pathlib.Path) -> None:
    used = _tree_bytes(basetemp)
    if _DISK.server_base is not None:
        used += sum(_tree_bytes(_DISK.server_base / sub) for sub in _SERVER_SCRATCH)
    if used > _DISK.peak[0]:
        _DISK.peak = (used, module)


@pytest.fixture(scope="module")
def module_tmp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """A folder shared by one module's tests, removed when the module ends unless one of its tests failed."""
    failed_before = request.session.testsfailed
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    _record_footprint(request.module.__name__, tmp_path_factory.getbasetemp())
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _module_disk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Measure what the module left on disk, then remove what it added to the shared server's folders."""
    failed_before = request.session.testsfailed
    before = _server_paths()
    yield
    _record_footprint(request.module.__name__, tmp_path_factory.getbasetemp())
    if request.session.testsfailed == failed_before:
        # Files and the folders they came in (deepest first): a folder left empty would read as "already
        # installed" to the next module's fixture (a diffusers folder without its files).
        # A module that started the shared server saw none of its folders before: those are the server's own.
        for path in sorted(_server_paths() - before - _DISK.server_own, key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    used, module = _DISK.peak
    terminalreporter.write_line(f"[disk] largest test footprint at a module's end: {used / 2**20:.0f} MiB ({module})")
