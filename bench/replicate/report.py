"""bench/RESULTS.md from a pipeline report: the design and its pass criteria (stated before the run), test scores
with intervals, the verdicts, the validation curves, the flow loss per sigma; and shipping the demo model."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shapes_world.scene import TASKS

from .config import BUDGETS, HEAD_WIDTH_DIV, MAIN_PAIR, RESULTS_MD, RUNS, SHIPPED, Budget, results_paths

LABELS = {
    "published": "L2P as published (released init, paper set, one rate)",
    "aligned": "L2P aligned (distill init, paper set, two rates), seed 0",
    "aligned_s1": "L2P aligned, seed 1",
    "aligned_frozen": "L2P aligned, whole trunk frozen (embedder + head train)",
    "scratch_s1": "pixel DiT from scratch, chosen rate, seed 1",
}
DEMO_L2P, DEMO_TE = "l2p-shapes-demo.safetensors", "l2p-shapes-te.safetensors"
METRICS = {"colour_level": "colour level", "geneval": "GenEval"}
PRIMARY = "colour_level"
RETENTION_MIN, RETENTION_LOW_MIN, CHECKPOINTS_MIN = 0.9, 0.8, 2
RESAMPLES = 2000

# Written before the run (committed with the code that runs it); the report only fills in the numbers.
DESIGN = f"""## Design and pass criteria (stated before the run)

- **Runs.** One world, VAE and latent source for all. *L2P as published*: the released conversion (random pixel
  embedder and Detailer Head), the paper's trainable set (pixel embedder, noise refiner, first and last block,
  head), one learning rate. *L2P aligned*: the aligned conversion (`l2p.convert --init distill` on the synthetic
  dataset with its captions), then the same set with separate rates for the new and the pretrained weights; two
  seeds. *L2P aligned, trunk frozen*: the aligned conversion, then only the pixel embedder and the head train.
  *Scratch*: the same architecture from its default init, every weight trained, two seeds; its learning rate is
  the better of {{rates}} on validation. Every run trains on the source's own images (the synthetic dataset).
- **Equal compute.** Scratch trains {{extra}} more steps than an L2P run: the distill's images, each counted as
  one training image (a distill step costs less than a training step, so this favours scratch). Curves are read
  at equal compute: an aligned run's step s is compute s + {{extra}}.
- **Splits.** Validation ({{val}} prompts, {{val_task}} per task) for every choice: the checkpoint (best colour
  level at CFG {{cfg}}, ties to the later step); then the CFG among {{cfgs}} (ties to {{cfg}}) for the source and
  each seed-0 run, which its seed-1 twin takes; the scratch rate (each candidate at its chosen checkpoint, CFG
  {{cfg}}; the other candidate stays at CFG {{cfg}}); and the shipped demo model. Test ({{test}} prompts,
  {{test_task}} per task, other seeds) for every reported score, sampled once per model at its chosen checkpoint
  and CFG.
- **Metric.** The primary score is colour-level GenEval (right colours, counts, positions and colour binding,
  any outline): at this size the source's strict GenEval is near the floor, so its ratios are noise. Strict
  GenEval is reported beside it.
- **Intervals.** 95% percentile bootstrap over prompts ({RESAMPLES} resamples, resampled within each task),
  paired wherever two models share prompts and seeds: each score, each retention (ratio to the source) and each
  difference. A two-seed result is the per-prompt mean of its seeds.
- **Pass criteria.** (1) Retention of the aligned L2P (two-seed mean, test) over the source is at least
  {RETENTION_MIN} with its lower bound at least {RETENTION_LOW_MIN}. (2) The aligned L2P is above scratch (two-seed
  means, validation curves at equal compute) at {CHECKPOINTS_MIN} or more checkpoints, each with the interval of
  the difference above 0. A point estimate above 0 whose interval includes 0 counts as "no difference".
- **Checks that the trunk is used.** The flow loss (velocity noise − x0) per sigma on the source's own images of
  {{flow}} validation prompts, and the text gain there: (loss with the empty prompt − loss with the right one) ÷
  loss with the right one, which is unitless and so comparable with the latent source's.
