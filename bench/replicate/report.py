"""bench/RESULTS.md, its plots and image grid from a pipeline report; and shipping the demo model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shapes_world.scene import TASKS

from .config import RESULTS_DIR, RESULTS_MD, RUNS, SHIPPED

LABELS = {
    "l2p_paper_syn": "L2P, paper policy, synthetic data",
    "l2p_official_syn": "L2P, official policy, synthetic data",
    "l2p_paper_real": "L2P, paper policy, rendered (real) data",
    "scratch_syn": "pixel DiT from scratch, synthetic data",
    "l2p_demo": "L2P, paper policy, synthetic data, 4x the steps (shipped demo)",
    "l2p_paper_syn_vae": "L2P, paper policy, synthetic data, pixel embedder fitted through the VAE (vae_orth)",
}
SHORT = {"l2p_paper_syn": "L2P paper/syn", "l2p_official_syn": "L2P official/syn", "l2p_paper_real": "L2P paper/real",
         "scratch_syn": "scratch/syn", "l2p_demo": "L2P demo (paper/syn, long)",
         "l2p_paper_syn_vae": "L2P paper/syn, vae_orth init"}
DEMO_L2P, DEMO_TE = "l2p-shapes-demo.safetensors", "l2p-shapes-te.safetensors"


def final(run: dict[str, Any]) -> dict[str, Any]:
    return run["curve"][-1]


def best_run(report: dict[str, Any]) -> str:
    """The L2P run (converted source, not the scratch baseline) with the best final score (GenEval, then the
    colour-level score)."""
    runs = {k: v for k, v in report.get("runs", {}).items() if RUNS[k].start.startswith("convert")}
    return max(runs, key=lambda k: (final(runs[k])["geneval"]["overall"], final(runs[k])["colour_level"]["overall"]))


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _row(name: str, geneval: dict[str, Any], colour: dict[str, Any], detail: float, stripes: float,
         note: str = "") -> str:
    """Per task: strict GenEval / colour level."""
    def acc(scores: dict[str, Any], task: str) -> float:
        return scores["per_task"].get(task, {}).get("accuracy", float("nan"))

    cells = [f"{acc(geneval, t):.2f} / {acc(colour, t):.2f}" for t in TASKS]
    return (f"| {name} | **{geneval['overall']:.3f}** | **{colour['overall']:.3f}** | " + " | ".join(cells)
            + f" | {stripes:.2f} | {detail:.2f} | {note} |")


def grid(pipeline, out: Path, rows: int = 6, scale: int = 2) -> Path:
    """Rows: the first eval prompts (one per task); columns: ground truth, VAE, source, each run."""
    from PIL import Image, ImageDraw

    columns = [("ground truth", pipeline.eval_gt), ("VAE recon.", pipeline.vae_recon),
               ("source (latent)", pipeline.source_images)]
    columns += [(SHORT[k], v) for k, v in getattr(pipeline, "run_images", {}).items()]
    side = pipeline.b.size * scale
    label_h, pad = 28, 4
    prompt_w = 330
    canvas = Image.new("RGB", (prompt_w + len(columns) * (side + pad), label_h + rows * (side + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (name, _) in enumerate(columns):
        draw.text((prompt_w + c * (side + pad) + 2, 8), name, fill=(0, 0, 0))
    for r in range(min(rows, len(pipeline.eval_prompts))):
        y = label_h + r * (side + pad)
        words, lines, line = pipeline.eval_prompts[r].split(), [], ""
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
    from training.plots import bar_chart, line_chart

    runs = report.get("runs", {})
    out = {}
    for metric, title, file in (("geneval", "GenEval (procedural)", "convergence.png"),
                                ("colour_level", "Colour-level GenEval (any outline)", "convergence_colour.png")):
        series = {SHORT[k]: [(p["seconds"], p[metric]["overall"]) for p in curve_with_seconds(v)]
                  for k, v in runs.items()}
        out[file[:-4]] = line_chart(str(folder / file), series, f"{title} vs training compute",
                                    "training seconds (2 CPU cores)", "overall")
    loss = {SHORT[k]: [(t, loss) for t, _, loss in v["log"]] for k, v in runs.items() if v.get("log")}
    if loss:
        out["loss"] = line_chart(str(folder / "train_loss.png"), loss, "Training loss (flow matching, pixels)",
                                 "training seconds (2 CPU cores)", "loss (mean of 10 steps)")
    names = ["ground truth", "VAE recon.", "source", *[SHORT[k] for k in runs]]
    for metric, title in (("stripes", "Stripe depth (ratio to ground truth)"),
                          ("detail", "High-frequency energy (ratio to ground truth; noise counts)")):
        values = [1.0, report["vae"][f"{metric}_recon"], report["source_eval"][metric],
                  *[final(v)[metric] for v in runs.values()]]
        out[metric] = bar_chart(str(folder / f"{metric}.png"), values, names, title, "", "ratio")
    for metric, gt, recon, title in (("geneval", "gt_eval", "score_recon", "GenEval (procedural)"),
                                     ("colour_level", "gt_colour", "colour_recon", "Colour-level GenEval")):
        scores = [report["world"][gt]["overall"], report["vae"][recon]["overall"],
                  report["source_eval"][metric]["overall"], *[final(v)[metric]["overall"] for v in runs.values()]]
        out[metric] = bar_chart(str(folder / f"{metric}.png"), scores, names, f"{title}, final models", "",
                                "overall accuracy")
    return out


def curve_with_seconds(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Each evaluated step with the trainer's wall time at that step (linear between logged steps)."""
    log = run.get("log") or []
    pts = [(0, 0.0)] + [(step, t) for t, step, _ in log]
    steps, secs = [p[0] for p in pts], [p[1] for p in pts]
    return [{**p, "seconds": float(np.interp(p["step"], steps, secs))} for p in run["curve"]]


