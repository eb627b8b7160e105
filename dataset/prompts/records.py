"""Prompt records and their JSON Lines file: the hand-off between prompt building and image synthesis.

One record per line keeps a 10k bank diffable and streamable; the per-record seed makes every image
reproducible (the official dataset also stores one seed per image). Writes are atomic so an interrupted run
never leaves a half-written bank behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass

try:  # inside ComfyUI dataset/ is a sub-package of the pack; outside (training, tests, dataset.make) top-level
    from ...l2p.format.atomic import atomic_file
except ImportError:
    from l2p.format.atomic import atomic_file


@dataclass(frozen=True)
class PromptRecord:
    """One prompt: its position in the bank, its category path ("major/sub/name"), the text and its seed."""

    index: int
    category: str
    prompt: str
    seed: int

    def to_json(self) -> str:
        """One JSON object on one line (UTF-8 text kept as is)."""
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> PromptRecord:
        """Parse one line; ``ValueError`` says what is wrong with it. Unknown keys are ignored."""
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        missing = [key for key in ("index", "category", "prompt", "seed") if key not in data]
        if missing:
            raise ValueError(f"missing key(s) {', '.join(missing)}")
        for key in ("index", "seed"):
            if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 0:
                raise ValueError(f"{key!r} must be a non-negative integer, got {data[key]!r}")
        for key in ("category", "prompt"):
            if not isinstance(data[key], str):
                raise ValueError(f"{key!r} must be a string, got {type(data[key]).__name__}")
        if not data["category"]:
            raise ValueError("'category' is empty")
        return cls(data["index"], data["category"], data["prompt"], data["seed"])


def write_jsonl(path: str, records: Iterable[PromptRecord]) -> int:
    """Write records atomically (``atomic_file``: a bank is complete or absent); returns how many."""
    count = 0
    with atomic_file(path, "w", prefix=f".{os.path.basename(path)}.", suffix=".tmp", encoding="utf-8",
                     newline="\n") as f:
        for record in records:
            f.write(record.to_json() + "\n")
            count += 1
    return count


def read_jsonl(path: str) -> list[PromptRecord]:
    """Read a bank; a bad line raises ``ValueError("<path>:<line>: <problem>")``. Blank lines are skipped."""
    records = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    records.append(PromptRecord.from_json(line))
            except UnicodeDecodeError:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text") from None
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
    return records
