"""The training data: a dataset folder (dataset.folder layout) in aspect-ratio buckets, in a reproducible order.

Each image is scaled down to at most ``max_pixels`` (aspect kept) and centre-cropped to sides that are
multiples of the model's patch/head grid; images of one size form a bucket and a batch never mixes
buckets. The order of an epoch depends only on (seed, epoch), so a data position (epoch, batch) is all a
checkpoint needs to resume exactly; every process takes its slice of each global batch.

Bad items are found before any work where that is cheap: every item's image and ``.cond.safetensors`` must
exist, the image's header must be readable (its size is read from it, nothing is decoded) and the
conditioning's safetensors header must hold a ``[tokens, width]`` tensor of the model's caption width (read
from the header, nothing is loaded). A dataset with such items is refused in one line (``DatasetError``: how
many, the first one, what to do). An item that still fails to decode during the run (a truncated PNG, a file
changed since) is skipped: its batch takes the next readable item of the same size bucket instead, a warning
goes to stderr once, and the ``done`` event counts it (``skipped``).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dataset.folder import CONDITIONING_KEY

from .contract import CACHE_HOW, DATASET_TOOL
from .items import Item, Skipped, list_items

ITEMS_HOW = (f"replace or delete the broken files (in a dataset of this pack, delete their metadata.jsonl lines and "
             f"render them again with {DATASET_TOOL})")
WIDTH_HOW = ("this conditioning comes from another text encoder: write the dataset with the text encoder of the "
             "model you train")


class DatasetError(ValueError):
    """The dataset cannot be trained on: refused in one line (exit code 2)."""


class ItemError(ValueError):
    """One item failed to load during the run: it is skipped, not fatal."""


@dataclass(frozen=True)
class Example:
    index: int
    image: str
    conditioning: str
    seed: int
    size: tuple[int, int]  # (width, height) after bucketing


@dataclass(frozen=True)
class ScannedItem:
    """An item whose files passed the cheap checks: paths, seed, the image's size and the features' shape."""
    index: int
    image: str
    conditioning: str
    seed: int
    image_size: tuple[int, int]
    cap_shape: tuple[int, ...]


def bucket_size(width: int, height: int, multiple: int, max_pixels: int) -> tuple[int, int]:
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    w = int(width * scale) // multiple * multiple
    h = int(height * scale) // multiple * multiple
    return max(w, multiple), max(h, multiple)


def image_size(path: str) -> tuple[int, int]:
    """An image's (width, height) from its header alone; ValueError with the reason when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except UnidentifiedImageError:
        raise ValueError("not a readable image: corrupt or not an image") from None
    except OSError as e:
        raise ValueError(f"not a readable image: {e.strerror or e}") from None