def score_at(run: dict[str, Any], seconds: float, metric: str = "geneval") -> float:
    """A run's score interpolated at a training wall time (its last score beyond its end)."""
    pts = curve_with_seconds(run)
    return float(np.interp(seconds, [p["seconds"] for p in pts], [p[metric]["overall"] for p in pts]))


def _pair(scores: dict[str, Any]) -> str:
    """"strict / colour-level" overall scores."""
    return f"{scores['geneval']['overall']:.3f} / {scores['colour_level']['overall']:.3f}"


def _ratios(scores: dict[str, Any], source: dict[str, Any]) -> str:
    return " / ".join(f"{ratio(scores[m]['overall'], source[m]['overall']):.2f}x" for m in ("geneval", "colour_level"))


def findings(report: dict[str, Any]) -> list[str]:
    """The paper's claims, each as the comparison this run measured (sentences built from the numbers).

    Every score is given as "GenEval / colour-level GenEval"."""
    runs = report.get("runs", {})
    if not {"l2p_paper_syn", "l2p_official_syn", "l2p_paper_real", "scratch_syn"} <= set(runs):
        return []
    src = report["source_eval"]
    paper, official, real, scratch = (runs[k] for k in ("l2p_paper_syn", "l2p_official_syn", "l2p_paper_real",
                                                         "scratch_syn"))
    t_paper = curve_with_seconds(paper)[-1]["seconds"]
    at_t = " / ".join(f"{score_at(scratch, t_paper, m):.3f}" for m in ("geneval", "colour_level"))
    found = re.search(r"\(([\d.]+%)\)", paper["policy"])
    share = found.group(1) if found else "?"
    return ["", "## What this run shows", "", "Scores are GenEval / colour-level GenEval.", "",
            f"- **Prompt following kept.** The source scores {_pair(src)}; L2P (paper policy, synthetic data) "
            f"{_pair(final(paper))} = {_ratios(final(paper), src)} the source, with the official policy "
            f"{_pair(final(official))} = {_ratios(final(official), src)} (paper: 0.93x on GenEval).",
            f"- **Equal compute.** After {t_paper:.0f} s of training (the paper-policy run's whole budget), L2P "
            f"scores {_pair(final(paper))}; the same-size pixel DiT trained from scratch on the same data scores "
            f"{at_t} at the same wall time and {_pair(final(scratch))} after its whole budget "
            f"({curve_with_seconds(scratch)[-1]['seconds']:.0f} s).",
            f"- **Synthetic vs rendered data** (paper policy, same steps): {_pair(final(paper))} on the source's "
            f"own images vs {_pair(final(real))} on ground-truth renders of other prompts (stripes "
            f"{final(paper)['stripes']:.2f} vs {final(real)['stripes']:.2f}).",
            f"- **Frozen middle vs full.** Paper policy (middle blocks frozen; {share} of the parameters trained) "
            f"{_pair(final(paper))} at {paper['seconds_per_step']:.2f} s/step; official policy, which at this depth "
            f"({report['budget']['layers']} blocks < 11) freezes nothing, i.e. a full fine-tune: "
            f"{_pair(final(official))} at {official['seconds_per_step']:.2f} s/step.",
            f"- **Fine detail.** Stripe depth relative to the ground truth: VAE reconstructions "
            f"{report['vae']['stripes_recon']:.2f}, source samples {src['stripes']:.2f}, L2P "
            f"{final(paper)['stripes']:.2f} (paper policy) / {final(official)['stripes']:.2f} (official) / "
            f"{final(real)['stripes']:.2f} (rendered data). High-frequency energy (grain counts too): "
            f"{report['vae']['detail_recon']:.2f}, {src['detail']:.2f}, {final(paper)['detail']:.2f} / "
            f"{final(official)['detail']:.2f} / {final(real)['detail']:.2f}."]


