"""The synthetic dataset on disk: ``NNNNN.png`` + ``NNNNN.txt`` (+ ``NNNNN.cond.safetensors``) and
``metadata.jsonl``, written so that a stopped run loses nothing and a rerun resumes.

The layout is what ComfyUI's own dataset nodes read (an image and a caption file with the same stem) and
what common trainers read (diffusers' image folder: ``metadata.jsonl`` with ``file_name`` and ``text``;
kohya / SimpleTuner: png + txt). The item's line in ``metadata.jsonl`` is the completion marker: an index
with a line is complete and is never rewritten; an index without one (a run stopped mid-item) is written again.

Several writers may share one folder (the writer node in several ComfyUI servers, the headless driver's
threads, ``python -m dataset.make`` and a ComfyUI at once), so an item is written in two steps:

1. staging, with no lock held: each file is written (``atomic_file``, the pack's one writer) into a private
   ``.partial-NNNNN-*`` folder inside the dataset folder;
2. commit, under the folder's lock (``_locked``, one short critical section per item): read the lines other
   writers appended, then either give up (the index is complete: the same prompt and seed is a skip, another
   one is refused with ``ItemConflict``) or rename the staged files onto ``NNNNN.*`` and append the line.

Every rename onto an item's names happens under the lock in the same critical section as its line, so the
files of a complete item are exactly those of the writer whose line it is; a racing writer sees the item
complete or not at all, never a mix. The staging folder is removed in every case but a killed process.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

try:  # inside ComfyUI dataset/ is a sub-package of the pack; outside (training, tests, dataset.make) top-level
    from ..l2p.format.atomic import atomic_file
    from ..l2p.format.keys import CONDITIONING_KEY, CONDITIONING_SUFFIX
except ImportError:
    from l2p.format.atomic import atomic_file
    from l2p.format.keys import CONDITIONING_KEY, CONDITIONING_SUFFIX

METADATA = "metadata.jsonl"
LOCK = ".metadata.lock"


@dataclass(frozen=True)
class DatasetItem:
    index: int
    text: str
    seed: int
    category: str = ""
    width: int = 0
    height: int = 0
    extra: dict = field(default_factory=dict)  # e.g. batch_index, prompt_index, source model

    @property
    def stem(self) -> str:
        return f"{self.index:05d}"

    def metadata_line(self, has_conditioning: bool) -> str:
        row = {"file_name": f"{self.stem}.png", **asdict(self)}
        row.pop("extra")
        row.update(self.extra)
        if has_conditioning:
            row["conditioning"] = f"{self.stem}{CONDITIONING_SUFFIX}"
        return json.dumps(row, ensure_ascii=False)


class ItemConflict(ValueError):
    """An index that is already complete with a different prompt or seed: never overwritten silently."""


def _write_atomic(path: str, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(root: str) -> threading.Lock:
    """One in-process lock per folder (the driver's worker threads share a folder)."""
    key = os.path.realpath(root)
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(key, threading.Lock())


@contextmanager
def _locked(root: str) -> Iterator[None]:
    """An exclusive lock on ``root`` across threads and processes (several ComfyUI servers, the headless driver).

    POSIX: ``fcntl.flock`` on ``root/.metadata.lock``, held by the open file, so it is released when its holder
    exits or is killed (Linux NFS maps it onto a byte-range lock, which other NFS clients see too). Windows:
    ``msvcrt.locking`` on the lock file's first byte, also across processes. A platform with neither gets the
    in-process lock only: writers in one process are safe, writers in several processes are not.
    """
    with _thread_lock(root), open(os.path.join(root, LOCK), "a+b") as f:
        try:
            import fcntl
        except ImportError:
            fcntl = None
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
            return
        try:
            import msvcrt
        except ImportError:
            yield
            return
        while True:
            f.seek(0)
            try:
                msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)  # retries for about 10 s, then EDEADLOCK
                break
            except OSError as e:
                if e.errno != getattr(errno, "EDEADLOCK", errno.EDEADLK):
                    raise
        try:
            yield
        finally:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)


