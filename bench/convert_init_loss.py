"""Does the pixel-embedder init of a latent -> L2P conversion matter? Flow-matching loss per init, side by side.

A tiny but *trained* world is built first, so the converted model's frozen blocks have something to keep:

1. ``vae``     -- a small diffusers AutoencoderKL (8x down, 16 latent channels) trained briefly on procedural
   64x64 images (``l2p.init_fit.fit_images``); latent scale/shift normalise its latents to mean 0, std 1.
2. ``source``  -- a tiny latent Z-Image (dim 256, 2 blocks, 1 refiner, patch 2) trained with flow matching on
   those latents (8x8 -> 16 tokens) with one constant caption token.
3. ``convert`` -- ``l2p.convert.latent_to_l2p`` with each init (official, vae_lsq, vae_orth); the vae_* fits
   use held-out images encoded by the VAE. Same seed, so the Detailer Head starts identical for every init.
4. ``measure`` -- flow-matching loss ``|v - (noise - x0)|^2`` of each converted pixel model (patch 16 -> 4x4
   tokens) on fixed held-out images x an even grid of sigmas x fixed noise: at step 0, then after K Adam
   steps of head-only training (trunk frozen, embedder included) and of the ``official`` trainable-set
   policy (``l2p.policies``; with 2 blocks it trains everything), on identical batches for every init.
   For reference: the trivial baseline (predict 0, i.e. ``E|noise - x0|^2``) and the source model's loss
   on the same images' latents (latent space: compare it through its own baseline, not in absolute terms).

Every stage's result is cached in ``bench/.cache/convert_init_loss/`` (safetensors with the stage key and
its numbers in the metadata; no pickle) and reused while its budget and upstream stages are unchanged.
CPU, 2 threads: about 6 minutes from scratch on an idle 2-core machine (per-step estimate; far longer on a
loaded one, and the reported seconds are wall time including that wait)::

    .venv/bin/python -m bench.convert_init_loss            # writes bench/results/convert_init_loss.md
    .venv/bin/python -m bench.convert_init_loss --fresh    # rerun every stage
    .venv/bin/python -m bench.convert_init_loss --quick    # seconds-long smoke run (own cache, no results file)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.common import Cache, Stages, psnr, summary
from l2p.convert import INITS, latent_to_l2p
from l2p.head import build_head
from l2p.init_fit import fit_images, patch_pairs
from l2p.pixel_dit import PixelDiT
from l2p.policies import trainable_names
from l2p.tiny import TINY_L2P, official_trunk, reference_vae, zimage_trunk

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "convert_init_loss"
RESULTS = HERE / "results" / "convert_init_loss.md"

SIZE = 64  # image side: 8x8 latents (16 source tokens), 4x4 pixel tokens at patch 16
PATCH = TINY_L2P["patch_size"]
LATENT_PATCH, VAE_DOWN, LATENT_CH = 2, 8, 16
SEEDS = {"pool": 1, "fit": 2, "eval": 3, "eval_noise": 4, "batches": 5, "caption": 6, "vae": 7, "source": 8,
         "convert": 0}
VERSION = 2  # bump when the measurement itself changes, to invalidate every cached stage
Tensor = torch.Tensor
Predict = Callable[[Tensor, Tensor], Tensor]  # (noisy x, sigma) -> velocity noise - x0


@dataclass(frozen=True)
class Budget:
    """Data sizes and training budgets; each stage's cache key covers the fields it uses."""

    pool: int = 1024  # training images: VAE, source (as latents) and the L2P batches
    vae_steps: int = 600
    vae_batch: int = 16
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    source_steps: int = 200
    source_batch: int = 32
    source_lr: float = 3e-4
    fit_images: int = 256  # held-out images encoded for the vae_* fits (16 patches each)
    eval_images: int = 8
    sigmas: int = 8
    steps: int = 60  # K
    batch: int = 8
    lr: float = 1e-4


QUICK = Budget(pool=32, vae_steps=3, vae_batch=4, source_steps=3, source_batch=4, fit_images=8, eval_images=2,
               sigmas=2, steps=2, batch=2)

STAGE_FIELDS = {
    "vae": ("pool", "vae_steps", "vae_batch", "vae_lr", "kl_weight"),
    "source": ("source_steps", "source_batch", "source_lr"),
    "convert": ("fit_images",),
    "measure": ("eval_images", "sigmas", "steps", "batch", "lr"),
}