def markdown(pipeline, report: dict[str, Any], images: dict[str, str]) -> str:
    b, runs = report["budget"], report.get("runs", {})
    v = report["world"]["validation"]
    src = report["source_eval"]["geneval"]
    secs = report["seconds"]
    lines = [
        "# Replicating L2P on the shapes world (`python -m bench.replicate`)",
        "",
        "Every number here comes from `bench/replicate/` on this repository's code: the world and its scorer "
        "(`shapes_world/`), the latent source trained on CPU, the pack's own conversion (`python -m l2p.convert`), "
        "dataset generation (the source renders its images through a real headless ComfyUI with the pack's nodes: "
        "`workflows/l2p_shapes_dataset`) and trainer (`training/launch.py`). Seeds are fixed; each stage is cached "
        "and reruns alone when its inputs change.",
        "",
        "## The world",
        "",
        f"{b['size']}x{b['size']} images of circles, squares and triangles in 5 colours on plain, striped (1-px lines "
        "every 2-3 px) or dotted backgrounds; English prompts from a small grammar; GenEval's six tasks. The scorer "
        "(`shapes_world/score.py`) finds objects by hue, counts connected components and classifies shapes by "
        f"geometry. Validated on {v['n'] if 'n' in v else b['validate']} rendered scenes:",
        "",
        "| check | accuracy |",
        "| --- | ---: |",
    ]
    for name, value in v.items():
        if isinstance(value, dict) and "overall" in value:
            lines.append(f"| {name.replace('_', ' ')} | {value['overall']:.3f} |")
        elif isinstance(value, float):
            lines.append(f"| {name.replace('_', ' ')} | {value:.3f} |")
    lines += [
        "",
        "## Models",
        "",
        f"- VAE: diffusers AutoencoderKL, 8x down, 16 latent channels, widths 32-32-64-64 "
        f"({report['vae']['params'] / 1e6:.2f} M parameters), {b['vae_steps']} steps x {b['vae_batch']}; "
        f"held-out PSNR {report['vae']['psnr']:.1f} dB. Latents normalised into Z-Image's latent format, baked in "
        "the weights so ComfyUI's stock sampling path sees the same latents.",
        f"- Source: Z-Image DiT (diffusers `ZImageTransformer2DModel`, the class the pack converts), dim {b['dim']}, "
        f"{b['layers']} blocks + 1 refiner each, latent patch 2 (4x4 tokens), "
        f"{report['source']['params'] / 1e6:.2f} M parameters; text encoder: a Qwen3 of width {b['cap_dim']} over "
        f"the world's words ({report['source']['te_params'] / 1e3:.0f} k parameters), trained jointly: "
        f"{b['source_steps']} steps x {b['source_batch']}, loss {report['source']['loss']}.",
        "- L2P: the source converted to pixel patch 16 (4x4 tokens) with a 4x narrower Detailer Head; trained "
        f"with training/launch.py, batch {b['train_batch']}, lr {b['train_lr']:g} (steps per run in the "
        f"convergence table; runs in this report: {', '.join(SHORT[k] for k in runs) or 'none'}) on "
        f"{report['data_syn']['items']} images, 4 per prompt. Sampling everywhere: Euler, {b['sample_steps']} steps, "
        f"shift {b['shift']:g}, CFG {b['cfg']:g}, the same {b['eval_prompts']} held-out prompts and seeds.",
        "",
        "## GenEval (procedural) and detail",
        "",
        "GenEval: an object counts only when its colour and its outline (circle, square, triangle) are right. "
        "Colour level: any outline counts, while colour, count, colour binding and position are still checked; "
        "it tells a model that draws the right things as blobs from one that draws the wrong things. Per task: "
        "GenEval / colour level.",
        "",
        "| model | GenEval | colour level | " + " | ".join(t.replace("_", " ") for t in TASKS)
        + " | stripes | HF energy | |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in TASKS) + " | ---: | ---: | --- |",
        _row("ground-truth renders", report["world"]["gt_eval"], report["world"]["gt_colour"], 1.0, 1.0,
             "scorer ceiling"),
        _row("VAE reconstructions", report["vae"]["score_recon"], report["vae"]["colour_recon"],
             report["vae"]["detail_recon"], report["vae"]["stripes_recon"], "source ceiling"),
        _row("source (latent + VAE)", src, report["source_eval"]["colour_level"], report["source_eval"]["detail"],
             report["source_eval"]["stripes"]),
    ]
    for k, r in runs.items():
        lines.append(_row(LABELS[k], final(r)["geneval"], final(r)["colour_level"], final(r)["detail"],
                          final(r)["stripes"], f"{_ratios(final(r), report['source_eval'])} source"))
    lines += [
        "",
        "Fine detail, both relative to the ground-truth renders of the same prompts (`shapes_world/detail.py`): "
        "stripes = depth of the 1-px stripes every 2-3 px on the prompts that ask for a striped background (1 = "
        "as crisp as the truth, 0 = gone; grain averages out); HF energy = share of luminance spectral energy "
        "above 1/4 cycles/pixel (1 = as much as the truth; above 1 = grain or noise the truth does not have).",
    ]
    if runs:
        best = best_run(report)
        lines += ["", f"**L2P / source ratio: {_ratios(final(runs[best]), report['source_eval'])}** (GenEval / "
                      f"colour level; {SHORT[best]}; the paper reports 0.93 on GenEval for Z-Image)."]
    lines += findings(report)
    lines += ["", "## Convergence at equal compute", "",
              "GenEval, colour level and stripe depth at each evaluated checkpoint: step, then the trainer's wall "
              "time (2 CPU cores).", "", "| run | step: GenEval / colour level / stripes @ seconds | s/step |",
              "| --- | --- | ---: |"]
    for k, r in runs.items():
        cells = [f"{p['step']}: {_pair(p)} / {p['stripes']:.2f} @ {p['seconds']:.0f} s"
                 for p in curve_with_seconds(r)]
        lines.append(f"| {SHORT[k]} | " + "; ".join(cells) + f" | {r['seconds_per_step']:.2f} |")
    lines += ["", "Trainable sets:", ""] + [f"- {SHORT[k]}: {r['policy']}" for k, r in runs.items()]
    lines += ["", "## Plots", ""] + [f"![{k}](results/replicate/{Path(p).name})" for k, p in images.items()]
    lines += ["", "## Stage timings", "", "| stage | seconds |", "| --- | ---: |"]
    lines += [f"| {k} | {s:.0f} |" for k, s in secs.items()]
    lines += [f"| **all stages (a rerun from an empty cache)** | **{sum(secs.values()):.0f}** "
              f"({sum(secs.values()) / 60:.0f} min) |"]
    lines += ["", f"Total wall time of this run: {report['total_seconds']:.0f} s"
              + (f" (cached stages, counted above at their original time: {', '.join(report['cached'])})"
                 if report["cached"] else "") + ".", ""]
    return "\n".join(lines)


