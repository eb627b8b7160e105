"""Near-duplicate detection: MinHash over word 3-gram shingles, with LSH banding so a bank is checked in O(n).

Two prompts that share most of their word 3-grams would give the pixel model the same training signal twice.
Comparing every pair of a 10k bank is 50M comparisons; banding only compares prompts that agree on a whole
band of their signature. Hashes come from zlib/hashlib with fixed seeds, so results never depend on the
process (Python's ``hash`` is salted).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Hashable

import numpy as np

from .rules import derive_seed

PRIME = (1 << 31) - 1  # a < 2^31 times a 32-bit shingle hash stays below 2^63: exact in uint64
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def shingles(text: str, size: int = 3) -> set[str]:
    """Word ``size``-grams of the lower-cased text; a shorter text is one shingle."""
    words = _WORD.findall(text.lower())
    if len(words) < size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """Exact Jaccard similarity (the quantity MinHash estimates)."""
    return len(a & b) / len(a | b) if a or b else 1.0


class MinHasher:
    """``num_perm`` universal hash permutations ``(a*x + b) mod p``; same parameters, same signatures."""

    def __init__(self, num_perm: int = 128, shingle_size: int = 3, seed: int = 0):
        self.num_perm, self.shingle_size = num_perm, shingle_size
        self.a = np.array([derive_seed("minhash-a", seed, i) % (PRIME - 1) + 1 for i in range(num_perm)], np.uint64)
        self.b = np.array([derive_seed("minhash-b", seed, i) % PRIME for i in range(num_perm)], np.uint64)

    def signature(self, text: str) -> np.ndarray:
        """The MinHash signature (uint64, ``num_perm`` values); an empty text gets all-``PRIME``."""
        grams = shingles(text, self.shingle_size)
        if not grams:
            return np.full(self.num_perm, PRIME, np.uint64)
        x = np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), np.uint64, len(grams))
        return ((self.a[:, None] * x[None, :] + self.b[:, None]) % PRIME).min(axis=1)


def similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Jaccard estimate: the share of signature positions that agree."""
    return float(np.mean(sig_a == sig_b))


def choose_bands(num_perm: int, threshold: float, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm: the most rows (fewest false candidates) that still finds a
    pair at the threshold with probability >= ``recall``."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= recall:
            best = (bands, rows)
    return best


class NearDuplicateIndex:
    """Texts added in order; ``add`` reports the earlier kept text a new one nearly duplicates, else keeps it."""

    def __init__(self, threshold: float = 0.8, hasher: MinHasher | None = None):
        if not 0 < threshold <= 1:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.hasher = hasher or MinHasher()
        self.bands, self.rows = choose_bands(self.hasher.num_perm, threshold)
        self._buckets: dict[tuple[int, bytes], list[Hashable]] = {}
        self._signatures: dict[Hashable, np.ndarray] = {}

    def add(self, key: Hashable, text: str) -> tuple[Hashable, float] | None:
        """(earlier key, estimated Jaccard) when ``text`` is a near duplicate (not added); ``None`` when added."""
        sig = self.hasher.signature(text)
        bands = [(i, sig[i * self.rows:(i + 1) * self.rows].tobytes()) for i in range(self.bands)]
        seen: set[Hashable] = set()
        for band in bands:
            for other in self._buckets.get(band, ()):
                if other in seen:
                    continue
                seen.add(other)
                estimate = similarity(sig, self._signatures[other])
                if estimate >= self.threshold:
                    return other, estimate
        self._signatures[key] = sig
        for band in bands:
            self._buckets.setdefault(band, []).append(key)
        return None
