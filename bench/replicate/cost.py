"""What a rerun of the replication costs on this machine, measured alone: ``python -m bench.replicate.cost``.

A cached stage keeps the seconds it took when it ran, and some ran beside other jobs (two CPU-bound jobs on two
cores slow each other by up to 8x). This times a few steps of the heavy loops with nothing else running and
2 threads pinned: the VAE's and the source's training steps (their stages are fixed step counts, so seconds
per step x steps is the stage), and the pixel model's sampling per image and Euler step, with the two CFG
branches as two forwards (what ``models.sample`` does) and as one batched forward, side by side (A B A B);
then the lanes of ``bench.replicate --lanes 2``: one 2-thread process against two 1-thread processes side by
side, in rounds (A B A B), as the pair's work per second over the single's. It then prints the report's stage
total with the two training stages replaced by their projections.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import torch

from . import models
from .config import BUDGETS, REPO, TOKENS8, VAE_DOWN, results_paths
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


def source_step(budget, steps: int) -> float:
    """Seconds per training step of the source (the replication's heaviest loop), after two warm-up steps."""
    from shapes_world import vocabulary

    side = budget.size // VAE_DOWN
    latents, prompts = torch.randn(256, 16, side, side), ["a red circle"] * 256
    source, encoder = models.new_source(budget), models.new_text_encoder(vocabulary(), budget)
    models.train_source(source, encoder, latents, prompts, replace(budget, source_steps=2), 8)
    return per_step(lambda n: models.train_source(source, encoder, latents, prompts,
                                                  replace(budget, source_steps=n), 8), steps)


def lane_work(budget, steps: int) -> dict[str, float]:
    """What one lane measures: source training (s/step) and CFG sampling (ms per image-step)."""
    return {"source": source_step(budget, steps), "sample": min(sampling_ms(budget, 64, 2)["split"])}


def lanes_throughput(budget, steps: int) -> dict[str, float]:
    """Two processes of one thread each, side by side, against one of two threads: the work per second of the
    pair over the single (``bench.replicate --lanes 2`` runs the scratch runs beside the L2P runs this way)."""
    def launch(threads: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "bench.replicate.cost", "--budget", budget.name, "--steps",
                                 str(steps), "--lane-work", "--threads", str(threads)], cwd=REPO, text=True,
                                stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": str(threads)})

    def collect(procs: list[subprocess.Popen]) -> list[dict[str, float]]:
        outs = [p.communicate()[0] for p in procs]
        if any(p.returncode for p in procs):
            raise RuntimeError(f"a lane exited with {[p.returncode for p in procs]}")
        return [json.loads(out.strip().splitlines()[-1]) for out in outs]

    (single,) = collect([launch(2)])
    pair = collect([launch(1), launch(1)])
    return {k: sum(single[k] / lane[k] for lane in pair) for k in single}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replicate.cost", description=__doc__.splitlines()[0])
    ap.add_argument("--budget", choices=list(BUDGETS), default=TOKENS8.name)
    ap.add_argument("--steps", type=int, default=40, help="timed training steps per loop (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=4, help="A B rounds of the sampling step (default: %(default)s)")
    ap.add_argument("--lanes", type=int, default=2, help="A B rounds of the lanes comparison (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--lane-work", action="store_true", help=argparse.SUPPRESS)  # one lane of the comparison
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = BUDGETS[args.budget]
    if args.lane_work:
        print(json.dumps(lane_work(budget, args.steps)))
        return 0
    pool = torch.rand(256, 3, budget.size, budget.size) * 2 - 1
    vae_s = per_step(lambda n: models.train_vae(pool, n, budget.vae_batch, budget.vae_lr, budget.kl_weight, 7),
                     args.steps)
    source_s = source_step(budget, args.steps)
    sampling = sampling_ms(budget, 64, args.reps)
    projected = {"vae": vae_s * budget.vae_steps, "source": source_s * budget.source_steps}
    print(f"{budget.name}: VAE step {vae_s:.3f} s -> stage {projected['vae'] / 60:.1f} min; "
          f"source step {source_s:.3f} s -> stage {projected['source'] / 60:.1f} min")
    for name, values in sampling.items():
        print(f"sampling, CFG {name}: {min(values):.2f} ms per image-step (min of {len(values)}; "
              f"all {', '.join(f'{v:.2f}' for v in values)})")
    for round_ in range(args.lanes):
        gain = lanes_throughput(budget, max(2, args.steps // 4))
        print(f"lanes, round {round_ + 1}: two 1-thread processes side by side do {gain['source']:.2f}x the "
              f"source training and {gain['sample']:.2f}x the sampling of one 2-thread process", flush=True)
    report = results_paths(budget)[0] / "report.json"
    if report.is_file():
        recorded_run = json.loads(report.read_text())
        seconds = recorded_run["seconds"]
        total = sum(seconds.values())
        rerun = total + sum(projected[k] - seconds[k] for k in projected if k in seconds)
        recorded = ", ".join(f"{k} {seconds[k] / 60:.0f}" for k in projected if k in seconds)
        overlap = " (with lanes some overlapped: the wall time was less)" if recorded_run.get("lanes", 1) > 1 else ""
        print(f"stages as recorded, one after another: {total / 60:.0f} min ({recorded} min){overlap}; with the two "
              f"training stages as measured here: {rerun / 60:.0f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
