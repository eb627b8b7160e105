"""The training data: a dataset folder (dataset.folder layout) in aspect-ratio buckets, in a reproducible order.

Each image is scaled down to at most ``max_pixels`` (aspect kept) and centre-cropped to sides that are
multiples of the model's patch/head grid; images of one size form a bucket and a batch never mixes
buckets. The order of an epoch depends only on (seed, epoch), so a data position (epoch, batch) is all a
checkpoint needs to resume exactly; every process takes its slice of each global batch.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from dataset.folder import CONDITIONING_KEY, read_metadata


@dataclass(frozen=True)
class Example:
    index: int
    image: str
    conditioning: str
    seed: int
    size: tuple[int, int]  # (width, height) after bucketing


def bucket_size(width: int, height: int, multiple: int, max_pixels: int) -> tuple[int, int]:
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    w = int(width * scale) // multiple * multiple
    h = int(height * scale) // multiple * multiple
    return max(w, multiple), max(h, multiple)


class TrainData:
    def __init__(self, root: str, multiple: int, max_pixels: int):
        rows = read_metadata(root)
        if not rows:
            raise ValueError(f"dataset {root} has no complete items (no metadata.jsonl lines): render some first")
        missing = [r for r in rows.values() if not r.get("conditioning")]
        if missing:
            raise ValueError(f"dataset {root}: item {missing[0]['index']:05d} has no cached text conditioning: write "
                             "datasets with the L2P Dataset Writer's conditioning input connected")
        self.examples: list[Example] = []
        for idx in sorted(rows):
            r = rows[idx]
            w, h = int(r.get("width") or 0), int(r.get("height") or 0)
            if not w or not h:
                raise ValueError(f"dataset {root}: item {idx:05d} has no width/height in metadata.jsonl")
            if w < multiple or h < multiple:
                raise ValueError(f"dataset {root}: item {idx:05d} is {w}x{h}, smaller than one {multiple}-pixel "
                                 "patch: the model's patch size does not fit this dataset")
            self.examples.append(Example(idx, os.path.join(root, r["file_name"]),
                                         os.path.join(root, r["conditioning"]), int(r["seed"]),
                                         bucket_size(w, h, multiple, max_pixels)))
        self.multiple = multiple

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
            raise ValueError(f"no bucket holds a full global batch of {global_batch}: lower batch_size or the "
                             "number of processes, or add images of the same size")
        return batches

    def load(self, position: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(pixels [3, H, W] in [-1, 1], text features [L, D], seed) of one example."""
        from PIL import Image

        ex = self.examples[position]
        w, h = ex.size
        with Image.open(ex.image) as im:
            im = im.convert("RGB")
            scale = max(w / im.width, h / im.height)
            if scale != 1:
                im = im.resize((max(w, round(im.width * scale)), max(h, round(im.height * scale))),
                               Image.Resampling.LANCZOS)
            left, top = (im.width - w) // 2, (im.height - h) // 2
            im = im.crop((left, top, left + w, top + h))
            pixels = torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1).contiguous()
        return pixels, load_conditioning(ex.conditioning), ex.seed


def load_conditioning(path: str) -> torch.Tensor:
    """A ``.cond.safetensors`` file's text features ``[L, D]`` (safetensors only)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)[CONDITIONING_KEY].float()
    except (OSError, KeyError, SafetensorError) as e:
        raise ValueError(f"cannot read text conditioning {path} ({e}): give a .cond.safetensors file with a "
                         f"'{CONDITIONING_KEY}' tensor") from None
