"""Step caching on an L2P model: the stock EasyCache and LazyCache nodes against no cache, side by side.

    .venv/bin/python -m bench.step_cache                 # 240 held-out prompts, ~10 min on this CPU
    .venv/bin/python -m bench.step_cache --prompts 12    # a quick look

The shipped shapes-world demo model (``shapes_world/models``) samples through a real headless ComfyUI with the
demo workflow (``workflows/l2p_shapes_demo``: Euler, 20 steps, CFG 3), once per prompt and configuration:
no cache, then each cache node at two reuse thresholds (0.2, the nodes' default, and 0.5). The configurations
of one prompt run back to back in a rotating order (A B C ..., then B C ... A), so drift of a shared machine
and ComfyUI's reuse of the prompt's text encoding fall on every configuration alike.

Measured, per run: the KSampler's time (client clock, from the sampler node's ``executing`` event to its last
step's ``progress`` event) and the steps each cache answered (its verbose log). Speed-up = total sampler time
without cache / with it, with a 95% bootstrap interval over prompts (ratio of sums). Score: the world's
procedural GenEval per image (colour level: colours, counts, positions; strict: the outline too), as a rate
with a Wilson interval and the change against no cache as a paired bootstrap 95% interval. Thread count
pinned (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import paired_bootstrap, wilson
from bench.measure import Figure, write_figures
from harness.graph import with_step_cache
from scripts.demo import DEMO_L2P as MODEL
from scripts.demo import DEMO_TE as TEXT_ENCODER
from scripts.demo import SHAPES_WORKFLOW as WORKFLOW
from scripts.demo import SHIPPED
from scripts.demo import prompt_graph as demo_graph

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "step_cache.md"
PROMPT_SEED = 4242  # held-out scenes: the demo model's training used other seeds (bench/replicate)
SAMPLER = "KSampler"


@dataclass(frozen=True)
class Config:
    name: str
    node: str | None = None
    threshold: float = 0.0

    def insert(self, graph: dict) -> dict:
        """``graph`` with this cache node before the sampler (none: unchanged)."""
        return with_step_cache(graph, self.node, self.threshold, SAMPLER) if self.node else graph


CONFIGS = (Config("no cache"), Config("EasyCache 0.2", "EasyCache", 0.2), Config("EasyCache 0.5", "EasyCache", 0.5),
           Config("LazyCache 0.2", "LazyCache", 0.2), Config("LazyCache 0.5", "LazyCache", 0.5))


def prompt_graph(text: str, seed: int) -> dict:
    """The demo workflow (scripts/demo.py's own graph builder) at one image."""
    return demo_graph(json.loads(WORKFLOW.read_text()), text, seed, 1, MODEL)


def sampler_seconds(server, graph: dict) -> tuple[float, object]:
    """Run ``graph``; the sampler's time from its ``executing`` event to its last step's ``progress`` event."""
    sampler = next(k for k, v in graph.items() if v["class_type"] == SAMPLER)
    marks: dict[str, float] = {}

    def on_event(kind: str, data: dict) -> None:
        if kind == "executing" and data.get("node") == sampler:
            marks["start"] = time.perf_counter()
        elif kind == "progress" and data.get("node") == sampler and data.get("value") == data.get("max"):
            marks["end"] = time.perf_counter()

    result = server.run(graph, timeout=600, on_event=on_event)
    if not result.ok:
        raise RuntimeError(f"run failed: {result.describe()}\n{server.log_tail(30)}")
    if "start" not in marks or "end" not in marks:
        raise RuntimeError(f"no sampler timing in the run's events: {[(k, d.get('node')) for k, d in result.events]}")
    return marks["end"] - marks["start"], result


def ratio_interval(base: np.ndarray, other: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, ...]:
    """sum(base) / sum(other) and its 95% bootstrap interval, resampling prompts (pairs kept)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), size=(resamples, len(base)))
    ratios = base[idx].sum(axis=1) / other[idx].sum(axis=1)
    return float(base.sum() / other.sum()), float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.step_cache", description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=240)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the server (pinned)")
    ap.add_argument("--out", default=str(OUT), help="the table (default: %(default)s; 'none' to skip)")
    ap.add_argument("--smoke", action="store_true", help="3 prompts, no table; figures to bench/results/smoke")
    args = ap.parse_args(argv)
    if args.smoke:
        args.prompts, args.out = 3, "none"

    from harness.server import ComfyServer
    from shapes_world import make_scenes, prompt_for
    from shapes_world.score import check

    scenes = make_scenes(args.prompts, PROMPT_SEED, 64)
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    seconds = {c.name: np.zeros(len(scenes)) for c in CONFIGS}
    skips = {c.name: np.zeros(len(scenes)) for c in CONFIGS}
    scores = {c.name: {"colour level": np.zeros(len(scenes), bool), "strict": np.zeros(len(scenes), bool)}
              for c in CONFIGS}
    start = time.perf_counter()
    os.environ.update(env)  # the server process inherits the pinned thread count
    with ComfyServer() as server:
        server.add_model(SHIPPED / "l2p" / MODEL, "l2p")
        server.add_model(SHIPPED / "text_encoders" / TEXT_ENCODER, "text_encoders")
        server.run(Config("warm-up").insert(prompt_graph(prompt_for(scenes[0]), 0)), timeout=600)
        for i, scene in enumerate(scenes):
            base = prompt_graph(prompt_for(scene), PROMPT_SEED * 1000 + i)
            order = CONFIGS[i % len(CONFIGS):] + CONFIGS[:i % len(CONFIGS)]
            for config in order:
                log_start = len(server.log_text())
                secs, result = sampler_seconds(server, config.insert(base))
                (png,) = server.output_images(result)
                image = np.asarray(Image.open(png).convert("RGB"))
                seconds[config.name][i] = secs
                if config.node:
                    skips[config.name][i] = len(re.findall(rf"{config.node} \[verbose\] - skipping step",
                                                           server.log_text()[log_start:]))
                scores[config.name]["colour level"][i] = check(image, scene.spec, match_shape=False).correct
                scores[config.name]["strict"][i] = check(image, scene.spec).correct
            if (i + 1) % 20 == 0 or i + 1 == len(scenes):
                print(f"  {i + 1}/{len(scenes)} prompts", flush=True)

    n = len(scenes)
    lines = ["# Step caching on an L2P model (shapes world, CPU)", "",
             f"Shipped demo model, {n} held-out prompts, one image each (64x64), Euler 20 steps, CFG 3, "
             f"{args.threads} threads, configurations rotated per prompt. Measured, not modelled. 95% intervals: "
             "bootstrap over prompts for the speed-up and score changes, Wilson for a score.", "",
             "| configuration | steps answered from the cache (of 20) | sampler s per image (median) | speed-up | "
             "colour level | change | strict | change |", "|---|---|---|---|---|---|---|---|"]
    base = CONFIGS[0].name
    figures = []
    for c in CONFIGS:
        speed = ratio_interval(seconds[base], seconds[c.name])
        if c.name != base:
            d = paired_bootstrap(scores[c.name]["colour level"], scores[base]["colour level"])
            figures += [Figure(f"{c.name}: sampler speed-up (shapes model, 20 steps)", *speed[:1], "x", "measured",
                               *speed[1:], "95% bootstrap interval over prompts"),
                        Figure(f"{c.name}: colour-level score change", d[0], "score", "measured", d[1], d[2],
                               "95% paired bootstrap interval")]
        cells = [c.name, f"{skips[c.name].mean():.1f}", f"{np.median(seconds[c.name]):.3f}",
                 f"{speed[0]:.2f}x [{speed[1]:.2f}, {speed[2]:.2f}]"]
        for metric in ("colour level", "strict"):
            hits = scores[c.name][metric]
            lo, hi = wilson(int(hits.sum()), n)
            cells.append(f"{hits.mean():.3f} [{lo:.3f}, {hi:.3f}]")
            if c.name == base:
                cells.append("")
            else:
                d, dlo, dhi = paired_bootstrap(hits, scores[base][metric])
                cells.append(f"{d:+.3f} [{dlo:+.3f}, {dhi:+.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    took = time.perf_counter() - start
    lines += ["", f"Wall time {took:.0f} s (`python -m bench.step_cache --prompts {n}`)."]
    write_figures("step_cache", figures, took, f"shapes demo model, {n} prompts, {args.threads} threads, "
                  "configurations rotated per prompt", args.smoke)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out != "none":
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
