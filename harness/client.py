"""Client for any running ComfyUI server, local or remote (HTTP + websocket): queue API-format prompts, wait
for them, read the outcome and fetch output files. The dataset driver (dataset/make.py) uses it as is against
users' servers; harness/server.py subclasses it to launch a local throw-away ComfyUI for the tests, the demo and
the replication. Graphs are edited with harness/graph.py before they are queued.

This is the one place that reads ComfyUI's execution events (facts from ComfyUI 0.3.75 execution.py / main.py):

* websocket messages ``{"type": kind, "data": {..., "prompt_id"}}`` to our client_id. ``executing`` with
  ``node`` None, ``execution_error`` and ``execution_interrupted`` end a prompt; the rest (``execution_start``,
  ``execution_cached``, ``progress``, ``executed``, ``execution_success``) are only kept in RunResult.events.
* the history entry (``GET /history/<prompt_id>``), the source of truth: ``outputs`` per node, and ``status``
  with ``status_str`` ("success"/"error") and ``messages`` as ``[kind, data]`` pairs, which keep the
  ``execution_error`` payload (node_id, node_type, exception_message, traceback). History is written before
  the final ``executing`` (node None) message is sent.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Called with (kind, data) for each websocket event of the prompt being waited on, as it arrives (progress display).
EventCallback = Callable[[str, dict[str, Any]], None]


class ComfyServerError(RuntimeError):
    """The server process failed to start, died, or did not answer in time; the message carries the log tail."""


class PromptRejected(RuntimeError):
    """POST /prompt answered an error (HTTP 400 from validation): ComfyUI's ``error`` and ``node_errors``."""

    def __init__(self, status: int, error: Any, node_errors: dict[str, Any]) -> None:
        self.status = status
        self.error = error
        self.node_errors = node_errors
        super().__init__(self.text)

    @property
    def text(self) -> str:
        """Readable one-liner: the top-level error, then each node error as ``node ID (Class): type: msg [details]``."""
        parts = [_describe_error(self.error)] if self.error else []
        for node_id, entry in (self.node_errors or {}).items():
            class_type = entry.get("class_type", "?") if isinstance(entry, dict) else "?"
            errors = entry.get("errors", []) if isinstance(entry, dict) else [entry]
            parts.extend(f"node {node_id} ({class_type}): {_describe_error(err)}" for err in errors)
        return f"prompt rejected (HTTP {self.status}): " + "; ".join(parts)


def _describe_error(err: Any) -> str:
    if not isinstance(err, dict):
        return str(err)
    details = err.get("details") or ""
    return f"{err.get('type', '')}: {err.get('message', '')}" + (f" [{details}]" if details else "")


@dataclass
class RunResult:
    """Outcome of one executed prompt, built from the history entry (the source of truth)."""

    prompt_id: str
    status: str  # "success", "error" or "interrupted"
    history: dict[str, Any]
    error: dict[str, Any] | None = None  # the execution_error payload: node_id, node_type, exception_*, traceback
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # websocket events seen for this prompt
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def error_message(self) -> str | None:
        """``ExceptionType: message`` of the node that raised, as ComfyUI reports it; None on success."""
        if self.error is None:
            return None
        return f"{self.error.get('exception_type', '')}: {self.error.get('exception_message', '')}".strip(": ")

    @property
    def outputs(self) -> dict[str, Any]:
        return self.history.get("outputs", {})

    def describe(self) -> str:
        """Short text for assertion messages."""
        if self.ok:
            return f"prompt {self.prompt_id}: success in {self.seconds:.1f}s"
        node = f" in node {self.error.get('node_id')} ({self.error.get('node_type')})" if self.error else ""
        tb = "".join(self.error.get("traceback", [])) if self.error else ""
        return f"prompt {self.prompt_id}: {self.status}{node}: {self.error_message}\n{tb}"


