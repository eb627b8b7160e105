"""Launch a local, throw-away headless ComfyUI (its own temp base directory) and drive it as a ComfyClient.

Used by the tests (tests/conftest.py), the demo (scripts/demo.py) and the replication
(bench/replicate/comfy_dataset.py), so that all of them exercise the pack exactly the way a user's ComfyUI loads
it: the repository is symlinked into ``<base>/custom_nodes/ComfyUI-L2P`` and ComfyUI's own loader imports it.
Nothing is mocked. Every wait is bounded; only 127.0.0.1 is used. Talking to the server (queue, wait, results,
event parsing) is harness/client.py's job; a server someone else runs needs only the client.

ComfyUI 0.3.75 facts this relies on (read from its main.py / folder_paths.py / cli_args.py):

* ``--base-directory B`` sets models/, custom_nodes/, input/, output/, temp/ and user/ under B, and
  custom_nodes/ under B *is* scanned (symlinked pack folders load fine).
* The sqlite app database does NOT follow ``--base-directory`` (its default is ``<ComfyUI>/user/comfyui.db``),
  so we pass ``--database-url`` pointing into B to keep servers isolated and the ComfyUI copy clean.
* Nodes (custom ones included) are imported before the HTTP server listens: the first 200 from
  ``/system_stats`` means every node is registered.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

try:
    from harness.comfyui_home import REPO, comfyui_home
except ImportError:  # run as a plain file (python harness/server.py): harness/ itself is on sys.path
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from harness.comfyui_home import REPO, comfyui_home
from harness.client import ComfyClient, ComfyServerError, PromptRejected, RunResult

__all__ = ["ComfyServer", "ComfyServerError", "PromptRejected", "RunResult", "free_port"]

HOST = "127.0.0.1"
PACK_NAME = "ComfyUI-L2P"
# Model folders created up front, so loaders list them (empty) and tests can drop files in by folder name.
MODEL_FOLDERS = (
    "checkpoints",
    "clip_vision",
    "configs",
    "diffusion_models",
    "l2p",
    "loras",
    "text_encoders",
    "upscale_models",
    "vae",
)


def free_port() -> int:
    """A port the kernel says is free on loopback now (tiny race until ComfyUI binds it; start() retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ComfyServer(ComfyClient):
    """One ComfyUI subprocess with its own temp base directory; use as a context manager.

    ``pack``: folder symlinked into custom_nodes/ (default: this repository); None runs stock ComfyUI only.
    ``extra_args``: more ComfyUI CLI arguments (e.g. ``["--verbose", "DEBUG"]``).
    ``keep``: keep the base directory after stop() (also when $L2P_KEEP_COMFY=1), for post-mortems.
    """

    def __init__(
        self,
        *,
        comfy_dir: pathlib.Path | None = None,
        pack: pathlib.Path | None = REPO,
        python: str = sys.executable,
        cpu: bool = True,
        disable_api_nodes: bool = True,
        extra_args: Sequence[str] = (),
        base_dir: pathlib.Path | None = None,
        keep: bool | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        self.comfy_dir = pathlib.Path(comfy_dir) if comfy_dir else comfyui_home()
        if not (self.comfy_dir / "main.py").is_file():
            raise ComfyServerError(f"no ComfyUI at {self.comfy_dir}: run scripts/setup.sh or set COMFYUI_PATH")
        self.pack = pathlib.Path(pack).resolve() if pack is not None else None
        self.python = python
        self.cpu = cpu
        self.disable_api_nodes = disable_api_nodes
        self.extra_args = list(extra_args)
        self.keep = keep if keep is not None else os.environ.get("L2P_KEEP_COMFY") == "1"
        self.startup_timeout = startup_timeout
        self._own_base = base_dir is None
        # ComfyUI derives module names from the path with "." replaced: keep the base path dot-free.
        self.base_dir = pathlib.Path(base_dir) if base_dir else pathlib.Path(tempfile.mkdtemp(prefix="comfy_l2p_"))
        self.models_dir = self.base_dir / "models"
        self.input_dir = self.base_dir / "input"
        self.output_dir = self.base_dir / "output"
        self.temp_dir = self.base_dir / "temp"
        self.custom_nodes_dir = self.base_dir / "custom_nodes"
        self.log_path = self.base_dir / "comfyui.log"
        self.port = 0
        ComfyClient.__init__(self, "")  # the URL follows the port chosen at start()
        self.startup_seconds = 0.0
        self._started_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._final_log: str | None = None
        self._layout()
        atexit.register(self.stop)  # removes the temp base even if start() is never reached or fails

    # ----------------------------------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _layout(self) -> None:
        for sub in MODEL_FOLDERS:
            (self.models_dir / sub).mkdir(parents=True, exist_ok=True)
        for d in (self.input_dir, self.output_dir, self.temp_dir, self.custom_nodes_dir, self.base_dir / "user"):
            d.mkdir(parents=True, exist_ok=True)
        if self.pack is not None:
            link = self.custom_nodes_dir / PACK_NAME
            if not link.exists() and not link.is_symlink():
                link.symlink_to(self.pack, target_is_directory=True)

    def command(self) -> list[str]:
        """The exact argument list used to start ComfyUI (no shell)."""
        args = [
            self.python,
            str(self.comfy_dir / "main.py"),
            "--listen",
            HOST,
            "--port",
            str(self.port),
            "--base-directory",
            str(self.base_dir),
            "--database-url",
            f"sqlite:///{self.base_dir / 'user' / 'comfyui.db'}",
            "--disable-auto-launch",
        ]
        if self.cpu:
            args.append("--cpu")
        if self.disable_api_nodes:
            args.append("--disable-api-nodes")
        return args + self.extra_args

    def start(self) -> ComfyServer:
        """Start the server and block until it answers (bounded by startup_timeout); retry if the port was taken."""
        if self.running:
            return self
        for attempt in range(3):
            self.port = free_port()
            self._spawn()
            try:
                self._wait_ready()
                return self
            except ComfyServerError:
                port_taken = "address already in use" in self.log_text().lower()
                self._terminate()
                if not port_taken or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"  # prints from custom nodes reach the log in order
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        self._log_file = open(self.log_path, "ab")  # closed in _terminate()
        self._log_file.write(f"$ {' '.join(self.command())}\n".encode())
        self._log_file.flush()
        self._final_log = None
        self._started_at = time.monotonic()
        self._proc = subprocess.Popen(  # fixed argument list, no shell
            self.command(),
            cwd=self.comfy_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C in pytest reaches us, not the server: we stop it ourselves
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self.running:
                code = self._proc.returncode if self._proc else None
                raise ComfyServerError(f"ComfyUI exited with code {code} during startup\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/system_stats", timeout=2) as resp:
                    if resp.status == 200:
                        self.startup_seconds = time.monotonic() - self._started_at
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        raise ComfyServerError(f"ComfyUI did not answer within {self.startup_timeout:.0f}s\n{self.log_tail()}")

    def _terminate(self, grace: float = 10.0) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self, grace: float = 10.0) -> None:
        """Terminate (then kill after ``grace`` s); keep the log text; remove our temp base unless ``keep``.

        Idempotent, and also registered with atexit so an aborted test session leaves no server behind.
        """
        self._terminate(grace)
        self._proc = None
        if self.log_path.exists():
            with contextlib.suppress(OSError):
                self._final_log = self.log_path.read_text(errors="replace")
        if self._own_base and not self.keep:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> ComfyServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --------------------------------------------------------------------------------------------------- logs

    def log_text(self) -> str:
        """Everything ComfyUI printed so far (still readable after stop() removed the base directory)."""
        if self._final_log is not None and not self.log_path.exists():
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return self._final_log or ""

    def log_tail(self, lines: int = 60) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- ComfyUI log ({self.log_path}), last {lines} lines ---\n{tail}"

    def import_failures(self) -> list[str]:
        """Custom-node folders ComfyUI reported as ``(IMPORT FAILED)`` (the pack's own import errors show here)."""
        return [
            line.split("(IMPORT FAILED):", 1)[1].strip()
            for line in self.log_text().splitlines()
            if "(IMPORT FAILED):" in line
        ]

    # ------------------------------------------------------------------------------------------------- files

    def output_images(self, result: RunResult, types: Iterable[str] = ("output",)) -> list[pathlib.Path]:
        """Files listed under ``images`` in the result's outputs, resolved into output/ (temp/, input/ if asked)."""
        roots = {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}
        wanted = set(types)
        paths: list[pathlib.Path] = []
        for node_out in result.outputs.values():
            for img in node_out.get("images", []) if isinstance(node_out, dict) else []:
                kind = img.get("type", "output")
                if kind not in wanted or kind not in roots:
                    continue
                root = roots[kind].resolve()
                path = (root / img.get("subfolder", "") / img["filename"]).resolve()
                if not path.is_relative_to(root):
                    raise ComfyServerError(f"output path escapes {root}: {path}")
                paths.append(path)
        return paths

    def add_model(self, src: pathlib.Path, folder: str, *, link: bool = True) -> pathlib.Path:
        """Put a model file (or folder) into models/<folder>/: symlink by default (no copy of big weights)."""
        dest_dir = self.models_dir / folder
        dest_dir.mkdir(parents=True, exist_ok=True)
        src = pathlib.Path(src).resolve()
        dest = dest_dir / src.name
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.is_dir():
            shutil.rmtree(dest)
        if link:
            dest.symlink_to(src, target_is_directory=src.is_dir())
        elif src.is_dir():
            shutil.copytree(src, dest)
        else:
            shutil.copy2(src, dest)
        return dest


if __name__ == "__main__":
    # Smoke check: python -m harness.server  -> starts, reports, stops.
    with ComfyServer() as srv:
        print(f"ComfyUI {srv.url} ready in {srv.startup_seconds:.1f}s; {len(srv.node_types())} node types")
        print(f"import failures: {srv.import_failures() or 'none'}")
