"""Statistics of the offline prompt bank: is it the paper's kind of bank (§3.2)?

Generates the default bank (10k prompts, seed 0, shipped taxonomy), filters it, and reports the duplicate
rate, the per-rule drops, how evenly the 1000+ categories are covered, the length distribution (the paper's
prompts sit between 200 and 350 characters) and how many prompts lower near-duplicate thresholds would drop
(how far the bank is from the 0.8 cut). Writes ``bench/results/prompt_lengths.png`` and ``prompt_stats.md``.

    .venv/bin/python -m bench.prompt_stats [--n 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter

from dataset.prompts import MAX_CHARS, MIN_CHARS, filter_prompts, generate_bank, load_taxonomy
from dataset.prompts.minhash import NearDuplicateIndex
from training.plots import bar_chart

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BIN = 10
THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def length_histogram(lengths: list[int]) -> tuple[list[int], list[str]]:
    """Counts per 10-character bin from the window's floor to its ceiling (outliers land in the end bins)."""
    edges = list(range(MIN_CHARS, MAX_CHARS, BIN))
    counts = [0] * len(edges)
    for n in lengths:
        counts[min(max((n - MIN_CHARS) // BIN, 0), len(edges) - 1)] += 1
    return counts, [str(e) for e in edges]


def near_duplicates_at(prompts: list[str], threshold: float) -> int:
    index = NearDuplicateIndex(threshold)
    return sum(index.add(i, p) is not None for i, p in enumerate(prompts))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    taxonomy = load_taxonomy()
    leaves = taxonomy.leaves()
    t0 = time.perf_counter()
    records = generate_bank(args.n, args.seed, taxonomy)
    t1 = time.perf_counter()
    kept, report = filter_prompts(records)
    t2 = time.perf_counter()

    lengths = [len(r.prompt) for r in records]
    exact_dups = len(records) - len({r.prompt for r in records})
    per_leaf = Counter(r.category for r in kept)
    counts = [per_leaf.get(c.path, 0) for c in leaves]
    coverage = sum(1 for c in counts if c) / len(leaves)
    per_major = Counter(r.category.split("/")[0] for r in kept)
    sensitivity = {t: near_duplicates_at([r.prompt for r in records], t) for t in THRESHOLDS}

    hist, labels = length_histogram(lengths)
    png = bar_chart(os.path.join(RESULTS, "prompt_lengths.png"), hist, labels,
                    f"Prompt length, {len(records)} offline prompts (seed {args.seed})",
                    f"characters ({BIN}-character bins, window {MIN_CHARS}-{MAX_CHARS})", "prompts")

    lines = [
        f"prompts: {len(records)} generated in {t1 - t0:.2f} s, filtered in {t2 - t1:.2f} s, {report.kept} kept",
        f"duplicate rate: {report.duplicate_rate:.2%} near duplicates (MinHash >= 0.8), {exact_dups} exact duplicates",
        f"length: min {min(lengths)}, median {statistics.median(lengths):g}, mean {statistics.mean(lengths):.1f}, "
        f"max {max(lengths)}; {sum(MIN_CHARS <= n <= MAX_CHARS for n in lengths) / len(lengths):.2%} in window",
        f"coverage: {coverage:.2%} of {len(leaves)} categories have a kept prompt; "
        f"per category min {min(counts)}, max {max(counts)}",
        "per major class: " + ", ".join(f"{m} {per_major[m]}" for m in taxonomy.majors()),
        "near duplicates a lower threshold would drop: "
        + ", ".join(f"{t:g}: {n}" for t, n in sensitivity.items()),
    ]
    print("\n".join(lines))
    print(report)

    md = [
        "# Prompt bank statistics",
        "",
        f"`.venv/bin/python -m bench.prompt_stats --n {args.n} --seed {args.seed}` "
        f"(offline generator, shipped taxonomy: {len(taxonomy.majors())} classes, {len(taxonomy.subs())} "
        f"sub-classes, {len(leaves)} categories). Paper §3.2: 4 / 17 / 1000+, 10k prompts of 200-350 characters.",
        "",
        *[f"- {line}" for line in lines],
        "",
        "## Filter report",
        "",
        "```",
        str(report),
        "```",
        "",
        f"![prompt lengths]({os.path.basename(png)})",
        "",
        "## Samples",
        "",
        *[f"- `{r.category}` (seed {r.seed}): {r.prompt}" for r in records[:3]],
        "",
    ]
    with open(os.path.join(RESULTS, "prompt_stats.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md))
    print(f"wrote {png} and {os.path.join(RESULTS, 'prompt_stats.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
