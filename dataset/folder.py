"""The synthetic dataset on disk: ``NNNNN.png`` + ``NNNNN.txt`` (+ ``NNNNN.cond.safetensors``) and
``metadata.jsonl``, written so that a stopped run loses nothing and a rerun resumes.

The layout is what ComfyUI's own dataset nodes read (an image and a caption file with the same stem) and
what common trainers read (diffusers' image folder: ``metadata.jsonl`` with ``file_name`` and ``text``;
kohya / SimpleTuner: png + txt). Each file is written atomically (``atomic_file``, the pack's one writer);
the item's line in ``metadata.jsonl`` is appended last, under a lock, and is the completion marker: an index
with a line is complete and is never rewritten; an index without one (a run stopped mid-item) is written again.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

try:  # inside ComfyUI dataset/ is a sub-package of the pack; outside (training, tests, dataset.make) top-level
    from ..l2p.format.atomic import atomic_file
except ImportError:
    from l2p.format.atomic import atomic_file

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
            row["conditioning"] = f"{self.stem}.cond.safetensors"
        return json.dumps(row, ensure_ascii=False)


class ItemConflict(ValueError):
    """An index that is already complete with a different prompt or seed: never overwritten silently."""


def _write_atomic(path: str, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


@contextmanager
def _locked(root: str) -> Iterator[None]:
    """An exclusive lock across processes (several ComfyUI servers may write into one folder)."""
    with open(os.path.join(root, LOCK), "a+b") as f:
        try:
            import fcntl
        except ImportError:  # Windows: appends of one short line are still atomic enough in practice
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class DatasetWriter:
    """Writes items into ``root``; ``write`` returns False when the item is already there (resume)."""

    def __init__(self, root: str):
        self.root = root
        try:
            os.makedirs(root, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe-", delete=True)
            probe.close()
        except OSError as e:
            raise ValueError(f"cannot write to dataset folder {root} ({e.strerror}): pick a writable folder") from None
        self._rows: dict[int, dict] = {}
        self._offset = 0

    def complete(self) -> dict[int, dict]:
        """index -> metadata row of every complete item; reads only what other writers appended since."""
        self._offset = _read_rows(os.path.join(self.root, METADATA), self._rows, self._offset)
        return self._rows

    def write(self, item: DatasetItem, png: bytes, conditioning: bytes | None = None) -> bool:
        done = self.complete().get(item.index)
        if done is not None:
            if done.get("text") != item.text or done.get("seed") != item.seed:
                raise ItemConflict(f"item {item.stem} in {self.root} already exists with another prompt or seed: "
                                   "write into a new folder, or delete the item to regenerate it")
            return False
        _write_atomic(os.path.join(self.root, f"{item.stem}.png"), png)
        _write_atomic(os.path.join(self.root, f"{item.stem}.txt"), item.text.encode("utf-8"))
        if conditioning is not None:
            _write_atomic(os.path.join(self.root, f"{item.stem}.cond.safetensors"), conditioning)
        line = (item.metadata_line(conditioning is not None) + "\n").encode("utf-8")
        with _locked(self.root):
            if item.index in self.complete():  # another writer finished the same index meanwhile
                return False
            path = os.path.join(self.root, METADATA)
            _repair_torn_tail(path)
            with open(path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        return True


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


CONDITIONING_KEY = "cap_feats"  # what training.data reads from NNNNN.cond.safetensors


def conditioning_file_bytes(features) -> bytes:
    """A prompt's text features ``[tokens, width]`` (no padding) as the ``NNNNN.cond.safetensors`` payload."""
    import torch
    from safetensors.torch import save

    return save({CONDITIONING_KEY: features.detach().to("cpu", torch.float32).contiguous()})
