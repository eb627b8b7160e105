"""Does a latent LoRA carry over to the L2P model converted from its source? (shapes world, CPU)

    python -m bench.lora_transfer             # reuses bench/replicate's cached world, VAE, source and L2P run
    python -m bench.lora_transfer --smoke     # toy budgets, every step in a few minutes (the test suite runs it)

The concept: a colour word the source never saw. ``crimson`` is not in the world's vocabulary, so its text
encoder reads it as ``<unk>`` and the source draws whatever colour that happens to suggest. A LoRA trained on
the latent source (rendered scenes with a red object, captioned with ``crimson`` for ``red``; adapters on every
linear layer of the main blocks, peft, as a user's LoRA would be) teaches it. The LoRA is then applied, as
``L2PLoraFromLatent`` applies it (``l2p.lora_transfer.select``: by default only the blocks the L2P model's policy
froze), to the L2P model trained from that source (``bench/replicate``'s paper-policy run), and every model draws
the same held-out prompts (scenes and noise seeds never used in the LoRA's training).

Scores, per image: **concept** = a red object is present (the scorer's detector); **colour level** = the whole
prompt is right with ``crimson`` read as red (colours, counts, positions; any outline). Each with a 95% Wilson
interval, and the LoRA's gain on each model as a paired bootstrap 95% interval over prompts. ``L2P, "red"``
(the same prompts with the word the model knows) is what the L2P model reaches for a colour it was taught.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import paired_bootstrap, wilson
from bench.replicate import models
from bench.replicate.config import CACHE, FULL, RESULTS_DIR, RUNS, SMOKE, Budget, stage_key
from bench.replicate.stages import Pipeline
from shapes_world import make_scenes, prompt_for
from shapes_world.render import render_many
from shapes_world.score import check, detect

NEW_WORD, MEANS = "crimson", "red"
RUN = "published"  # the L2P model the LoRA goes to: bench/replicate's "as published" run
LORA_SEEDS = {"train": 606, "test": 707, "adapters": 0}
CONFIGS = ("source", "source + LoRA", "L2P", "L2P + LoRA (frozen blocks)", "L2P + LoRA (all blocks)", 'L2P, "red"')


@dataclass(frozen=True)
class LoraBudget:
    scenes: int = 512  # training scenes with a red object
    test: int = 240  # held-out prompts
    steps: int = 600
    batch: int = 16
    rank: int = 8
    alpha: float = 8.0
    lr: float = 1e-3


FULL_LORA = LoraBudget()
SMOKE_LORA = LoraBudget(scenes=8, test=6, steps=2, batch=4)


def with_concept(n: int, seed: int, size: int) -> list:
    """``n`` scenes (any task) with at least one red object: the world's own scene sampler, filtered."""
    out, k = [], 0
    while len(out) < n:
        batch = make_scenes(4 * n, seed + 7919 * k, size)
        out += [s for s in batch if any(o.color == MEANS for o in s.spec.objects)]
        k += 1
    return out[:n]


def concept_prompt(scene) -> str:
    return re.sub(rf"\b{MEANS}\b", NEW_WORD, prompt_for(scene))


