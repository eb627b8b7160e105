"""Trainable-set policies: which official-layout parameters an L2P fine-tune updates (the rest stay frozen).

* ``paper``    -- the shallow layers around the new pixel interface: the pixel embedder (input projection), the
  image-side refiner(s) (``noise_refiner``), the first and last main block, the Detailer Head. The pixel embedder
  is new and random, so a frozen ``noise_refiner`` right after it would receive off-distribution tokens; the
  released code trains it too; and the paper's text describes training the shallow layers around the new
  interface. The context (caption) refiner, the t/cap embedders and the pad tokens stay frozen.
* ``official`` -- what the released code trains (``freeze_except`` freezes ``layers[5:-5]``): everything
  except the middle main blocks, i.e. embedders, pad tokens, both refiners, blocks 0-4 and the last 5, head.
* ``custom:<ranges>`` -- input projection, head and the listed main blocks, e.g. ``custom:0-2,27-29``.

l2p-technical.md §1.1 and §1.6.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .format.keys import HEAD_PREFIX

POLICIES = ("paper", "official")
_BLOCK = re.compile(r"^layers\.(\d+)\.")


@dataclass(frozen=True)
class PolicyReport:
    policy: str
    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{self.policy}: {self.trainable:,} of {self.total:,} parameters trainable ({self.fraction:.1%})"


def parse_ranges(text: str, n_layers: int) -> set[int]:
    """``"0-4,25-29"`` -> {0..4, 25..29}; negative numbers count from the end (``-1`` is the last block)."""
    blocks: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(-?\d+)(?:\s*-\s*(-?\d+))?", part) if not part.startswith("--") else None
        if m is None:
            raise ValueError(f"bad block range {part!r}: write ranges like 0-4,25-29 or -1")
        lo = _block_index(m.group(1), n_layers)
        hi = lo if m.group(2) is None else _block_index(m.group(2), n_layers)
        if not 0 <= lo <= hi < n_layers:
            raise ValueError(f"block range {part!r} is outside 0-{n_layers - 1}: this model has {n_layers} blocks")
        blocks.update(range(lo, hi + 1))
    return blocks


def _block_index(text: str, n_layers: int) -> int:
    i = int(text)
    return i + n_layers if i < 0 else i


def trained_blocks(policy: str, n_layers: int) -> set[int]:
    if policy == "paper":
        return {0, n_layers - 1}
    if policy == "official":
        return set(range(n_layers)) - set(range(5, n_layers - 5))
    if policy.startswith("custom:"):
        return parse_ranges(policy[len("custom:"):], n_layers)
    raise ValueError(f"unknown policy {policy!r}: use one of {', '.join(POLICIES)} or custom:<ranges>")


NEW_PREFIXES = ("all_x_embedder.", "x_embedder.", HEAD_PREFIX)


def is_new(name: str) -> bool:
    """Whether an official-layout parameter is one L2P adds (pixel embedder, Detailer Head): trained by every
    policy, and by the trainer at ``lr_new``."""
    return name.startswith(NEW_PREFIXES)


REFINER_PREFIX = "noise_refiner."  # the image-side refiner(s), in both layouts


def is_trainable(name: str, policy: str, blocks: set[int]) -> bool:
    if is_new(name):
        return True
    m = _BLOCK.match(name)
    if m:
        return int(m.group(1)) in blocks
    if name.startswith(REFINER_PREFIX):
        return policy in ("paper", "official")  # it reads the new embedder's tokens first
    return policy == "official"  # context refiner, t/cap embedders, pad tokens: trained by the released code only


def trainable_names(names: Iterable[str], policy: str, n_layers: int) -> set[str]:
    """The parameter names (official or ComfyUI layout) that ``policy`` trains."""
    blocks = trained_blocks(policy, n_layers)
    return {n for n in names if is_trainable(n, policy, blocks)}


def report(shapes: Mapping[str, Iterable[int]], policy: str, n_layers: int) -> PolicyReport:
    """Parameter counts of a policy over ``name -> shape`` of either layout (meta tensors' shapes work)."""
    def numel(shape: Iterable[int]) -> int:
        n = 1
        for s in shape:
            n *= int(s)
        return n

    chosen = trainable_names(shapes, policy, n_layers)
    return PolicyReport(policy, sum(numel(shapes[n]) for n in chosen), sum(numel(s) for s in shapes.values()))
