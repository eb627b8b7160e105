"""The pack's one HTTP route: ``GET /l2p/hints`` for the frontend's size/shift/memory text.

It calls ``l2p.hints.size_hint`` (the nodes' own size, shift and memory functions); the model's patch
and head come from the connected loader's file header (shapes only, nothing loaded).
"""

from __future__ import annotations

import functools
import os

from aiohttp import web

from ..l2p.format.keys import strip_prefix
from ..l2p.format.layouts import infer_patch_size
from ..l2p.format.tensor_io import open_source
from ..l2p.head import detect_head_variant
from ..l2p.hints import size_hint
from ..l2p.sizes import CUSTOM
from .comfy_core import model_management
from .files import checkpoint_path


@functools.lru_cache(maxsize=32)
def _geometry(path: str, mtime: float) -> tuple[int, str]:
    stripped = strip_prefix(open_source(path).meta)
    return infer_patch_size(stripped), detect_head_variant(stripped.keys())


def model_geometry(ckpt_name: str) -> tuple[int, str]:
    """(patch, head) of a listed L2P file; the 1K defaults when it is not given or cannot be read."""
    if not ckpt_name:
        return 16, "1k"
    try:
        path = checkpoint_path(ckpt_name)
        return _geometry(path, os.path.getmtime(path))
    except (OSError, ValueError):
        return 16, "1k"


async def hints(request: web.Request) -> web.Response:
    q = request.rel_url.query
    try:
        width, height, batch = int(q.get("width", 1024)), int(q.get("height", 1024)), int(q.get("batch", 1))
        shift = float(q.get("shift", 3.0))
    except ValueError:
        return web.json_response({"ok": False, "text": "width, height, batch and shift must be numbers"})
    patch, head = model_geometry(q.get("ckpt_name", ""))
    free = model_management.get_free_memory(model_management.get_torch_device())
    return web.json_response(size_hint(width, height, batch, q.get("preset", CUSTOM), q.get("fit", "reject"), patch,
                                       head, shift, q.get("mode", "auto"), int(free)))


def register_routes() -> None:
    from server import PromptServer

    routes = PromptServer.instance.routes
    if not getattr(register_routes, "done", False):
        routes.get("/l2p/hints")(hints)
        register_routes.done = True