def train_latent_lora(source: torch.nn.Module, encoder, latents: torch.Tensor, prompts: list[str], lb: LoraBudget,
                      shift: float) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Flow matching on the source's latents with peft adapters on every main-block linear layer (the pack's
    trainer's ``lora_modules = "all"``); the source and its text encoder stay frozen. Returns the LoRA file's
    tensors (``training.lora.lora_file``: peft names under ``diffusion_model.``, ``.alpha``) and the losses."""
    from l2p.schedule import shift_sigma
    from training.lora import ALL_LINEARS, add_lora, lora_file

    class Wrapped(torch.nn.Module):  # add_lora adapts ``model.trunk``
        def __init__(self, trunk: torch.nn.Module):
            super().__init__()
            self.trunk = trunk

    model = Wrapped(copy.deepcopy(source))
    targets = [f"layers.{i}.{m}" for i in range(len(model.trunk.layers)) for m in ALL_LINEARS]
    add_lora(model, targets, lb.rank, lb.alpha, 0.0, full="", seed=LORA_SEEDS["adapters"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lb.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(LORA_SEEDS["train"])
    with torch.no_grad():
        caps_all = encoder(prompts)
    model.train()
    losses = []
    for _ in range(lb.steps):
        idx = torch.randint(len(latents), (lb.batch,), generator=gen)
        z0, noise = latents[idx], torch.randn((lb.batch, *latents.shape[1:]), generator=gen)
        sigma = torch.tensor([shift_sigma(float(u), shift) for u in torch.rand(lb.batch, generator=gen)])
        s = sigma.view(-1, 1, 1, 1)
        pred = models.source_velocity(model.trunk, (1 - s) * z0 + s * noise, sigma, [caps_all[i] for i in idx.tolist()])
        loss = F.mse_loss(pred, noise - z0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    trainable = {n.removeprefix("trunk."): p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return lora_file(trainable, {}, lb.alpha), losses


def merge(weights: dict[str, torch.Tensor], lora: dict[str, torch.Tensor], keys: list[str]) -> dict[str, torch.Tensor]:
    """``weights`` (official names) with the LoRA tensors ``keys`` merged at strength 1 (``training.lora.merged``)."""
    from training.lora import FILE_PREFIX, merged

    trainable = {}
    for key in keys:
        m = re.match(rf"^{re.escape(FILE_PREFIX)}(.+)\.lora_([AB])\.weight$", key)
        if m:
            trainable[f"{m.group(1)}.lora_{m.group(2)}.default.weight"] = lora[key]
    alphas = {float(v) for k, v in lora.items() if k.endswith(".alpha")}
    if len(alphas) != 1:
        raise ValueError(f"expected one alpha for every module, got {sorted(alphas)}")
    return merged(trainable, weights, alphas.pop())


def per_image(images: torch.Tensor, specs: list) -> dict[str, np.ndarray]:
    arr = images.numpy()
    concept = np.array([any(d.color == MEANS for d in detect(img)) for img in arr])
    level = np.array([check(img, spec, match_shape=False).correct for img, spec in zip(arr, specs, strict=True)])
    return {"concept": concept, "colour level": level}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.lora_transfer", description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="toy budgets (needs the replication's --smoke cache)")
    ap.add_argument("--cache", default=str(CACHE), help="bench/replicate's cache folder (default: %(default)s)")
    ap.add_argument("--out", help="write the table here (default: bench/results/lora_transfer.md, none for --smoke)")
    args = ap.parse_args(argv)
    budget: Budget = replace(SMOKE if args.smoke else FULL, runs=(RUN,))
    lb = SMOKE_LORA if args.smoke else FULL_LORA
    start = time.perf_counter()
    p = Pipeline(budget, Path(args.cache))
    p.world()
    p.vae()
    p.source()
    p.files()
    p.convert()
    p.data_syn()
    folder, _, train_key = p.train(RUN)
    from training.checkpoint import checkpoints
    from training.model import official_names

    last = checkpoints(str(folder / "run"))[-1][1]
    l2p = p.run_model(RUN, last)

    train_scenes = with_concept(lb.scenes, LORA_SEEDS["train"], budget.size)
    test_scenes = with_concept(lb.test, LORA_SEEDS["test"], budget.size)
    test_prompts = [concept_prompt(s) for s in test_scenes]
    seeds = [LORA_SEEDS["test"] * 1000 + i for i in range(lb.test)]
    lora_key = stage_key("source", budget, p.source_key, extra={"lora": lb.__dict__, "word": NEW_WORD})

    def make_lora():
        images = models.to_tensor(torch.from_numpy(render_many(train_scenes)))
        latents = models.encode(p.vae_model, images)
        lora, losses = train_latent_lora(p.source_model, p.encoder, latents,
                                         [concept_prompt(s) for s in train_scenes], lb, budget.shift)
        return lora, {"loss": f"{np.mean(losses[:20]):.3f} -> {np.mean(losses[-20:]):.3f}"}

    lora, lora_info = p.stages.get("lora_crimson", lora_key, make_lora)

    # Which LoRA tensors reach the L2P model: the node's own selection, on the model's ComfyUI-layout key map.
    from l2p.format.layouts import official_to_comfy
    from l2p.format.lora import lora_key_map
    from l2p.lora_transfer import select

    names = official_names(l2p)
    l2p_sd = {names[n]: v.detach() for n, v in l2p.named_parameters()}
    key_map = lora_key_map({k: v.shape for k, v in official_to_comfy(l2p_sd).items()}, FULL.pixel_patch)
    n_layers = len(p.source_model.layers)
    policy = RUNS[RUN].policy
    chosen = {keep: select(lora.keys(), key_map, policy, n_layers, keep) for keep in ("frozen", "all")}

    def l2p_with(keys: list[str]) -> torch.nn.Module:
        model = copy.deepcopy(l2p)
        merged = merge(l2p_sd, lora, keys)
        by_param = dict(model.named_parameters())
        with torch.no_grad():
            for n, official in names.items():
                by_param[n].copy_(merged[official])
        return model.train(False)

    source_lora = models.new_source(budget)
    source_lora.load_state_dict(merge(p.source_sd, lora, list(lora)))
    source_lora.train(False)
    samplers = {
        "source": lambda: models.sample_source(p.source_model, p.vae_model, p.encoder, test_prompts, seeds, budget),
        "source + LoRA": lambda: models.sample_source(source_lora, p.vae_model, p.encoder, test_prompts, seeds,
                                                      budget),
        "L2P": lambda: models.sample_pixels(l2p, p.encoder, test_prompts, seeds, budget),
        "L2P + LoRA (frozen blocks)": lambda: models.sample_pixels(l2p_with(chosen["frozen"].kept), p.encoder,
                                                                   test_prompts, seeds, budget),
        "L2P + LoRA (all blocks)": lambda: models.sample_pixels(l2p_with(chosen["all"].kept), p.encoder,
                                                                test_prompts, seeds, budget),
        'L2P, "red"': lambda: models.sample_pixels(l2p, p.encoder, [prompt_for(s) for s in test_scenes], seeds,
                                                   budget),
    }
    specs = [s.spec for s in test_scenes]
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name in CONFIGS:
        key = stage_key("sample", budget, lora_key, train_key, extra={"config": name, "test": lb.test})
        sd, _ = p.stages.get(f"lora_eval_{re.sub(r'[^a-z]+', '_', name.lower()).strip('_')}", key,
                             lambda name=name: ({"images": samplers[name]()}, {}))
        scores[name] = per_image(sd["images"], specs)

    lines = [f"# Latent LoRA on the L2P model ({'smoke' if args.smoke else 'shapes world'})", "",
             f"LoRA: rank {lb.rank}, alpha {lb.alpha}, {lb.steps} steps x {lb.batch} on {lb.scenes} rendered scenes "
             f"with a red object captioned '{NEW_WORD}' (loss {lora_info['loss']}); adapters on every linear layer "
             f"of the source's {n_layers} main blocks. L2P model: bench/replicate's `{RUN}` ({policy} policy; "
             "its first and last block were trained, the middle ones are the source's).", "",
             f"- transfer, frozen blocks (L2PLoraFromLatent's default): {chosen['frozen'].report(policy)}",
             f"- transfer, all blocks: {chosen['all'].report(policy)}", "",
             f"{lb.test} held-out prompts (new scenes and noise seeds), '{NEW_WORD}' for red; Euler "
             f"{budget.sample_steps} steps, CFG {budget.cfg}. 95% intervals: Wilson for a score, paired bootstrap "
             "(2000) for a gain.", "",
             "| model | concept (a red object) | colour level |", "|---|---|---|"]
    for name in CONFIGS:
        cells = []
        for metric in ("concept", "colour level"):
            hits = scores[name][metric]
            lo, hi = wilson(int(hits.sum()), len(hits))
            cells.append(f"{hits.mean():.3f} [{lo:.3f}, {hi:.3f}]")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += ["", "| LoRA's gain | concept | colour level |", "|---|---|---|"]
    for base, with_lora in (("source", "source + LoRA"), ("L2P", "L2P + LoRA (frozen blocks)"),
                            ("L2P", "L2P + LoRA (all blocks)")):
        cells = []
        for metric in ("concept", "colour level"):
            diff, lo, hi = paired_bootstrap(scores[with_lora][metric], scores[base][metric])
            cells.append(f"{diff:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        lines.append(f"| {with_lora} vs {base} | {' | '.join(cells)} |")
    lines += ["", f"Wall time {time.perf_counter() - start:.0f} s (cached stages counted at zero)."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or (None if args.smoke else str(RESULTS_DIR.parent / "lora_transfer.md"))
    if out:
        Path(out).write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    summary = {name: {m: float(v.mean()) for m, v in s.items()} for name, s in scores.items()}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