def write_report(pipeline, report: dict[str, Any], smoke: bool = False) -> Path:
    folder = pipeline.dir / "results" if smoke else RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    images = plots(report, folder)
    images["grid"] = str(grid(pipeline, folder / "grid.png"))
    out = folder / "RESULTS.md" if smoke else RESULTS_MD
    out.write_text(markdown(pipeline, report, images), encoding="utf-8")
    (folder / "report.json").write_text(__import__("json").dumps(report, indent=1, default=str), encoding="utf-8")
    return out


def ship(pipeline, report: dict[str, Any], dest: Path = SHIPPED) -> str:
    """The best L2P run's export in fp16 (official layout) and the text encoder, into shapes_world/models."""
    import safetensors
    import safetensors.torch

    from l2p.format.tensor_io import save_safetensors_atomic

    name = best_run(report)
    src = report["runs"][name]["export"]
    with safetensors.safe_open(src, framework="pt") as f:
        meta = dict(f.metadata() or {})
    sd = safetensors.torch.load_file(src)
    scores = final(report["runs"][name])
    meta.update({"l2p.shapes_world.run": name, "l2p.shapes_world.geneval": f"{scores['geneval']['overall']:.4f}",
                 "l2p.shapes_world.colour_level": f"{scores['colour_level']['overall']:.4f}"})
    files = (dest / "l2p" / DEMO_L2P, dest / "text_encoders" / DEMO_TE)
    save_safetensors_atomic(sd, str(files[0]), metadata=meta, dtype=torch.float16)
    save_safetensors_atomic(pipeline.te_sd, str(files[1]), metadata=pipeline.te_meta, dtype=torch.float16)
    sizes = {p.name: p.stat().st_size / 2**20 for p in files}
    return f"shipped {name}: " + ", ".join(f"{k} {v:.1f} MiB" for k, v in sizes.items())