def _fsync_dir(path: str) -> None:
    """Make the renames into ``path`` durable before the item's line is (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class DatasetWriter:
    """Writes items into ``root``; ``write`` returns False when the item is already there (resume).

    ``on_staged``, when given, is called with each item after its files are staged and before the lock is
    taken for the commit: the point where two writers of one index race. Tests use it to replay races step
    by step; normal use leaves it None. One writer may be shared by threads.
    """

    def __init__(self, root: str, on_staged: Callable[[DatasetItem], None] | None = None):
        self.root = root
        self.on_staged = on_staged
        try:
            os.makedirs(root, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe-", delete=True)
            probe.close()
        except OSError as e:
            raise ValueError(f"cannot write to dataset folder {root} ({e.strerror}): pick a writable folder") from None
        self._rows: dict[int, dict] = {}
        self._offset = 0
        self._rows_lock = threading.Lock()
        _remove_dead_stages(root)

    def complete(self) -> dict[int, dict]:
        """index -> metadata row of every complete item; reads only what other writers appended since."""
        with self._rows_lock:
            self._offset = _read_rows(os.path.join(self.root, METADATA), self._rows, self._offset)
            return dict(self._rows)

    def _row(self, index: int) -> dict | None:
        with self._rows_lock:
            self._offset = _read_rows(os.path.join(self.root, METADATA), self._rows, self._offset)
            return self._rows.get(index)

    def _done(self, item: DatasetItem) -> bool:
        """True if ``item``'s index is complete with the same prompt and seed; ItemConflict if with others."""
        done = self._row(item.index)
        if done is None:
            return False
        if done.get("text") != item.text or done.get("seed") != item.seed:
            raise ItemConflict(f"item {item.stem} in {self.root} already exists with another prompt or seed: "
                               "write into a new folder, or delete the item to regenerate it")
        return True

    def write(self, item: DatasetItem, png: bytes, conditioning: bytes | None = None) -> bool:
        if self._done(item):  # the common resume case, without staging anything
            return False
        files = {f"{item.stem}.png": png, f"{item.stem}.txt": item.text.encode("utf-8")}
        if conditioning is not None:
            files[f"{item.stem}{CONDITIONING_SUFFIX}"] = conditioning
        line = (item.metadata_line(conditioning is not None) + "\n").encode("utf-8")
        stage = tempfile.mkdtemp(prefix=f"{_STAGE}{item.stem}-{_OWNER}-", dir=self.root)
        try:
            for name, data in files.items():
                _write_atomic(os.path.join(stage, name), data)
            if self.on_staged is not None:
                self.on_staged(item)
            with _locked(self.root):
                if self._done(item):  # another writer completed the index meanwhile (or refused above)
                    return False
                for name in files:
                    os.replace(os.path.join(stage, name), os.path.join(self.root, name))
                stale = os.path.join(self.root, f"{item.stem}{CONDITIONING_SUFFIX}")
                if conditioning is None and os.path.exists(stale):  # left by an earlier, unfinished writer
                    os.unlink(stale)
                _fsync_dir(self.root)
                path = os.path.join(self.root, METADATA)
                _repair_torn_tail(path)
                with open(path, "ab") as f:
                    f.write(line)
                    f.flush()
                    os.fsync(f.fileno())
            return True
        finally:
            shutil.rmtree(stage, ignore_errors=True)


_STAGE = ".partial-"
_OWNER = f"{socket.gethostname().replace('-', '_')}-{os.getpid()}"  # in each staging folder's name


def _remove_dead_stages(root: str) -> None:
    """Remove staging folders left by writers on this machine that were killed before their commit (a resumed
    run would otherwise keep them forever); live writers' and other machines' folders are left alone."""
    host = _OWNER.split("-")[0]
    for name in os.listdir(root):
        parts = name[len(_STAGE):].split("-") if name.startswith(_STAGE) else []
        if len(parts) != 4 or parts[1] != host or not parts[2].isdigit():
            continue
        try:
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:  # its writer is gone
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except OSError:  # alive, or not ours to signal
            continue


def _repair_torn_tail(path: str) -> None:
    """Cut a final line without its newline (a writer killed mid-append) so the next line starts clean."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _read_rows(path: str, rows: dict[int, dict], offset: int) -> int:
    """Add the complete lines after ``offset`` to ``rows``; return the offset after the last complete line."""
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        if offset > os.fstat(f.fileno()).st_size:  # the file was repaired or replaced: read it again
            rows.clear()
            offset = 0
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # a torn tail (writer killed mid-append) is not a complete item
    for line in data[:end].splitlines():
        try:
            row = json.loads(line)
            rows[int(row["index"])] = row
        except (ValueError, KeyError, TypeError):
            continue
    return offset + end


def read_metadata(root: str) -> dict[int, dict]:
    """index -> metadata row of every complete item in ``root``."""
    rows: dict[int, dict] = {}
    _read_rows(os.path.join(root, METADATA), rows, 0)
    return rows


def png_bytes(image) -> bytes:
    """A PIL image -> PNG bytes."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()




def conditioning_file_bytes(features) -> bytes:
    """A prompt's text features ``[tokens, width]`` (no padding) as the ``NNNNN.cond.safetensors`` payload."""
    import torch
    from safetensors.torch import save

    return save({CONDITIONING_KEY: features.detach().to("cpu", torch.float32).contiguous()})
