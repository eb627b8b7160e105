"""``GET /l2p/hints`` through a real ComfyUI server: every bad parameter is refused with a message naming it
(never HTTP 500), every answer is strict JSON, the figures describe the model and the shift node the frontend
says are wired, and a flood of hostile requests never stalls the server (``/system_stats`` keeps answering
within 1 s)."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from safetensors.torch import save_file

from harness.server import ComfyServer
from l2p.sizes import MAX_BATCH

ROUTE_TIMEOUT_S = 15.0  # nodes/routes.TIMEOUT_S (that module needs ComfyUI): slower than this answers 503

SHAPES = "l2p-shapes-demo.safetensors"  # shipped with the pack (shapes_world/models/l2p), listed by the server


def _no_constants(name: str):
    raise ValueError(f"not strict JSON: {name}")


def get(server: ComfyServer, path: str, timeout: float = 30) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"{server.url}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def hint(server: ComfyServer, params: dict | list | str) -> tuple[int, dict]:
    query = params if isinstance(params, str) else urllib.parse.urlencode(params)
    status, text = get(server, f"/l2p/hints?{query}")
    assert status != 500, text
    return status, json.loads(text, parse_constant=_no_constants)  # NaN / Infinity fail here


BAD = [  # (query, the parameter its message must name)
    ({"width": 0}, "width"), ({"width": -1024}, "width"), ({"width": 2**25}, "width"), ({"width": 10**30}, "width"),
    ({"width": "abc"}, "width"), ({"width": "1e3"}, "width"), ({"width": "nan"}, "width"),
    ({"width": 16384 + 16}, "width"), ({"width": 8}, "width"),
    ({"height": 0}, "height"), ({"height": -5}, "height"), ({"height": "9" * 500}, "height"),
    ({"batch": 0}, "batch"), ({"batch": -3}, "batch"), ({"batch": MAX_BATCH + 1}, "batch"), ({"batch": "1.5"}, "batch"),
    ({"shift": "nan"}, "shift"), ({"shift": "NaN"}, "shift"), ({"shift": "inf"}, "shift"), ({"shift": "-inf"}, "shift"),
    ({"shift": "1e400"}, "shift"), ({"shift": 0}, "shift"), ({"shift": -1}, "shift"), ({"shift": 101}, "shift"),
    ({"shift": "x"}, "shift"),
    ({"preset": "99999x99999"}, "preset"), ({"fit": "stretch"}, "fit"), ({"mode": "sometimes"}, "mode"),
    ({"shift_from": "KSampler"}, "shift_from"),
    ({"ckpt_name": "../../../etc/passwd"}, "ckpt_name"), ({"ckpt_name": "/etc/hosts.safetensors"}, "ckpt_name"),
    ({"ckpt_name": "../l2p/" + SHAPES}, "ckpt_name"), ({"ckpt_name": "..\\..\\x.safetensors"}, "ckpt_name"),
    ({"ckpt_name": "not-listed.safetensors"}, "ckpt_name"), ({"ckpt_name": "x" * 600}, "ckpt_name"),
    ({"volume": 11}, "volume"),
    ([("width", 64), ("width", 128)], "width"),
    ({"ckpt_name": "a" * 3000}, "query"),
]


@pytest.mark.parametrize("query,param", BAD, ids=[f"{p}-{i}" for i, (_, p) in enumerate(BAD)])
def test_each_bad_value_is_refused_with_a_message_naming_it(comfy_server, query, param):
    status, body = hint(comfy_server, query)
    assert status == 400, body
    assert body["ok"] is False
    assert param in body["message"], body
    assert set(body["errors"]) == {param}, body
    assert param in body["errors"][param]


def test_every_bad_value_of_one_request_gets_its_own_message(comfy_server):
    status, body = hint(comfy_server, {"width": -1, "height": 2**40, "batch": -2, "shift": "nan", "fit": "?",
                                       "ckpt_name": "../x.safetensors"})
    assert status == 400
    assert set(body["errors"]) == {"width", "height", "batch", "shift", "fit", "ckpt_name"}
    assert all(name in body["message"] for name in body["errors"])


def test_the_hint_describes_the_wired_model_and_shift(comfy_server):
    size = {"width": 64, "height": 64, "batch": 4, "ckpt_name": SHAPES}
    # The shapes demo: ModelSamplingAuraFlow at 1.0 between the loader and the sampler.
    status, body = hint(comfy_server, {**size, "shift_from": "ModelSamplingAuraFlow", "shift": 1.0})
    assert status == 200 and body["ok"], body
    assert body["shift"] == 1.0 and body["shift_from"] == "ModelSamplingAuraFlow" and body["model_known"]
    assert "shift 1 (set by ModelSamplingAuraFlow" in body["text"]
    # the shipped shapes model: patch 8 and the 0.5K head, so 4096 tokens at 512x512
    assert "64x64 -> 8x8 = 64 tokens (patch 8, head 0.5k)" in body["text"]
    assert "shift 1 (set by ModelSamplingAuraFlow; native 512x512)" in body["text"]
    assert f"model {SHAPES}: Z-Image L2P, native 512x512, default shift 3" in body["text"]
    assert body["tokens"] == [8, 8] and body["native"] == [512, 512]
    # L2PNoiseShift auto: the resolution-aware shift of the node, from the file's patch.
    _, auto = hint(comfy_server, {**size, "shift_from": "L2PNoiseShift", "mode": "auto", "shift": 3})
    assert auto["shift"] == pytest.approx(3 * 64 / 512)
    assert "shift 0.375 (L2PNoiseShift auto: 3 x sqrt(64x64 / 512x512))" in auto["text"]
    # A sampler fed straight from the loader: the model's default (Z-Image: 3), whatever shift is sent.
    _, default = hint(comfy_server, {**size, "shift_from": "model", "shift": 7})
    assert default["shift"] == 3.0
    assert "shift 3 (the model's default: no shift node between loader and sampler)" in default["text"]
    # Nothing wired: the assumption is spelled out.
    _, assumed = hint(comfy_server, {"width": 64, "height": 64})
    assert assumed["ok"] and assumed["model_known"] is False and assumed["shift"] == 3.0
    assert "assuming a 1K Z-Image L2P model (patch 16, native 1024x1024, shift 3): no L2P checkpoint wired" \
        in assumed["text"]
    assert "shift 3 (assumed: no sampler wired)" in assumed["text"]


def test_a_listed_file_that_is_not_l2p_is_named_as_assumed(comfy_server):
    path = comfy_server.models_dir / "l2p" / "hints-route-not-l2p.safetensors"
    save_file({"placeholder": __import__("torch").zeros(1)}, str(path))
    try:
        status, body = hint(comfy_server, {"width": 64, "height": 64, "ckpt_name": path.name})
        assert status == 200 and body["ok"] and body["model_known"] is False
        assert f"{path.name} is not readable as an L2P checkpoint" in body["text"]
        assert str(comfy_server.models_dir) not in body["text"]  # the server's folders stay private
    finally:
        path.unlink()


def test_a_size_the_node_rejects_is_a_message_not_an_error(comfy_server):
    status, body = hint(comfy_server, {"width": 100, "height": 64})
    assert status == 200 and body == {"ok": False, "message": body["message"]}
    assert "width 100 is not a multiple of 16" in body["message"]


def test_the_largest_valid_request_is_quick_and_finite(comfy_server):
    started = time.monotonic()
    status, body = hint(comfy_server, {"width": 16384, "height": 16384 - 1, "batch": MAX_BATCH, "fit": "snap up",
                                       "shift_from": "L2PNoiseShift", "mode": "auto", "shift": 100})
    assert time.monotonic() - started < ROUTE_TIMEOUT_S  # in time, so answered (about 5 s on a slow 2-core CPU)
    assert status == 200 and body["ok"], body
    assert all(math.isfinite(v) for v in (body["shift"], body["head_bytes"], body["tile"]))


HOSTILE = [
    "width=33554432", "width=-7", "width=0&height=0", "height=1" + "0" * 40, "batch=-100", "batch=99999999",
    "shift=nan", "shift=inf", "shift=-Infinity", "shift=1e999", "width=%00", "width=%F0%9F%92%A5", "preset=%2e%2e",
    "ckpt_name=..%2F..%2F..%2Fetc%2Fpasswd", "ckpt_name=%2Fproc%2Fself%2Fenviron", "fit=snap&fit=snap",
    "a=" + "b" * 1500, "width=16384&height=16384&batch=4096&fit=snap%20up", "width=16383&height=16368&fit=snap%20up",
    "width=abc&height=def&batch=ghi&shift=jkl", "&&&&&===&&", "shift_from=%3Cscript%3E",
]


def test_a_flood_of_hostile_requests_never_stalls_the_server(comfy_server):
    """1000 hostile requests from 4 threads while another thread polls /system_stats every ~50 ms: every poll
    answers within 1 s, every hint is strict JSON and none is a 500."""
    stop = threading.Event()
    polls: list[float] = []
    failures: list[str] = []

    def poll():
        while not stop.is_set():
            started = time.monotonic()
            try:
                status, _ = get(comfy_server, "/system_stats", timeout=10)
                if status != 200:
                    failures.append(f"/system_stats answered {status}")
            except OSError as e:
                failures.append(f"/system_stats failed: {e}")
            polls.append(time.monotonic() - started)
            time.sleep(0.05)

    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def flood(offset: int):
        for i in range(250):
            query = HOSTILE[(offset + i) % len(HOSTILE)]
            try:
                status, text = get(comfy_server, f"/l2p/hints?{query}", timeout=30)
                json.loads(text, parse_constant=_no_constants)
                if status not in (200, 400, 503):
                    failures.append(f"{query[:60]}: HTTP {status}")
            except (OSError, ValueError) as e:
                failures.append(f"{query[:60]}: {e}")
                status = -1
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.2)
    started = time.monotonic()
    workers = [threading.Thread(target=flood, args=(k * 5,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    stop.set()
    poller.join()
    worst = max(polls)
    print(f"\n/l2p/hints flood: 1000 requests in {elapsed:.1f} s, statuses {statuses}; "
          f"{len(polls)} /system_stats polls, worst {worst * 1000:.0f} ms, "
          f"median {sorted(polls)[len(polls) // 2] * 1000:.0f} ms")
    assert not failures, failures[:10]
    assert sum(statuses.values()) == 1000 and statuses.get(400, 0) >= 700, statuses
    assert len(polls) >= 10
    assert worst < 1.0, f"/system_stats took {worst:.2f} s during the flood"