class ComfyClient:
    """Talks to the ComfyUI server at ``url`` (e.g. http://127.0.0.1:8188)."""

    def __init__(self, url: str, client_id: str | None = None) -> None:
        self._url = url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex

    @property
    def url(self) -> str:
        return self._url

    @property
    def running(self) -> bool:
        """Whether the server can still answer (a harness that owns the process knows better)."""
        return True

    def log_tail(self, lines: int = 60) -> str:
        """Diagnostics appended to errors (the harness adds the server log)."""
        return ""

    def view(self, image: dict[str, Any], timeout: float = 60.0) -> bytes:
        """The bytes of one output file listed in a result (``{"filename", "subfolder", "type"}``) via /view."""
        query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        try:
            with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=timeout) as resp:
                return resp.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            raise ComfyServerError(f"GET /view {image.get('filename')} failed: {err}") from err

    # --------------------------------------------------------------------------------------------------- HTTP

    def _request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            raise ComfyServerError(f"{method} {path} failed: {err}\n{self.log_tail()}".rstrip()) from err
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        status, payload = self._request("GET", path, timeout=timeout)
        if status != 200:
            raise ComfyServerError(f"GET {path} -> HTTP {status}: {payload}")
        return payload

    def object_info(self) -> dict[str, Any]:
        """GET /object_info: every registered node type with its inputs/outputs."""
        return self.get_json("/object_info", timeout=60)

    def node_types(self) -> set[str]:
        return set(self.object_info())

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of a finished prompt, or None while it is queued/running."""
        return self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)

    def queue(self, prompt: dict[str, Any]) -> str:
        """POST /prompt (API format) with our client_id; return the prompt_id or raise PromptRejected."""
        status, payload = self._request("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})
        if status != 200 or not isinstance(payload, dict) or "prompt_id" not in payload:
            error = payload.get("error") if isinstance(payload, dict) else payload
            node_errors = payload.get("node_errors", {}) if isinstance(payload, dict) else {}
            raise PromptRejected(status, error, node_errors)
        return str(payload["prompt_id"])

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt and drop ``prompt_id`` from the queue (used after a wait() timeout)."""
        self._request("POST", "/interrupt", {"prompt_id": prompt_id} if prompt_id else {})
        if prompt_id:
            self._request("POST", "/queue", {"delete": [prompt_id]})

    # ---------------------------------------------------------------------------------------------- websocket

    def _connect_ws(self, timeout: float = 10.0) -> Any:
        import websocket  # websocket-client; imported here so a missing package names itself clearly

        ws_url = "ws" + self.url[len("http"):] if self.url.startswith("http") else f"ws://{self.url}"
        return websocket.create_connection(f"{ws_url}/ws?clientId={self.client_id}", timeout=timeout)

    def wait(
        self, prompt_id: str, timeout: float = 300.0, *, on_event: EventCallback | None = None, _ws: Any = None
    ) -> RunResult:
        """Block until ``prompt_id`` finished (websocket events, history as the fallback); at most ``timeout`` s.

        ``on_event(kind, data)`` sees each of the prompt's events as it arrives (e.g. ``progress`` with ``value``
        and ``max``, the sampler's steps); it only watches, the result is the same without it.

        On timeout the prompt is interrupted/deleted so the server stays usable, and TimeoutError is raised.
        """
        import websocket

        start = time.monotonic()
        deadline = start + timeout
        events: list[tuple[str, dict[str, Any]]] = []
        ws = _ws if _ws is not None else self._connect_ws()
        try:
            ws.settimeout(1.0)
            while True:
                entry = self.history(prompt_id)
                if entry is not None:
                    self._drain(ws, prompt_id, events, on_event)
                    return self._result(prompt_id, entry, events, time.monotonic() - start)
                if not self.running:
                    raise ComfyServerError(f"ComfyUI died while running prompt {prompt_id}\n{self.log_tail()}")
                if time.monotonic() >= deadline:
                    with contextlib.suppress(ComfyServerError):
                        self.interrupt(prompt_id)
                    raise TimeoutError(f"prompt {prompt_id} not finished after {timeout:.0f}s\n{self.log_tail()}")
                # Read events until ours finishes or a 1 s lull, then re-check history/process/deadline above.
                while time.monotonic() < deadline:
                    try:
                        event = self._receive(ws, prompt_id)
                    except websocket.WebSocketTimeoutException:
                        break
                    except (websocket.WebSocketException, OSError):
                        time.sleep(0.5)  # connection lost: keep polling history until the deadline
                        break
                    if event is None:
                        continue
                    events.append(event)
                    if on_event is not None:
                        on_event(*event)
                    if self._is_last(event):
                        break  # history is written before "executing None"; for errors it follows at once
        finally:
            with contextlib.suppress(Exception):
                ws.close()

    @staticmethod
    def _receive(ws: Any, prompt_id: str) -> tuple[str, dict[str, Any]] | None:
        """The next websocket message as (type, data) when it is one of ``prompt_id``'s events, else None
        (binary previews, other prompts). Raises the websocket's timeout and connection errors."""
        raw = ws.recv()
        if not isinstance(raw, str):
            return None
        msg = json.loads(raw)
        kind, data = msg.get("type", ""), msg.get("data") or {}
        return (kind, data) if data.get("prompt_id") == prompt_id else None

    def _drain(self, ws: Any, prompt_id: str, events: list[tuple[str, dict[str, Any]]],
               on_event: EventCallback | None, wait: float = 0.5) -> None:
        """The prompt's events still in flight once history has it (it is written before the last ones are
        sent), up to its final ``executing None``, so ``on_event`` and ``events`` see the whole run."""
        import websocket

        if events and self._is_last(events[-1]):
            return
        deadline = time.monotonic() + wait
        with contextlib.suppress(websocket.WebSocketException, OSError):
            ws.settimeout(wait)
            while time.monotonic() < deadline:
                event = self._receive(ws, prompt_id)
                if event is not None:
                    events.append(event)
                    if on_event is not None:
                        on_event(*event)
                    if self._is_last(event):
                        return

    @staticmethod
    def _is_last(event: tuple[str, dict[str, Any]]) -> bool:
        """The run's last event: ``executing None`` (sent after history is written), or an error or interrupt."""
        kind, data = event
        return kind in ("execution_error", "execution_interrupted") or (
            kind == "executing" and data.get("node") is None)

    @staticmethod
    def _result(
        prompt_id: str, entry: dict[str, Any], events: list[tuple[str, dict[str, Any]]], secs: float
    ) -> RunResult:
        status_block = entry.get("status") or {}
        messages = [(m[0], m[1]) for m in status_block.get("messages", []) if isinstance(m, list) and len(m) == 2]
        error = next((d for k, d in messages + events if k == "execution_error"), None)
        interrupted = any(k == "execution_interrupted" for k, _ in messages + events)
        if interrupted:
            status = "interrupted"
        elif error is not None or status_block.get("status_str") == "error":
            status = "error"
        else:
            status = "success"
        return RunResult(prompt_id=prompt_id, status=status, history=entry, error=error, events=events, seconds=secs)

    def run(
        self, prompt: dict[str, Any], timeout: float = 300.0, *, on_event: EventCallback | None = None
    ) -> RunResult:
        """Queue and wait (``on_event`` as in ``wait``); the websocket is opened first so no event is missed."""
        ws = self._connect_ws()
        try:
            prompt_id = self.queue(prompt)
        except BaseException:
            ws.close()
            raise
        return self.wait(prompt_id, timeout, on_event=on_event, _ws=ws)
