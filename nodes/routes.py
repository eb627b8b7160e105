"""The pack's one HTTP route: ``GET /l2p/hints`` for the frontend's size/shift/memory text.

Parameters (all optional; absent ones take the nodes' defaults), checked by ``l2p.hints.parse_query`` on the
event loop before any other work, against the nodes' own limits:

=========== ==========================================================================================
width       whole number, ``MIN_SIDE`` (16) to ComfyUI's ``MAX_RESOLUTION`` (L2PEmptyImage's range)
height      the same
batch       whole number, 1 to ``MAX_BATCH`` (4096)
preset      ``custom (width x height)`` or one of the node's presets
fit         ``reject``, ``snap up`` or ``snap nearest``
ckpt_name   a .safetensors name listed in models/l2p or models/diffusion_models (no path may leave them)
shift_from  what sets the sampled shift: ``L2PNoiseShift``, ``ModelSamplingAuraFlow``, ``ModelSamplingSD3``,
            ``model`` (no shift node: the model's default) or ``assumed`` (no sampler wired)
mode        ``auto`` or ``manual`` (L2PNoiseShift)
shift       finite, ``SHIFT_MIN`` (0.01) to ``SHIFT_MAX`` (100) (L2PNoiseShift's range)
=========== ==========================================================================================

The query string is at most ``MAX_QUERY_CHARS`` (2048) characters, a value at most 512; unknown or repeated
parameters are refused. Answers are strict JSON (no NaN or infinity), never HTTP 500:

* 200 ``{"ok": true, "text": ..., figures}``: the hint;
* 200 ``{"ok": false, "message": ...}``: a valid request for a size the node would reject (not a multiple
  of the model's grid), the message says the nearest valid sides;
* 400 ``{"ok": false, "message": ..., "errors": {parameter: message}}``: bad parameters, one message each;
* 503 ``{"ok": false, "message": ...}``: too many hints in flight, one took over ``TIMEOUT_S``, or it failed.

After the checks the work is bounded (the size plan, the shift, the head memory, and the auto tile: at most
2 sqrt(MAX_RESOLUTION / 16) head forwards traced on the meta device, 0.1 s each at 1K and more for larger
regions since the strip forward's op count grows with the height; cached) but not free:
it runs, with the checkpoint listing and its header read (cached per file and modification time), on a
two-thread pool off the event loop, with a timeout and at most ``MAX_IN_FLIGHT`` requests queued.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import math
import os

from aiohttp import web

import nodes as comfy_nodes

from ..l2p.hints import HintQuery, HintQueryError, ModelFacts, model_facts, parse_query, size_hint
from .comfy_core import model_management
from .files import checkpoint_names, checkpoint_path

MAX_SIDE = comfy_nodes.MAX_RESOLUTION  # L2PEmptyImage's width / height maximum (nodes/sampling.py)
# The largest valid hint (16384² at the largest batch, nothing fits untiled) traces the head's forward for about
# 60 candidate tiles on the meta device: 4.8-5.0 s on a slow 2-core CPU, once per size (cached after). 3x that.
TIMEOUT_S = 15.0
MAX_IN_FLIGHT = 8
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="l2p-hints")
_pending: set[concurrent.futures.Future] = set()


@functools.lru_cache(maxsize=64)
def _facts(path: str, mtime_ns: int, size: int, name: str) -> ModelFacts:
    return model_facts(path, name)


def _model(ckpt_name: str) -> ModelFacts:
    if not ckpt_name:
        return ModelFacts()
    if ckpt_name not in checkpoint_names():
        raise HintQueryError({"ckpt_name": f"ckpt_name {ckpt_name!r} is not a file listed in models/l2p or "
                                           "models/diffusion_models: refresh (press R) and pick a listed file"})
    path = checkpoint_path(ckpt_name)
    stat = os.stat(path)
    return _facts(path, stat.st_mtime_ns, stat.st_size, ckpt_name)


def _compute(q: HintQuery) -> tuple[int, dict]:
    try:
        model = _model(q.ckpt_name)
    except HintQueryError as e:
        return 400, {"ok": False, "message": str(e), "errors": e.errors}
    except OSError as e:
        return 400, {"ok": False, "message": f"ckpt_name {q.ckpt_name!r} cannot be read: {e.strerror}",
                     "errors": {"ckpt_name": f"cannot be read: {e.strerror}"}}
    free = float(model_management.get_free_memory(model_management.get_torch_device()))
    return 200, size_hint(q, model, int(free) if math.isfinite(free) else 0)


def _reply(body: dict, status: int) -> web.Response:
    try:
        text = json.dumps(body, allow_nan=False)
    except ValueError:  # a non-finite figure: a bug, but the answer stays strict JSON
        logging.exception("L2P hints: a non-finite figure in %r", body)
        status, text = 503, json.dumps({"ok": False, "message": "the hint has a non-finite figure (a bug)"})
    return web.Response(text=text, status=status, content_type="application/json")


async def hints(request: web.Request) -> web.Response:
    raw = request.rel_url.raw_query_string
    try:
        q = parse_query(request.rel_url.query.items(), MAX_SIDE, len(raw))
    except HintQueryError as e:
        return _reply({"ok": False, "message": str(e), "errors": e.errors}, 400)
    _pending.difference_update([f for f in list(_pending) if f.done()])
    if len(_pending) >= MAX_IN_FLIGHT:
        return _reply({"ok": False, "message": "busy: too many hints in flight, try again"}, 503)
    job = _POOL.submit(_compute, q)
    _pending.add(job)
    try:
        status, body = await asyncio.wait_for(asyncio.wrap_future(job), TIMEOUT_S)
    except asyncio.TimeoutError:
        job.cancel()  # only a job still queued stops; a running one finishes and is dropped
        return _reply({"ok": False, "message": f"the hint took over {TIMEOUT_S:g} s"}, 503)
    except Exception as e:  # noqa: BLE001 (the route answers with the reason, never a 500)
        logging.exception("L2P hints failed for %r", q)
        return _reply({"ok": False, "message": f"the hint could not be computed: {e}"}, 503)
    return _reply(body, status)


def register_routes() -> None:
    from server import PromptServer

    routes = PromptServer.instance.routes
    if not getattr(register_routes, "done", False):
        routes.get("/l2p/hints")(hints)
        register_routes.done = True
