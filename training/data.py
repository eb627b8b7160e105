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

from dataset.folder import CONDITIONING_KEY, read_metadata

from .contract import DATASET_TOOL

ITEMS_HOW = (f"re-render them with {DATASET_TOOL} after deleting their metadata.jsonl lines (an index without a "
             "line is written again), or delete the lines to train without them")
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


def refusal(root: str, bad: list[tuple[int, str]], total: int, how: str = ITEMS_HOW) -> DatasetError:
    """One line for a dataset with unusable items: how many, the first one and why, what to do."""
    index, why = bad[0]
    return DatasetError(f"dataset {root}: {len(bad)} of {total} items unusable, first {index:05d}: {why}; {how}")


def scan_dataset(root: str) -> list[ScannedItem]:
    """Every complete item of ``root``, checked without decoding anything (no model needed)."""
    rows = read_metadata(root)
    if not rows:
        raise DatasetError(f"dataset {root} has no complete items (no metadata.jsonl lines): render some first "
                           f"with {DATASET_TOOL}")
    missing = [r for r in rows.values() if not r.get("conditioning")]
    if missing:
        raise DatasetError(f"dataset {root}: {len(missing)} of {len(rows)} items have no cached text conditioning, "
                           f"first {missing[0]['index']:05d}: write the dataset with {DATASET_TOOL}")
    items, bad = [], []
    for idx in sorted(rows):
        r = rows[idx]
        try:
            seed = int(r["seed"])
            name, cond = str(r["file_name"]), str(r["conditioning"])
        except (KeyError, TypeError, ValueError):
            bad.append((idx, "its metadata.jsonl line has no file_name or seed"))
            continue
        image, cond_path = os.path.join(root, name), os.path.join(root, cond)
        if not os.path.isfile(image):
            bad.append((idx, f"{name} missing"))
            continue
        if not os.path.isfile(cond_path):
            bad.append((idx, f"{cond} missing"))
            continue
        try:
            size = image_size(image)
        except ValueError as e:
            bad.append((idx, f"{name} is {e}"))
            continue
        try:
            shape = conditioning_shape(cond_path)
        except ValueError as e:
            bad.append((idx, f"{cond}: {e}"))
            continue
        items.append(ScannedItem(idx, image, cond_path, seed, size, shape))
    if bad:
        raise refusal(root, bad, len(rows))
    return items


def check_caption_width(root: str, items: list[ScannedItem], width: int | None) -> None:
    """Every item's conditioning is ``width`` wide (the model's caption features), or the dataset is refused."""
    wrong = [(it.index, f"{os.path.basename(it.conditioning)} holds {it.cap_shape[1]}-wide caption features, the "
                        f"model takes {width}")
             for it in items if width is not None and it.cap_shape[1] != width]
    if wrong:
        raise refusal(root, wrong, len(items), WIDTH_HOW)


class TrainData:
    def __init__(self, root: str, multiple: int, max_pixels: int, cap_width: int | None = None,
                 scanned: list[ScannedItem] | None = None):
        """``scanned``: ``scan_dataset(root)`` done earlier (before the model was loaded); ``cap_width``: the
        model's caption feature width, which every item's conditioning must have."""
        items = scan_dataset(root) if scanned is None else scanned
        check_caption_width(root, items, cap_width)
        self.root, self.cap_width, self.multiple = root, cap_width, multiple
        self.examples: list[Example] = []
        for it in items:
            w, h = it.image_size
            if w < multiple or h < multiple:
                raise DatasetError(f"dataset {root}: item {it.index:05d} is {w}x{h}, smaller than one {multiple}-pixel "
                                   "patch: the model's patch size does not fit this dataset")
            self.examples.append(Example(it.index, it.image, it.conditioning, it.seed,
                                         bucket_size(w, h, multiple, max_pixels)))
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
