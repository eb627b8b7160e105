"""How many Euler steps does the replication need? ``python -m bench.replicate.sample_steps``.

Sampling is the largest part of a rerun (``bench.replicate.cost``). This draws the validation split at other
step counts with the design's cached models (the shipped-model candidate at its chosen checkpoint and CFG, and the
source at its CFG) and prints each colour level with the paired bootstrap 95% interval of its change from the
budget's own step count. Validation only: the test split is not touched.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import models
from .config import BUDGETS, CACHE, SMOKE, TOKENS8
from .report import _diff, bootstrap, fmt
from .stages import Pipeline


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replicate.sample_steps", description=__doc__.splitlines()[0])
    ap.add_argument("--budget", choices=list(BUDGETS), default=TOKENS8.name)
    ap.add_argument("--smoke", action="store_true", help="the smoke budget's cache (the test suite)")
    ap.add_argument("--cache", default=str(CACHE), help="cache folder (default: %(default)s)")
    ap.add_argument("--steps", default="20,8", help="step counts to compare with the budget's (default: %(default)s)")
    ap.add_argument("--run", default="aligned", help="the L2P run (default: %(default)s)")
    args = ap.parse_args(argv)
    budget = SMOKE if args.smoke else BUDGETS[args.budget]
    p = Pipeline(budget, Path(args.cache))
    p.prepare()
    p.evaluate_run(args.run)
    chosen = p.report["runs"][args.run]["chosen"]
    model = p.run_model(args.run, p.checkpoints(args.run)[0][chosen["step"]])
    val = p.splits["val"]
    draws = {f"{args.run} (step {chosen['step']}, CFG {chosen['cfg']:g})": lambda b: models.sample_pixels(
                 model, p.encoder, val.prompts, val.seeds, b, cfg=chosen["cfg"]),
             f"source (CFG {p.report['source_eval']['cfg']:g})": lambda b: models.sample_source(
                 p.source_model, p.vae_model, p.encoder, val.prompts, val.seeds, b, cfg=p.report["source_eval"]["cfg"])}

    def hits(images) -> np.ndarray:
        return np.array(p.scores(images, val)["hits"]["colour_level"], dtype=float)

    for who, draw in draws.items():
        base = hits(draw(budget))
        print(f"{who}: {budget.sample_steps} steps: colour level {base.mean():.3f}", flush=True)
        for steps in (int(s) for s in args.steps.split(",")):
            fewer = hits(draw(replace(budget, sample_steps=steps)))
            print(f"{who}: {steps} steps: colour level {fewer.mean():.3f}, change "
                  f"{fmt(bootstrap(_diff, [fewer, base], val.tasks))}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
