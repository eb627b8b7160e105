"""What a rerun of the replication costs on this machine, measured alone: ``python -m bench.replicate.cost``.

A cached stage keeps the seconds it took when it ran, and some ran beside other jobs (two CPU-bound jobs on two
cores slow each other by up to 8x). This times a few steps of the heavy loops with nothing else running and
2 threads pinned: the VAE's and the source's training steps (their stages are fixed step counts, so seconds
per step x steps is the stage), and the pixel model's sampling per image and Euler step, with the two CFG
branches as two forwards (what ``models.sample`` does) and as one batched forward, side by side (A B A B).
It then prints the report's stage total with the two training stages replaced by their projections.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from . import models
from .config import BUDGETS, TOKENS8, VAE_DOWN, results_paths
from .stages import scratch_l2p_model


def per_step(run, steps: int) -> float:
    start = time.perf_counter()
    run(steps)
    return (time.perf_counter() - start) / steps


@torch.no_grad()
def sampling_ms(budget, batch: int, reps: int) -> dict[str, list[float]]:
    """ms per image and Euler step with CFG: two forwards ("split") against one of twice the batch ("batched")."""
    from shapes_world import vocabulary

    model, encoder = scratch_l2p_model(budget, 0).train(False), models.new_text_encoder(vocabulary(), budget)
    caps, empty = encoder(["a red circle"] * batch), encoder([""] * batch)
    x, sigma, cfg = torch.randn(batch, 3, budget.size, budget.size), torch.full((batch,), 0.5), budget.cfg

    def split() -> torch.Tensor:
        u = model(x, sigma, empty)
        return u + cfg * (model(x, sigma, caps) - u)

    def batched() -> torch.Tensor:
        c, u = model(torch.cat([x, x]), torch.cat([sigma, sigma]), caps + empty).chunk(2)
        return u + cfg * (c - u)

    split()  # warm-up
    times: dict[str, list[float]] = {"split": [], "batched": []}
    for _ in range(reps):
        for name, step in (("split", split), ("batched", batched)):
            start = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - start) * 1000 / batch)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replicate.cost", description=__doc__.splitlines()[0])
    ap.add_argument("--budget", choices=list(BUDGETS), default=TOKENS8.name)
    ap.add_argument("--steps", type=int, default=40, help="timed training steps per loop (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=4, help="A B rounds of the sampling step (default: %(default)s)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    budget = BUDGETS[args.budget]
    from shapes_world import vocabulary

    pool = torch.rand(256, 3, budget.size, budget.size) * 2 - 1
    vae_s = per_step(lambda n: models.train_vae(pool, n, budget.vae_batch, budget.vae_lr, budget.kl_weight, 7),
                     args.steps)
    side = budget.size // VAE_DOWN
    latents, prompts = torch.randn(256, 16, side, side), ["a red circle"] * 256
    source, encoder = models.new_source(budget), models.new_text_encoder(vocabulary(), budget)
    source_s = per_step(lambda n: models.train_source(source, encoder, latents, prompts,
                                                      replace(budget, source_steps=n), 8), args.steps)
    sampling = sampling_ms(budget, 64, args.reps)
    projected = {"vae": vae_s * budget.vae_steps, "source": source_s * budget.source_steps}
    print(f"{budget.name}: VAE step {vae_s:.3f} s -> stage {projected['vae'] / 60:.1f} min; "
          f"source step {source_s:.3f} s -> stage {projected['source'] / 60:.1f} min")
    for name, values in sampling.items():
        print(f"sampling, CFG {name}: {min(values):.2f} ms per image-step (min of {len(values)}; "
              f"all {', '.join(f'{v:.2f}' for v in values)})")
    report = results_paths(budget)[0] / "report.json"
    if report.is_file():
        seconds = json.loads(report.read_text())["seconds"]
        total = sum(seconds.values())
        rerun = total + sum(projected[k] - seconds[k] for k in projected if k in seconds)
        recorded = ", ".join(f"{k} {seconds[k] / 60:.0f}" for k in projected if k in seconds)
        print(f"stages as recorded: {total / 60:.0f} min ({recorded} min); with the two training stages as "
              f"measured here: {rerun / 60:.0f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