"""


def hits(scores: dict[str, Any], metric: str = PRIMARY) -> np.ndarray:
    return np.asarray(scores["hits"][metric], dtype=float)


def strata(tasks: list[str]) -> list[np.ndarray]:
    return [np.flatnonzero(np.asarray(tasks) == t) for t in TASKS if t in tasks]


@functools.lru_cache(maxsize=8)
def resamples(tasks: tuple[str, ...], seed: int) -> np.ndarray:
    """The bootstrap's prompt indices, one row per resample, drawn within each task; the same for every statistic
    on the same prompts (drawing them is most of a report's time)."""
    rng = np.random.default_rng(seed)
    groups = strata(list(tasks))
    rows = [np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups]) for _ in range(RESAMPLES)]
    rows_array = np.stack(rows)
    rows_array.flags.writeable = False
    return rows_array


def bootstrap(stat, arrays: list[np.ndarray], tasks: list[str], seed: int = 0) -> tuple[float, float, float]:
    """``stat(*arrays)`` and its 95% percentile interval, resampling prompts within each task (pairs kept)."""
    draws = [stat(*(a[idx] for a in arrays)) for idx in resamples(tuple(tasks), seed)]
    value = stat(*arrays)
    return float(value), float(np.nanpercentile(draws, 2.5)), float(np.nanpercentile(draws, 97.5))


def _mean(a: np.ndarray) -> float:
    return float(a.mean())


def _ratio(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.mean() / b.mean()) if b.mean() else float("nan")


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.mean() - b.mean())


def fmt(v: tuple[float, float, float], digits: int = 3) -> str:
    return f"{v[0]:.{digits}f} [{v[1]:.{digits}f}, {v[2]:.{digits}f}]"


def scratch_runs(report: dict[str, Any]) -> tuple[str, str]:
    chosen = report.get("scratch_lr", {}).get("run", "")
    return chosen, MAIN_PAIR[1][1]


