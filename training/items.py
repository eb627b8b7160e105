"""The items of a training folder, whatever its layout: image, caption, where its conditioning is cached, seed.

Three layouts are read, told apart by the folder itself:

- **this pack's dataset folder** (the L2P Dataset Writer node, ``python -m dataset.make``): ``metadata.jsonl``
  lines with ``index``, ``file_name``, ``text``, ``seed`` and, where it was cached, ``conditioning``;
- **diffusers' imagefolder**: ``metadata.jsonl`` lines with ``file_name`` and a caption column (``text``,
  ``caption`` or ``prompt``), no ``index``; the line number is the item's index and seed;
- **an image + caption folder** (kohya, ai-toolkit, OneTrainer): ``name.png|jpg|jpeg|webp`` beside
  ``name.txt``, in nested folders too (sorted paths; hidden folders such as the writer's staging are skipped).

An item's conditioning is ``<image stem>.cond.safetensors`` beside its image unless its line names one; the
trainer caches what is missing (training/text_cache.py). What cannot be an item (no caption file, an empty
caption, a line without a file name, a path outside the folder) is skipped with its reason, never fatal here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from dataset.folder import METADATA, read_metadata
from l2p.format.keys import CONDITIONING_SUFFIX
from l2p.format.keys import IMAGE_SUFFIXES as IMAGE_EXTENSIONS

CAPTION_COLUMNS = ("text", "caption", "prompt")  # diffusers' imagefolder convention first


@dataclass(frozen=True)
class Item:
    index: int
    name: str  # the image's path relative to the folder (what messages name)
    image: str
    caption: str
    conditioning: str  # where its features are (or will be) cached
    seed: int


@dataclass(frozen=True)
class Skipped:
    name: str
    why: str


@dataclass(frozen=True)
class Listing:
    layout: str  # "l2p dataset", "imagefolder" or "image + caption files"
    items: list[Item]
    skipped: list[Skipped]


def conditioning_path(image: str) -> str:
    return os.path.splitext(image)[0] + CONDITIONING_SUFFIX


def list_items(root: str) -> Listing:
    """Every usable item of ``root`` and what was skipped, in the folder's own order."""
    metadata = os.path.join(root, METADATA)
    if os.path.isfile(metadata):
        rows = read_metadata(root)
        if rows:
            return _pack_items(root, rows)
        return _imagefolder_items(root, metadata)
    return _caption_file_items(root)


def _inside(root: str, name: str) -> str | None:
    """The absolute path of ``root/name`` when it stays inside ``root`` (a line cannot point elsewhere)."""
    base = os.path.abspath(root)
    path = os.path.abspath(os.path.join(base, name))
    return path if os.path.commonpath([base, path]) == base else None


def _pack_items(root: str, rows: dict[int, dict]) -> Listing:
    items, skipped = [], []
    for index in sorted(rows):
        row = rows[index]
        name = str(row.get("file_name") or "")
        image = _inside(root, name) if name else None
        if image is None:
            skipped.append(Skipped(f"{index:05d}", "its metadata.jsonl line has no file name inside the folder"))
            continue
        cond = _inside(root, str(row["conditioning"])) if row.get("conditioning") else conditioning_path(image)
        try:
            seed = int(row.get("seed", index))
        except (TypeError, ValueError):
            seed = index
        item = Item(index, name, image, str(row.get("text") or ""), cond or conditioning_path(image), seed)
        _add(item, items, skipped)
    return Listing("l2p dataset", items, skipped)


def _imagefolder_items(root: str, metadata: str) -> Listing:
    items, skipped = [], []
    with open(metadata, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name = str(row["file_name"])
        except (ValueError, KeyError, TypeError):
            skipped.append(Skipped(f"line {index + 1}", "not a JSON object with a file_name"))
            continue
        image = _inside(root, name)
        if image is None:
            skipped.append(Skipped(name, "the path leaves the dataset folder"))
            continue
        caption = next((row[c] for c in CAPTION_COLUMNS if isinstance(row.get(c), str)), None)
        if caption is None:
            skipped.append(Skipped(name, f"no caption column ({', '.join(CAPTION_COLUMNS)})"))
            continue
        _add(Item(index, name, image, caption, conditioning_path(image), index), items, skipped)
    return Listing("imagefolder", items, skipped)


def _caption_file_items(root: str) -> Listing:
    items, skipped = [], []
    images = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        images += [os.path.join(folder, f) for f in sorted(files)
                   if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    for index, image in enumerate(sorted(images, key=lambda p: os.path.relpath(p, root))):
        name = os.path.relpath(image, root)
        caption_file = os.path.splitext(image)[0] + ".txt"
        try:
            with open(caption_file, encoding="utf-8") as f:
                caption = f.read()
        except FileNotFoundError:
            skipped.append(Skipped(name, f"no caption file {os.path.basename(caption_file)}"))
            continue
        except (OSError, UnicodeDecodeError) as e:
            skipped.append(Skipped(name, f"caption file unreadable ({e})"))
            continue
        _add(Item(index, name, image, caption.strip(), conditioning_path(image), index), items, skipped)
    return Listing("image + caption files", items, skipped)


def _add(item: Item, items: list[Item], skipped: list[Skipped]) -> None:
    """An item needs a caption, unless its conditioning is cached already (a caption is only encoded)."""
    if not item.caption.strip() and not os.path.isfile(item.conditioning):
        skipped.append(Skipped(item.name, "empty caption"))
    else:
        items.append(item)