def conditioning_shape(path: str) -> tuple[int, ...]:
    """The shape of a ``.cond.safetensors`` file's features from its header alone (nothing is loaded)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 2 <= n <= size - 8:
                raise ValueError("not a safetensors file")
            header = json.loads(f.read(n))
        info = header[CONDITIONING_KEY]
        shape, (start, end) = tuple(int(d) for d in info["shape"]), info["data_offsets"]
    except OSError as e:
        raise ValueError(f"unreadable: {e.strerror or e}") from None
    except KeyError:
        raise ValueError(f"no '{CONDITIONING_KEY}' tensor in it") from None
    except (ValueError, TypeError, AttributeError):  # JSON, a header of the wrong form
        raise ValueError("not a safetensors file") from None
    if not 0 <= start <= end <= size - 8 - n:
        raise ValueError("truncated: the file is shorter than its header says")
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"'{CONDITIONING_KEY}' is {list(shape)}, not [tokens, width]")
    return shape


@dataclass
class Scan:
    """A training folder after the cheap checks: the usable items, what was skipped and why, what still needs
    its text conditioning cached."""
    root: str
    layout: str
    items: list[ScannedItem]
    skipped: list[Skipped]
    uncached: list[Item]
    sizes: dict[str, tuple[int, int]]  # image path -> (width, height), of every item that passed its header check

    def reasons(self) -> dict[str, int]:
        """Why items were skipped, most frequent first (the reason without the item's own file names)."""
        counts: dict[str, int] = {}
        for s in self.skipped:
            counts[_reason(s.why)] = counts.get(_reason(s.why), 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _reason(why: str) -> str:
    return why.split(": ", 1)[-1] if why.startswith(("caption file", "no caption")) else why.split(" (", 1)[0]


def scan_dataset(root: str, multiple: int = 1, cap_width: int | None = None) -> Scan:
    """Every item of ``root`` (any layout, training/items.py) checked without decoding anything: the image's
    header (its size; smaller than one ``multiple``-pixel patch is skipped) and, where it is cached, the
    conditioning's header (``[tokens, cap_width]``). Items without conditioning are listed in ``uncached``."""
    listing = list_items(root)
    items, skipped, uncached, sizes = [], list(listing.skipped), [], {}
    for it in listing.items:
        if not os.path.isfile(it.image):
            skipped.append(Skipped(it.name, "image missing"))
            continue
        try:
            w, h = image_size(it.image)
        except ValueError as e:
            skipped.append(Skipped(it.name, f"{e}"))
            continue
        if w < multiple or h < multiple:
            skipped.append(Skipped(it.name, f"{w}x{h}, smaller than one {multiple}-pixel patch"))
            continue
        if not os.path.isfile(it.conditioning):
            uncached.append(it)
            sizes[it.image] = (w, h)
            continue
        try:
            shape = conditioning_shape(it.conditioning)
        except ValueError as e:
            skipped.append(Skipped(it.name, f"its conditioning {os.path.basename(it.conditioning)}: {e}"))
            continue
        if cap_width is not None and shape[1] != cap_width:
            skipped.append(Skipped(it.name, f"its conditioning holds {shape[1]}-wide caption features, the model "
                                            f"takes {cap_width} ({WIDTH_HOW})"))
            continue
        items.append(ScannedItem(it.index, it.image, it.conditioning, it.seed, (w, h), shape))
        sizes[it.image] = (w, h)
    return Scan(root, listing.layout, items, skipped, uncached, sizes)


def describe(scan: Scan, multiple: int, max_pixels: int) -> str:
    """What ``--print-dataset`` prints: the layout, counts, items per size bucket, and each skipped item."""
    buckets: dict[tuple[int, int], int] = {}
    for w, h in scan.sizes.values():
        size = bucket_size(w, h, multiple, max_pixels)
        buckets[size] = buckets.get(size, 0) + 1
    lines = [f"dataset {scan.root} ({scan.layout}): {len(scan.sizes) + len(scan.skipped)} items, "
             f"{len(scan.sizes)} usable, {len(scan.skipped)} skipped, {len(scan.uncached)} without cached "
             "text conditioning",
             f"size buckets (multiple {multiple}, at most {max_pixels} pixels): " +
             (", ".join(f"{w}x{h}: {n}" for (w, h), n in sorted(buckets.items(), key=lambda kv: -kv[1])) or "none")]
    if scan.skipped:
        lines.append("skipped: " + ", ".join(f"{n} {why}" for why, n in scan.reasons().items()))
        lines += [f"  {s.name}: {s.why}" for s in scan.skipped]
    return "\n".join(lines)


def check_usable(scan: Scan) -> None:
    """Refuse (one line) a folder with nothing to train on; skipped items are otherwise only counted."""
    if scan.uncached:
        first = scan.uncached[0]
        raise DatasetError(f"dataset {scan.root}: {len(scan.uncached)} items have no cached text conditioning "
                           f"(first {first.name}): {CACHE_HOW}")
    if scan.items:
        return
    if not scan.skipped:
        raise DatasetError(f"dataset {scan.root} has no items (no metadata.jsonl lines, no image with a caption "
                           f"file): render some with {DATASET_TOOL}, or give a folder of images with .txt captions")
    reason, count = next(iter(scan.reasons().items()))
    first = scan.skipped[0]
    raise DatasetError(f"dataset {scan.root}: none of its {len(scan.skipped)} items is usable (most often: {reason}, "
                       f"{count}); first {first.name}: {first.why}")


class TrainData:
    def __init__(self, scan: Scan, multiple: int, max_pixels: int, cap_width: int | None = None):
        """``scan``: ``scan_dataset`` of the folder, its conditioning cached (``check_usable`` passed);
        ``cap_width``: the model's caption feature width, which every item's conditioning has."""
        self.root, self.cap_width, self.multiple = scan.root, cap_width, multiple
        self.examples = [Example(it.index, it.image, it.conditioning, it.seed,
                                 bucket_size(*it.image_size, multiple, max_pixels)) for it in scan.items]
        self.skipped: dict[int, str] = {}  # position -> why it failed to load during the run

    def epoch_batches(self, epoch: int, seed: int, global_batch: int, shuffle: bool = True) -> list[list[int]]:
        """Global batches (lists of example positions) of one epoch; incomplete bucket tails are dropped."""
        rng = random.Random(seed * 1_000_003 + epoch)
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, ex in enumerate(self.examples):
            buckets.setdefault(ex.size, []).append(i)
        batches = []
        for size in sorted(buckets):
            items = buckets[size][:]
            if shuffle:
                rng.shuffle(items)
            batches += [items[k:k + global_batch] for k in range(0, len(items) - global_batch + 1, global_batch)]
        if shuffle:
            rng.shuffle(batches)
        if not batches:
            raise DatasetError(f"no bucket holds a full global batch of {global_batch}: lower batch_size or the "
                               "number of processes, or add images of the same size")
        return batches

    def load(self, position: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(pixels [3, H, W] in [-1, 1], text features [L, D], seed) of one example; ``ItemError`` when its
        files cannot be decoded."""
        from PIL import Image

        ex = self.examples[position]
        w, h = ex.size
        try:
            with Image.open(ex.image) as im:
                im = im.convert("RGB")
                scale = max(w / im.width, h / im.height)
                if scale != 1:
                    im = im.resize((max(w, round(im.width * scale)), max(h, round(im.height * scale))),
                                   Image.Resampling.LANCZOS)
                left, top = (im.width - w) // 2, (im.height - h) // 2
                im = im.crop((left, top, left + w, top + h))
                pixels = torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1).contiguous()
        except (OSError, ValueError, SyntaxError, EOFError) as e:  # what PIL raises for broken image data
            raise ItemError(f"{os.path.basename(ex.image)} cannot be decoded ({e})") from None
        cap = load_conditioning(ex.conditioning, error=ItemError)
        if cap.ndim != 2 or self.cap_width is not None and cap.shape[1] != self.cap_width:
            raise ItemError(f"{os.path.basename(ex.conditioning)} is {list(cap.shape)}, not [tokens, {self.cap_width}]")
        return pixels, cap, ex.seed

    def load_usable(self, position: int, warn: Callable[[str], None]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``load``, or, when that item fails, the next readable item of its size bucket (in dataset order,
        wrapping): the failed item is left out from then on and ``warn`` is told once. The stand-in depends only
        on which files are readable, so a resumed run picks the same one. ``DatasetError`` when no item of the
        bucket loads."""
        size = self.examples[position].size
        bucket = [i for i, ex in enumerate(self.examples) if ex.size == size]
        start = bucket.index(position)
        for k in range(len(bucket)):
            p = bucket[(start + k) % len(bucket)]
            if p in self.skipped:
                continue
            try:
                return self.load(p)
            except ItemError as e:
                self.skipped[p] = str(e)
                warn(f"item {self.examples[p].index:05d} skipped: {e}; it is left out of this run from now on "
                     f"({len(self.skipped)} skipped so far)")
        first = bucket[0]  # positions follow the dataset order
        raise DatasetError(f"dataset {self.root}: none of the {len(bucket)} items of size {size[0]}x{size[1]} loads, "
                           f"first {self.examples[first].index:05d}: {self.skipped[first]}; {ITEMS_HOW}")


def load_conditioning(path: str, error: type[ValueError] = ValueError) -> torch.Tensor:
    """A ``.cond.safetensors`` file's text features ``[L, D]`` (safetensors only)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)[CONDITIONING_KEY].float()
    except (OSError, KeyError, SafetensorError) as e:
        raise error(f"cannot read text conditioning {path} ({e}): give a .cond.safetensors file with a "
                    f"'{CONDITIONING_KEY}' tensor") from None