def pair_names(report: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """The main pair's two-seed groups, as the run names present in this report."""
    runs = report.get("runs", {})
    aligned = tuple(r for r in MAIN_PAIR[0] if r in runs)
    scratch = tuple(r for r in scratch_runs(report) if r in runs)
    return {"aligned": aligned, "scratch": scratch}


def group_hits(report: dict[str, Any], names: tuple[str, ...], where: str, metric: str = PRIMARY,
               step: int | None = None) -> np.ndarray:
    """Per-prompt hits averaged over seeds: the test split (``where="test"``) or the validation curve at compute
    ``step``."""
    runs = report["runs"]
    if where == "test":
        return np.mean([hits(runs[n]["test"], metric) for n in names], axis=0)
    return np.mean([hits(next(p for p in runs[n]["curve"] if p["compute"] == step), metric) for n in names], axis=0)


def verdicts(report: dict[str, Any]) -> dict[str, Any]:
    """The two pre-stated criteria, with their numbers."""
    src = report["source_eval"]["test"]
    tasks = src["tasks"]
    groups = pair_names(report)
    out: dict[str, Any] = {}
    if groups["aligned"]:
        ret = bootstrap(_ratio, [group_hits(report, groups["aligned"], "test"), hits(src)], tasks)
        ok = ret[0] >= RETENTION_MIN and ret[1] >= RETENTION_LOW_MIN
        out["retention"] = {"value": ret, "pass": ok}
    if groups["aligned"] and groups["scratch"]:
        runs = report["runs"]
        common = sorted(set.intersection(*({p["compute"] for p in runs[n]["curve"]}
                                           for n in (*groups["aligned"], *groups["scratch"]))))
        val_tasks = runs[groups["aligned"][0]]["curve"][0]["tasks"]
        points = {c: bootstrap(_diff, [group_hits(report, groups["aligned"], "val", step=c),
                                      group_hits(report, groups["scratch"], "val", step=c)], val_tasks)
                  for c in common}
        above = [c for c, v in points.items() if v[1] > 0]
        out["above_scratch"] = {"points": points, "above": above, "pass": len(above) >= CHECKPOINTS_MIN}
        out["test_difference"] = bootstrap(_diff, [group_hits(report, groups["aligned"], "test"),
                                                   group_hits(report, groups["scratch"], "test")], tasks)
    out["seed_spread"] = {arm: bootstrap(_diff, [group_hits(report, names[1:], "test"),
                                                 group_hits(report, names[:1], "test")], tasks)
                          for arm, names in groups.items() if len(names) == 2}
    return out


def _score_row(name: str, scores: dict[str, Any], source: dict[str, Any] | None, chosen: str) -> str:
    tasks = scores["tasks"]
    cells = []
    for metric in METRICS:
        cells.append(fmt(bootstrap(_mean, [hits(scores, metric)], tasks)))
    per_task = " ".join(f"{scores[PRIMARY]['per_task'].get(t, {}).get('accuracy', float('nan')):.2f}" for t in TASKS)
    ret = (fmt(bootstrap(_ratio, [hits(scores), hits(source)], tasks), 2) if source is not None else "")
    return (f"| {name} | {cells[0]} | {cells[1]} | {ret} | {per_task} | {scores['stripes']:.2f} | "
            f"{scores['detail']:.2f} | {chosen} |")


def scores_table(report: dict[str, Any]) -> list[str]:
    src = report["source_eval"]
    world, vae = report["world"], report["vae"]
    lines = ["| model | colour level [95%] | GenEval [95%] | retention (colour level) | per task: "
             + " / ".join(t.replace("_", " ") for t in TASKS) + " | stripes | HF energy | checkpoint, CFG |",
             "| --- | --- | --- | --- | --- | ---: | ---: | --- |"]
    lines.append(f"| ground-truth renders | {world['gt_colour']['overall']:.3f} | {world['gt_test']['overall']:.3f} | "
                 "| | 1.00 | 1.00 | scorer ceiling |")
    lines.append(_score_row("VAE reconstructions", vae["test"], None, "source ceiling"))
    lines.append(_score_row("**source** (latent + VAE)", src["test"], None, f"CFG {src['cfg']:g}"))
    for name, run in report.get("runs", {}).items():
        chosen = f"step {run['chosen']['step']}, CFG {run['chosen']['cfg']:g}"
        lines.append(_score_row(label(name, report), run["test"], src["test"], chosen))
    return lines


def label(name: str, report: dict[str, Any]) -> str:
    if name in LABELS:
        return LABELS[name]
    lr = RUNS[name].lr
    chosen = " (chosen on validation)" if report.get("scratch_lr", {}).get("run") == name else ""
    return f"pixel DiT from scratch, lr {lr:g}, seed 0{chosen}"


def curve_table(report: dict[str, Any]) -> list[str]:
    runs = report.get("runs", {})
    computes = sorted({p["compute"] for r in runs.values() for p in r["curve"]})
    lines = ["| run | " + " | ".join(f"{c}" for c in computes) + " |", "| --- |" + " ---: |" * len(computes)]
    for name, run in runs.items():
        at = {p["compute"]: p[PRIMARY]["overall"] for p in run["curve"]}
        lines.append(f"| {label(name, report)} | " + " | ".join(f"{at[c]:.3f}" if c in at else "" for c in computes)
                     + " |")
    return lines


def flow_table(report: dict[str, Any]) -> list[str]:
    src = report["source_eval"].get("flow")
    runs = {n: r["flow"] for n, r in report.get("runs", {}).items()}
    if not src:
        return []
    sigmas = src["sigmas"]
    lines = ["Flow loss with the right caption (pixels; the source's is in its latent space), then the text gain "
             "(empty − right) ÷ right, at each sigma:", "",
             "| model | " + " | ".join(f"σ {s:.2f}" for s in sigmas) + " |", "| --- |" + " ---: |" * len(sigmas)]
    for name, flow in runs.items():
        lines.append(f"| {label(name, report)}: loss | " + " | ".join(f"{v:.3f}" for v in flow["caption"]) + " |")
    for name, flow in [("source (latent)", src), *((label(n, report), f) for n, f in runs.items())]:
        gains = [(e - c) / c if c else float("nan") for e, c in zip(flow["empty"], flow["caption"], strict=True)]
        lines.append(f"| {name}: text gain | " + " | ".join(f"{g:+.1%}" for g in gains) + " |")
    return lines


SHORT = {"published": "published", "aligned": "aligned s0", "aligned_s1": "aligned s1",
         "aligned_frozen": "aligned, frozen", "scratch_s1": "scratch s1"}


def grid(pipeline, out: Path, rows: int = 6, scale: int = 2) -> Path:
    """Rows: the first test prompts (one per task); columns: ground truth, VAE, source, each run (test images)."""
    from PIL import Image, ImageDraw

    test = pipeline.splits["test"]
    columns = [("ground truth", test.gt), ("VAE recon.", pipeline.vae_recon),
               ("source (latent)", pipeline.source_test_images)]
    columns += [(SHORT.get(k, k.replace("scratch_lr", "scratch ")), v)
                for k, v in getattr(pipeline, "test_images", {}).items()]
    side = pipeline.b.size * scale
    label_h, pad, prompt_w = 28, 4, 330
    canvas = Image.new("RGB", (prompt_w + len(columns) * (side + pad), label_h + rows * (side + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (name, _) in enumerate(columns):
        draw.text((prompt_w + c * (side + pad) + 2, 8), name, fill=(0, 0, 0))
    for r in range(min(rows, len(test.prompts))):
        y = label_h + r * (side + pad)
        words, lines, line = test.prompts[r].split(), [], ""
        for w in words:
            if len(line) + len(w) > 46:
                lines.append(line)
                line = ""
            line = f"{line} {w}".strip()
        draw.multiline_text((4, y + 8), "\n".join([*lines, line]), fill=(0, 0, 0))
        for c, (_, images) in enumerate(columns):
            tile = Image.fromarray(np.asarray(images[r])).resize((side, side), Image.NEAREST)
            canvas.paste(tile, (prompt_w + c * (side + pad), y))
    canvas.save(out)
    return out


def plots(report: dict[str, Any], folder: Path) -> dict[str, str]:
    from training.plots import line_chart

    runs = report.get("runs", {})
    series = {label(k, report)[:40]: [(p["compute"], p[PRIMARY]["overall"]) for p in v["curve"]]
              for k, v in runs.items()}
    if not series:
        return {}
    return {"curves": line_chart(str(folder / "curves.png"), series, "Colour level on validation vs compute",
                                 "compute (training steps; distill counted)", "colour level")}


def markdown(budget: Budget, report: dict[str, Any], images: dict[str, str], home: Path = RESULTS_MD.parent) -> str:
    """The report; ``home`` is the markdown file's folder (image links are relative to it)."""
    b = report["budget"]
    v = verdicts(report)
    src = report["source_eval"]
    extra = budget.scratch_extra_steps
    design = DESIGN.format(rates=", ".join(f"{r:g}" for r in sorted({RUNS[n].lr for n in RUNS if RUNS[n].lr
                                                                    and RUNS[n].scratch})),
                           extra=extra, val=b["val_prompts"], val_task=b["val_prompts"] // len(TASKS), cfg=b["cfg"],
                           cfgs=", ".join(f"{c:g}" for c in b["cfg_choices"]), test=b["test_prompts"],
                           test_task=b["test_prompts"] // len(TASKS), flow=b["flow_items"])
    grid_side = b["size"] // b["pixel_patch"]
    command = "python -m bench.replicate" + ("" if b["name"] in ("full", "smoke") else f" --budget {b['name']}")
    lines = [f"# Replicating L2P on the shapes world at {grid_side}x{grid_side} tokens (`{command}`)", "",
             "Every number here comes from `bench/replicate/` on this repository's code: the world and its scorer "
             "(`shapes_world/`), a latent source trained on CPU, the pack's own conversion (`python -m l2p.convert`, "
             "`--init distill` included), the synthetic dataset rendered by the source through a real headless "
             "ComfyUI with the pack's nodes (`workflows/l2p_shapes_dataset`), and the trainer (`training/launch.py`). "
             "Seeds are fixed; each stage is cached and reruns alone when its inputs change.", "", design]
    others = [f"[{o.size // o.pixel_patch}x{o.size // o.pixel_patch} tokens, `{o.name}` budget]"
              f"({os.path.relpath(md, home)})"
              for o in BUDGETS.values() if o.name != b["name"] and (md := results_paths(o)[1]).is_file()]
    if others:
        lines[-1:-1] = [f"The same design at other token grids or budgets, each with its own verdicts: "
                        f"{', '.join(others)}.", ""]
    lines += ["## Verdicts", ""]
    if "retention" in v:
        r = v["retention"]
        lines.append(f"- **Retention** (aligned L2P ÷ source, colour level, test): {fmt(r['value'], 2)}: "
                     f"**{'pass' if r['pass'] else 'fail'}** (needs ≥ {RETENTION_MIN} with lower bound "
                     f"≥ {RETENTION_LOW_MIN}).")
    if "above_scratch" in v:
        a = v["above_scratch"]
        pts = "; ".join(f"compute {c}: {fmt(d)}" for c, d in a["points"].items())
        lines.append(f"- **Aligned L2P above scratch** (colour level, validation, equal compute): above at "
                     f"{len(a['above'])} of {len(a['points'])} checkpoints: **{'pass' if a['pass'] else 'fail'}** "
                     f"(needs {CHECKPOINTS_MIN}). Differences: {pts}.")
        lines.append(f"- On the test split at each run's chosen checkpoint, aligned − scratch (two-seed means): "
                     f"{fmt(v['test_difference'])}"
                     + (" (no difference)" if v["test_difference"][1] <= 0 <= v["test_difference"][2] else "") + ".")
    if v.get("seed_spread"):
        spread = v["seed_spread"]
        lines.append("- **Seed spread** (seed 1 − seed 0 of the same arm, colour level, test): "
                     + "; ".join(f"{arm} {fmt(d)}" for arm, d in spread.items()) + ". The intervals above resample "
                     "prompts, not training seeds"
                     + (": the two seeds of one arm differ by more than the arms do, so every two-seed verdict here "
                        "is fragile." if "test_difference" in v and max(abs(d[0]) for d in spread.values())
                        > abs(v["test_difference"][0]) else "."))
    lines += ["", "## Test split", "", *scores_table(report), "",
              "Retention: the model's colour level ÷ the source's on the same prompts and seeds (paired). Per task: "
              "colour level. Stripes: depth of the 1-px stripes relative to the ground truth (1 = as crisp). HF "
              "energy: the share of luminance energy above 1/4 cycles/pixel relative to the truth (above 1 = grain).",
              "", "## Validation curves (colour level at CFG "
              f"{b['cfg']:g}, by compute in training steps)", "", *curve_table(report), ""]
    for name in ("curves", "grid"):
        if name in images and Path(images[name]).is_relative_to(home):
            lines += [f"![{name}]({Path(images[name]).relative_to(home).as_posix()})", ""]
    lines += ["## Is the trunk used?", "", *flow_table(report), ""]
    lines += ["## Models and runs", "",
              f"- Source: Z-Image DiT (diffusers `ZImageTransformer2DModel`), dim {b['dim']}, {b['layers']} blocks, "
              f"latent patch {b['latent_patch']}, {report['source']['params']:,} parameters; loss "
              f"{report['source']['loss']}. L2P models: pixel patch {b['pixel_patch']}, the {b['head']} Detailer "
              f"Head ({HEAD_WIDTH_DIV}x narrower). VAE PSNR "
              f"{report['vae']['psnr']:.1f} dB on the test renders. Source CFG chosen on validation: {src['cfg']:g}.",
              f"- Distill: {report.get('distill', {}).get('summary', '')} "
              f"({report.get('distill', {}).get('wall_seconds', 0):.0f} s).",
              f"- Scratch rate: {report.get('scratch_lr', {}).get('chosen', '')} (chosen on validation)."]
    for name, run in report.get("runs", {}).items():
        lines.append(f"- {label(name, report)}: {run['policy']}; lr {run['lr']:g}"
                     + (f", new weights {RUNS[name].lr_new:g}" if RUNS[name].lr_new else "")
                     + f"; {run['seconds_per_step']:.2f} s/step.")
    secs = report["seconds"]
    lines += ["", "## Stage timings", "", "| stage | seconds |", "| --- | ---: |"]
    lines += [f"| {k} | {s:.0f} |" for k, s in secs.items()]
    lanes = report.get("lanes", 1)
    lines += [f"| **all stages, one after another** | **{sum(secs.values()):.0f}** "
              f"({sum(secs.values()) / 60:.0f} min) |", "",
              f"Wall time of this invocation: {report['total_seconds']:.0f} s"
              + (" (the scratch runs in a second process beside the L2P runs, one thread each, so their stages "
                 "overlap: the sum above is more than the wall time)" if lanes > 1 else "")
              + ". A cached stage keeps the seconds it "
              "took when it ran, on whichever machine and in whichever session that was (`--runs … --no-report` "
              "runs the design in parts), alone or beside other jobs; `python -m bench.replicate.cost` times the "
              "heavy loops alone and projects the total from them.", ""]
    return "\n".join(lines)


def write_report(pipeline, report: dict[str, Any], smoke: bool = False) -> Path:
    folder, out = results_paths(pipeline.b)
    if smoke:
        folder = pipeline.dir / "results"
        out = folder / "RESULTS.md"
    folder.mkdir(parents=True, exist_ok=True)
    images = plots(report, folder)
    images["grid"] = str(grid(pipeline, folder / "grid.png"))
    report["verdicts"] = verdicts(report)
    out.write_text(markdown(pipeline.b, report, images, out.parent), encoding="utf-8")
    (folder / "report.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    return out


def recorded_markdown(budget: Budget) -> tuple[Path, str]:
    """A design's RESULTS.md (path, text) from its recorded report.json and the plots beside it, nothing rerun."""
    folder, out = results_paths(budget)
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    if report["budget"]["name"] != budget.name:
        raise ValueError(f"{folder / 'report.json'} records budget {report['budget']['name']!r}, not {budget.name!r}")
    images = {name: str(folder / f"{name}.png") for name in ("curves", "grid") if (folder / f"{name}.png").is_file()}
    return out, markdown(budget, report, images, out.parent)


def rewrite_markdown(budget: Budget) -> Path:
    """For when the report's wording or links change (``python -m bench.replicate.report``)."""
    out, text = recorded_markdown(budget)
    out.write_text(text, encoding="utf-8")
    return out


def best_run(report: dict[str, Any]) -> str:
    """The L2P run (not scratch) with the best validation score at its chosen checkpoint and CFG."""
    runs = {k: v for k, v in report.get("runs", {}).items() if not RUNS[k].scratch}
    return max(runs, key=lambda k: (runs[k]["chosen"]["val"][PRIMARY]["overall"],
                                    runs[k]["chosen"]["val"]["geneval"]["overall"]))


def ship(pipeline, report: dict[str, Any], dest: Path = SHIPPED) -> str:
    """The run chosen on validation, at its chosen checkpoint, in fp16 (official layout), and the text encoder,
    into shapes_world/models."""
    import safetensors

    from l2p.format.tensor_io import save_safetensors_atomic

    name = best_run(report)
    run = report["runs"][name]
    steps, _ = pipeline.checkpoints(name)
    model = pipeline.run_model(name, steps[run["chosen"]["step"]])
    with safetensors.safe_open(str(pipeline.start_file(name)[0]), framework="pt") as f:
        meta = dict(f.metadata() or {})
    val, test = run["chosen"]["val"], run["test"]
    meta.update({"l2p.shapes_world.budget": pipeline.b.name, "l2p.shapes_world.run": name,
                 "l2p.shapes_world.step": str(run["chosen"]["step"]),
                 "l2p.shapes_world.cfg": f"{run['chosen']['cfg']:g}",
                 "l2p.shapes_world.val_colour_level": f"{val[PRIMARY]['overall']:.4f}",
                 "l2p.shapes_world.test_colour_level": f"{test[PRIMARY]['overall']:.4f}",
                 "l2p.shapes_world.test_geneval": f"{test['geneval']['overall']:.4f}"})
    sd = {k: v.detach().contiguous() for k, v in model.official_state_dict().items()}
    files = (dest / "l2p" / DEMO_L2P, dest / "text_encoders" / DEMO_TE)
    save_safetensors_atomic(sd, str(files[0]), metadata=meta, dtype=torch.float16)
    save_safetensors_atomic(pipeline.te_sd, str(files[1]), metadata=pipeline.te_meta, dtype=torch.float16)
    sizes = {p.name: p.stat().st_size / 2**20 for p in files}
    return f"shipped {name}: " + ", ".join(f"{k} {v:.1f} MiB" for k, v in sizes.items())


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench.replicate.report",
                                 description="A design's RESULTS.md again from its report.json; nothing reruns.")
    ap.add_argument("--budget", choices=list(BUDGETS), action="append", help="default: every design with a report")
    args = ap.parse_args(argv)
    names = args.budget or [n for n, b in BUDGETS.items() if (results_paths(b)[0] / "report.json").is_file()]
    for name in names:
        print(f"rewrote {rewrite_markdown(BUDGETS[name])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
