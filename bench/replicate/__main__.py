"""Replicate L2P end to end on the shapes world (CPU): ``python -m bench.replicate``.

    python -m bench.replicate            # full budget (cached stages are reused), writes bench/RESULTS.md
    python -m bench.replicate --smoke    # every stage at toy budgets (the test suite runs this), no report file
    python -m bench.replicate --fresh    # ignore the cache
    python -m bench.replicate --ship     # also copy the best L2P model and the text encoder to shapes_world/models
    python -m bench.replicate --runs aligned --no-report   # one part of the design: its stages, cached, no report
    python -m bench.replicate --budget tokens8   # the design at 8x8 tokens: bench/results/replicate-tokens8/RESULTS.md
    python -m bench.replicate --budget tokens8-full --runs aligned --ship   # the shipped demo model, bit for bit
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from .config import BUDGETS, CACHE, FULL, SMOKE
from .stages import Pipeline


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replicate", description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="toy budgets: every stage in about a minute")
    ap.add_argument("--budget", choices=list(BUDGETS), default=FULL.name,
                    help="full: 4x4 tokens (bench/RESULTS.md); tokens8: 8x8 tokens in 2 h; tokens8-full: 8x8 "
                         "tokens at full's steps (the shipped model's run); each its own cache and report")
    ap.add_argument("--fresh", action="store_true", help="rerun every stage (ignore the cache)")
    ap.add_argument("--ship", action="store_true", help="copy the best model + text encoder to shapes_world/models")
    ap.add_argument("--cache", default=str(CACHE), help="cache folder (default: %(default)s)")
    ap.add_argument("--runs", help="comma-separated subset of the training runs (default: all)")
    ap.add_argument("--no-report", action="store_true",
                    help="run and cache the stages only (the design in parts, across sessions); write no report "
                         "(--ship still ships: the report of a measured run stays as it was)")
    ap.add_argument("--lanes", type=int, choices=(1, 2), default=2,
                    help="2: the scratch runs in a second process beside the L2P runs, one thread each (1.1-1.3x "
                         "the throughput on 2 cores); 1: one after another (default: %(default)s; --fresh uses 1)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in all (default: %(default)s)")
    args = ap.parse_args(argv)
    from pathlib import Path

    from .report import ship, write_report

    start = time.perf_counter()
    budget = SMOKE if args.smoke else BUDGETS[args.budget]
    if args.runs:
        unknown = set(args.runs.split(",")) - set(budget.runs)
        if unknown:
            ap.error(f"unknown run {sorted(unknown)[0]!r}: pick from {', '.join(budget.runs)}")
        budget = replace(budget, runs=tuple(r for r in budget.runs if r in args.runs.split(",")))
    pipeline = Pipeline(budget, Path(args.cache), fresh=args.fresh, threads=args.threads)
    report = pipeline.run_all(lanes=args.lanes)
    report["total_seconds"] = time.perf_counter() - start
    print(json.dumps({k: report[k] for k in ("seconds", "cached", "total_seconds")}, indent=1))
    if not args.no_report:
        print(f"wrote {write_report(pipeline, report, smoke=args.smoke)}")
    if args.ship:
        print(ship(pipeline, report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