def stage_key(stage: str, budget: Budget, upstream: str = "") -> str:
    cfg = {f: getattr(budget, f) for f in STAGE_FIELDS[stage]}
    blob = json.dumps({"stage": stage, "cfg": cfg, "up": upstream, "seeds": SEEDS, "v": VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def generator(name: str) -> torch.Generator:
    return torch.Generator().manual_seed(SEEDS[name])


def caption() -> Tensor:
    """The one constant caption token [1, cap_feat_dim] every model sees."""
    return torch.randn(1, TINY_L2P["cap_feat_dim"], generator=generator("caption"))


def noisy(x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    s = sigma.view(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise


def batches(pool: Tensor, steps: int, batch: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """(x0, noise, sigma ~ U(0, 1)) per step, the same sequence on every call."""
    gen = generator("batches")
    for _ in range(steps):
        idx = torch.randint(len(pool), (batch,), generator=gen)
        yield pool[idx], torch.randn(batch, *pool.shape[1:], generator=gen), torch.rand(batch, generator=gen)


def train(predict: Predict, params: list[nn.Parameter], pool: Tensor, steps: int, batch: int, lr: float,
          warmup: int = 0, on_step: Callable[[int], None] | None = None) -> list[float]:
    """Adam on the flow-matching loss; returns the per-step training losses."""
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for step, (x0, noise, sigma) in enumerate(batches(pool, steps, batch)):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        loss = F.mse_loss(predict(noisy(x0, noise, sigma), sigma), noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_step:
            on_step(step + 1)
    return losses


@torch.no_grad()
def flow_loss(predict: Predict, x0: Tensor, noise: Tensor, sigma: Tensor, n_sigmas: int,
              chunk: int = 16) -> list[float]:
    """Mean ``|v - (noise - x0)|^2`` at each sigma of an ``eval_set`` grid (fixed x0, noise, sigma)."""
    per_item = []
    for i in range(0, len(x0), chunk):
        x, n, s = x0[i:i + chunk], noise[i:i + chunk], sigma[i:i + chunk]
        per_item.append((predict(noisy(x, n, s), s) - (n - x)).square().flatten(1).mean(1))
    return torch.cat(per_item).view(-1, n_sigmas).mean(0).tolist()


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def eval_set(x0: Tensor, n_sigmas: int, seed: str) -> tuple[Tensor, Tensor, Tensor]:
    """Every item at every sigma of the grid (i + 0.5) / n, with fixed noise."""
    grid = (torch.arange(n_sigmas) + 0.5) / n_sigmas
    x = x0.repeat_interleave(n_sigmas, dim=0)
    return x, torch.randn(x.shape, generator=generator(seed)), grid.repeat(len(x0))


# --- stage 1: VAE -------------------------------------------------------------------------------------------

def new_vae() -> nn.Module:
    """8x down (4 blocks), 16 latent channels; narrow and without mid-block attention to train fast on CPU."""
    return reference_vae((16, 32, 32, 32), latent_channels=LATENT_CH, norm_num_groups=8, sample_size=SIZE,
                         mid_attention=False)


@torch.no_grad()
def encode_mean(vae: nn.Module, images: Tensor, chunk: int = 64) -> Tensor:
    """Raw (unnormalised) posterior means."""
    return torch.cat([vae.encode(images[i:i + chunk]).latent_dist.mean for i in range(0, len(images), chunk)])


def reference_psnrs(images: Tensor) -> dict[str, float]:
    """What trivial 'VAEs' score: each image's mean colour, and 8x average pooling upsampled back."""
    blur = F.interpolate(F.avg_pool2d(images, VAE_DOWN), scale_factor=VAE_DOWN, mode="bilinear")
    return {"mean colour": psnr(images.mean(dim=(2, 3), keepdim=True).expand_as(images), images),
            f"{VAE_DOWN}x blur": psnr(blur, images)}


def train_vae(budget: Budget, pool: Tensor, held_out: Tensor) -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(SEEDS["vae"])
    vae = new_vae()
    with torch.no_grad():  # start with a small posterior std: unit sampling noise stalls a short training
        vae.quant_conv.bias[LATENT_CH:] -= 8.0
    opt = torch.optim.Adam(vae.parameters(), lr=budget.vae_lr)
    gen = generator("vae")
    losses = []
    for _ in range(budget.vae_steps):
        x = pool[torch.randint(len(pool), (budget.vae_batch,), generator=gen)]
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample(generator=gen)).sample
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + budget.kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    vae.train(False)
    latents = encode_mean(vae, pool)
    with torch.no_grad():
        recon = vae.decode(encode_mean(vae, held_out)).sample.clamp(-1, 1)
    info = {"shift": latents.mean().item(), "scale": 1.0 / latents.std().item(), "psnr": psnr(recon, held_out),
            "loss": summary(losses)}
    return vae, info


# --- stage 2: latent source ---------------------------------------------------------------------------------

def new_source() -> nn.Module:
    return zimage_trunk(in_channels=LATENT_CH, **{**TINY_L2P, "patch_size": LATENT_PATCH})


def source_predict(source: nn.Module) -> Predict:
    """Velocity of the latent model: diffusers' Z-Image returns x0 - noise at time 1 - sigma (negated here)."""
    cap = caption()

    def predict(z: Tensor, sigma: Tensor) -> Tensor:
        out = source(list(z.unsqueeze(2)), 1.0 - sigma, [cap] * len(z), patch_size=LATENT_PATCH, return_dict=False)
        return -torch.stack(out[0]).squeeze(2)

    return predict


# --- stage 3/4: converted pixel models ----------------------------------------------------------------------

def pixel_model(sd: dict[str, Tensor]) -> PixelDiT:
    """A PixelDiT holding an official-layout L2P state dict."""
    model = PixelDiT(official_trunk(**TINY_L2P), build_head("1k", TINY_L2P["dim"]))
    model.load_state_dict({(k if k.startswith("local_decoder.") else f"trunk.{k}"): v for k, v in sd.items()})
    return model


def pixel_predict(model: PixelDiT) -> Predict:
    cap = caption()
    return lambda x, sigma: model(x, sigma, [cap] * len(x))


def trainable(model: PixelDiT, mode: str) -> list[nn.Parameter]:
    """``head``: local_decoder only; otherwise a ``l2p.policies`` policy over the official-layout names."""
    named = {n.removeprefix("trunk."): p for n, p in model.named_parameters()}
    keep = ({n for n in named if n.startswith("local_decoder.")} if mode == "head"
            else trainable_names(named, mode, TINY_L2P["n_layers"]))
    for n, p in named.items():
        p.requires_grad_(n in keep)
    return [named[n] for n in sorted(keep)]


def embed_diagnostics(l2p: dict[str, Tensor], source: dict[str, Tensor], pixels: Tensor,
                      latents: Tensor) -> dict[str, float]:
    """How close the pixel embedder is to ``latent embedder o VAE`` on held-out patches (relative error of the
    token embeddings), and its noise gain ``|W_pix|_F / |W_lat|_F`` (token RMS from pure noise, pixel/latent)."""
    w_pix, b_pix = l2p[f"all_x_embedder.{PATCH}-1.weight"], l2p[f"all_x_embedder.{PATCH}-1.bias"]
    w_lat, b_lat = source[f"all_x_embedder.{LATENT_PATCH}-1.weight"], source[f"all_x_embedder.{LATENT_PATCH}-1.bias"]
    want = latents @ w_lat.T + b_lat
    err = (pixels @ w_pix.T + b_pix - want).norm() / want.norm()
    return {"embed_err": err.item(), "noise_gain": (w_pix.norm() / w_lat.norm()).item()}


# --- the run ------------------------------------------------------------------------------------------------

def run(budget: Budget, cache: Cache) -> dict[str, Any]:
    pool = fit_images(budget.pool, SIZE, SEEDS["pool"])
    eval_images = fit_images(budget.eval_images, SIZE, SEEDS["eval"])
    report: dict[str, Any] = {"budget": asdict(budget)}
    stages = Stages(cache)

    def stage(name: str, key: str, make: Callable[[], tuple[dict[str, Tensor], dict[str, Any]]]):
        return stages.get(name, key, make, group=name.split("_")[0])  # convert_<init> files add up to "convert"

    # 1. VAE
    vae_key = stage_key("vae", budget)

    def make_vae():
        vae, info = train_vae(budget, pool, eval_images)
        return dict(vae.state_dict()), info

    vae_sd, vae_info = stage("vae", vae_key, make_vae)
    vae = new_vae()
    vae.load_state_dict(vae_sd)
    vae.train(False)
    report["vae"] = {**vae_info, "refs": reference_psnrs(eval_images)}

    def encode(images: Tensor) -> Tensor:
        return (encode_mean(vae, images) - vae_info["shift"]) * vae_info["scale"]

    # 2. latent source
    source_key = stage_key("source", budget, vae_key)
    latent_pool = encode(pool)

    def make_source():
        torch.manual_seed(SEEDS["source"])
        source = new_source()
        losses = train(source_predict(source), list(source.parameters()), latent_pool, budget.source_steps,
                       budget.source_batch, budget.source_lr, warmup=20)
        return dict(source.state_dict()), {"loss": summary(losses)}

    source_sd, source_info = stage("source", source_key, make_source)
    source = new_source()
    source.load_state_dict(source_sd)
    source.train(False)
    eval_latents = encode(eval_images)
    z0, z_noise, z_sigma = eval_set(eval_latents, budget.sigmas, "eval_noise")
    source_loss = flow_loss(source_predict(source), z0, z_noise, z_sigma, budget.sigmas)
    report["source"] = {**source_info, "eval": mean(source_loss), "by_sigma": source_loss,
                        "baseline": F.mse_loss(torch.zeros_like(z0), z_noise - z0).item()}

    # 3. conversion, one cache file per init
    convert_key = stage_key("convert", budget, source_key)
    fit_pairs = patch_pairs(fit_images(budget.fit_images, SIZE, SEEDS["fit"]), encode, PATCH, LATENT_PATCH,
                            VAE_DOWN)
    held_pairs = patch_pairs(eval_images, encode, PATCH, LATENT_PATCH, VAE_DOWN)
    converted: dict[str, dict[str, Tensor]] = {}
    report["convert"] = {}
    for init in INITS:
        def make_l2p(init: str = init):
            sd = latent_to_l2p(source_sd, patch_size=PATCH, init=init, seed=SEEDS["convert"],
                               fit_pairs=None if init == "official" else fit_pairs)
            return sd, embed_diagnostics(sd, source_sd, *held_pairs)

        converted[init], report["convert"][init] = stage(f"convert_{init}", convert_key, make_l2p)

    # 4. measurement
    measure_key = stage_key("measure", budget, convert_key)
    x0, noise, sigma = eval_set(eval_images, budget.sigmas, "eval_noise")
    marks = sorted({0, budget.steps // 2, budget.steps})

    def make_measure():
        out: dict[str, Any] = {"baseline": F.mse_loss(torch.zeros_like(x0), noise - x0).item(), "runs": {}}
        for init in INITS:
            for mode in ("head", "official"):
                model = pixel_model(converted[init])
                predict = pixel_predict(model)
                curve = {0: flow_loss(predict, x0, noise, sigma, budget.sigmas)}

                def on_step(step: int, predict: Predict = predict, curve: dict[int, list[float]] = curve) -> None:
                    if step in marks:
                        curve[step] = flow_loss(predict, x0, noise, sigma, budget.sigmas)

                losses = train(predict, trainable(model, mode), pool, budget.steps, budget.batch, budget.lr,
                               on_step=on_step)
                evals = {str(k): v for k, v in curve.items()}
                out["runs"][f"{init}/{mode}"] = {"eval": evals, "train": summary(losses)}
                shown = "  ".join(f"{k}: {mean(v):.4f}" for k, v in curve.items())
                print(f"  {init:9s} {mode:8s} {shown}", flush=True)
        return out

    _, report["measure"] = stage("measure", measure_key, lambda: ({}, make_measure()))
    report["marks"] = marks
    report["seconds"], report["cached"] = stages.seconds, stages.cached
    return report


def markdown(r: dict[str, Any]) -> str:
    b, runs, marks, baseline = r["budget"], r["measure"]["runs"], r["marks"], r["measure"]["baseline"]
    k, src = marks[-1], r["source"]
    modes = ("head", "official")

    def loss(init: str, mode: str, step: int) -> float:
        return mean(runs[f"{init}/{mode}"]["eval"][str(step)])

    lines = [
        "# Conversion init vs flow-matching loss (`bench/convert_init_loss.py`)",
        "",
        f"Tiny trained world on CPU: VAE (AutoencoderKL 8x, 16 ch, {b['vae_steps']} steps x {b['vae_batch']}), "
        f"latent Z-Image source (dim 256, 2 blocks, {b['source_steps']} steps x {b['source_batch']}), {SIZE}x{SIZE} "
        f"procedural images. Loss on {b['eval_images']} held-out images x {b['sigmas']} sigmas "
        f"((i + 0.5) / {b['sigmas']}) x fixed noise. Training: K = {k} Adam steps, lr {b['lr']:g}, batch "
        f"{b['batch']}, identical batches for every init; the vae_* fits use {b['fit_images']} other held-out "
        "images. `head`: Detailer Head only (trunk and pixel embedder frozen); `official`: the official "
        "trainable-set policy (all parameters at 2 blocks).",
        "",
        "| stage | seconds | result |",
        "| --- | ---: | --- |",
        f"| vae | {r['seconds']['vae']:.0f} | held-out PSNR {r['vae']['psnr']:.2f} dB ("
        + ", ".join(f"{name} {v:.2f} dB" for name, v in r["vae"]["refs"].items()) + "); latent shift "
        f"{r['vae']['shift']:.4f}, scale {r['vae']['scale']:.4f}; train loss {r['vae']['loss']} |",
        f"| source | {r['seconds']['source']:.0f} | train loss {src['loss']}; held-out loss {src['eval']:.4f} = "
        f"{src['eval'] / src['baseline']:.3f} x its baseline {src['baseline']:.4f} (latent space) |",
        f"| convert | {r['seconds']['convert']:.1f} | {len(INITS)} inits |",
        f"| measure | {r['seconds']['measure']:.0f} | {len(INITS)} inits x {len(modes)} trainable sets x {k} steps |",
    ]
    lines += ["", "Seconds are wall time with 2 threads; on a shared machine they include waiting for the CPU."]
    if r["cached"]:
        lines[-1] += f" Cached this run: {', '.join(r['cached'])} (their seconds are from when they ran)."
    cols = [("head", 0)] + [(mode, step) for mode in modes for step in marks[1:]]
    lines += [
        "",
        f"Pixel flow-matching loss, mean over the sigma grid; trivial baseline (predict 0) = **{baseline:.4f}**. "
        "In parentheses: ratio to the official init in the same column.",
        "",
        "| init | embed rel. err | noise gain | step 0 | " + " | ".join(f"{m} @{s}" for m, s in cols[1:]) + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in cols) + " |",
    ]
    for init in INITS:
        conv = r["convert"][init]
        cells = [f"{loss(init, m, s):.4f}" + ("" if init == "official" else
                                              f" ({loss(init, m, s) / loss('official', m, s):.2f}x)")
                 for m, s in cols]
        lines.append(f"| {init} | {conv['embed_err']:.3f} | {conv['noise_gain']:.2f} | " + " | ".join(cells) + " |")
    grid = [(i + 0.5) / b["sigmas"] for i in range(b["sigmas"])]
    lines += [
        "",
        f"Loss by sigma after {k} steps, relative to the baseline (source: its latent loss / latent baseline):",
        "",
        "| model | " + " | ".join(f"σ={g:.3g}" for g in grid) + " |",
        "| --- | " + " | ".join("---:" for _ in grid) + " |",
        "| source (latent) | " + " | ".join(f"{v / src['baseline']:.3f}" for v in src["by_sigma"]) + " |",
    ]
    for init in INITS:
        for mode in modes:
            by_sigma = runs[f"{init}/{mode}"]["eval"][str(k)]
            lines.append(f"| {init} {mode} | " + " | ".join(f"{v / baseline:.3f}" for v in by_sigma) + " |")
    lines += [
        "",
        "embed rel. err: |pixel embedder(patch) - latent embedder(VAE latent of the patch)| / |latent embedding| on "
        "held-out patches. noise gain: |W_pix|_F / |W_lat|_F, the token RMS from pure pixel noise relative to pure "
        "latent noise (1 = what the source saw at sigma = 1).",
        "",
        "Training loss (mean over sixths of the run):",
        "",
    ]
    lines += [f"- {key}: {val['train']}" for key, val in runs.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.convert_init_loss", description=__doc__.split("\n\n")[0])
    ap.add_argument("--fresh", action="store_true", help="ignore the cache and rerun every stage")
    ap.add_argument("--quick", action="store_true", help="tiny budgets (smoke test): own cache, no results file")
    ap.add_argument("--steps", type=int, help=f"K, training steps per init and trainable set ({Budget.steps})")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    budget = QUICK if args.quick else Budget()
    if args.steps:
        budget = replace(budget, steps=args.steps)
    start = time.perf_counter()
    report = run(budget, Cache(CACHE / ("quick" if args.quick else "full"), args.fresh))
    text = markdown(report)
    print()
    print(text)
    print(f"total {time.perf_counter() - start:.0f} s")
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text, encoding="utf-8")
        print(f"wrote {RESULTS.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
