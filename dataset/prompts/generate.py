"""Prompt banks: every category covered evenly, each prompt with its own image seed.

The paper builds 10k prompts over 1000+ categories (§3.2, §4.1). A round-robin over a seeded shuffle of the
leaves gives each category the same share (at most one apart), and record ``i`` depends only on (seed, i),
so a larger bank extends a smaller one with the same seed. This module is also the one-stop import for the
generator: ``generate_prompt``, ``PromptRecord``, ``ChatPromptWriter``, ``write_jsonl``, ``read_jsonl``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .chat import ChatPromptWriter
from .compose import generate_prompt
from .records import PromptRecord, read_jsonl, write_jsonl
from .rules import derive_seed
from .taxonomy import Category, Taxonomy, load_taxonomy

Writer = Callable[[Category, int], str]

__all__ = ["ChatPromptWriter", "PromptRecord", "Writer", "bank_order", "generate_bank", "generate_prompt",
           "read_jsonl", "write_jsonl"]


def bank_order(taxonomy: Taxonomy, seed: int) -> list[Category]:
    """The leaves in the seeded order the bank cycles through."""
    order = taxonomy.leaves()
    random.Random(derive_seed("bank-order", seed)).shuffle(order)
    return order


def generate_bank(n: int, seed: int = 0, taxonomy: Taxonomy | None = None, writer: Writer | None = None,
                  workers: int = 1) -> list[PromptRecord]:
    """``n`` prompt records, round-robin over the shuffled leaves; ``writer`` defaults to the offline generator.

    ``workers`` > 1 runs the writer in threads (worth it for a chat endpoint, not for the offline generator).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    order = bank_order(taxonomy or load_taxonomy(), seed)
    categories = [order[i % len(order)] for i in range(n)]
    seeds = [derive_seed("image", seed, i) for i in range(n)]
    write = writer or generate_prompt
    if workers == 1:
        prompts = list(map(write, categories, seeds))
    else:
        with ThreadPoolExecutor(workers) as pool:
            prompts = list(pool.map(write, categories, seeds))
    return [PromptRecord(i, c.path, p, s) for i, (c, p, s) in enumerate(zip(categories, prompts, seeds, strict=True))]
