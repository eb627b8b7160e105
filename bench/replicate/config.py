"""Budgets, seeds and the cache key of every stage of the shapes-world replication."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
REPO = BENCH.parent
CACHE = BENCH / ".cache" / "replicate"
RESULTS_DIR = BENCH / "results" / "replicate"
RESULTS_MD = BENCH / "RESULTS.md"
SHIPPED = REPO / "shapes_world" / "models"

SEEDS = {"pool": 101, "eval": 202, "validate": 303, "syn": 404, "vae": 7, "source": 8, "convert": 0, "scratch": 9,
         "train": 0, "real": 505}
VERSION = 2  # bump when a stage's meaning changes, to invalidate every cached stage (2: paper trains the noise refiner)

# Z-Image's latent format in ComfyUI (comfy.latent_formats.Flux, what ZImage declares): the sampler sees
# (z - SHIFT) * SCALE. The world's VAE has this normalisation baked into its weights, so the stock
# pipeline (KSampler -> VAEDecode) and the plain-torch benchmark see the same unit-variance latents.
LATENT_SCALE, LATENT_SHIFT = 0.3611, 0.1159
VAE_DOWN, LATENT_CH, LATENT_PATCH, PIXEL_PATCH = 8, 16, 2, 16
# The official 1K Detailer Head has 8.3 M parameters whatever the DiT's size: next to a 6B DiT it is tiny, next to
# this world's 9 M one it would be half the model. A 4x narrower head (0.54 M) keeps the paper's proportions.
HEAD_WIDTH_DIV = 4


@dataclass(frozen=True)
class Run:
    """One L2P fine-tune (or the from-scratch baseline): start weights, trainable-set policy, data."""

    # "convert" (the source converted by l2p.convert, official init), "convert_<init>" (another pixel-embedder
    # init of l2p.convert, e.g. vae_orth) or "scratch" (fresh init, same size)
    start: str
    policy: str  # l2p.policies name
    data: str  # "syn" (the source's own images, rendered through ComfyUI) or "real" (ground-truth renders)
    steps: int = 0  # 0: the budget's train_steps
    eval_every: int = 0  # 0: the budget's eval_every


RUNS = {
    "l2p_paper_syn": Run("convert", "paper", "syn"),
    "l2p_official_syn": Run("convert", "official", "syn"),
    "l2p_paper_real": Run("convert", "paper", "real"),
    "scratch_syn": Run("scratch", "official", "syn"),
    # the pack's VAE-fitted pixel embedder (l2p/init_fit.py) instead of the official random one
    "l2p_paper_syn_vae": Run("convert_vae_orth", "paper", "syn"),
    # the shipped demo model: the paper-policy run trained 4x longer
    "l2p_demo": Run("convert", "paper", "syn", steps=2400, eval_every=1200),
}


@dataclass(frozen=True)
class Budget:
    name: str = "full"
    size: int = 64  # image side: 8x8 latents / 4x4 tokens for both models
    dim: int = 256
    layers: int = 6
    heads: int = 4
    cap_dim: int = 64
    # world
    pool: int = 8192  # rendered scenes: VAE, source and the "real" dataset
    eval_prompts: int = 240  # held-out prompts, 40 per GenEval task: every score in the report
    validate: int = 600  # scorer validation scenes
    # VAE (diffusers AutoencoderKL, 8x down)
    vae_steps: int = 2500
    vae_batch: int = 16
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    # latent source DiT + text encoder, trained together
    source_steps: int = 3000
    source_batch: int = 32
    source_lr: float = 1e-3  # 300-step A/B at batch 32: loss 0.667 vs 0.741 at 3e-4
    source_ema: float = 0.999  # the saved source is the EMA of its weights
    # the share of items trained on the empty prompt, for the source and for every L2P run (training/launch.py's
    # caption_dropout): CFG's negative is the empty prompt, and without it the L2P head never learns that branch
    # (A/B on the 3600-step model trained without: colour level 0.071 at CFG 3, 0.150 at CFG 1)
    caption_dropout: float = 0.1
    # sampling (evaluation, dataset)
    sample_steps: int = 20
    cfg: float = 3.0
    # Z-Image's shift 3 is for 4096 tokens at 1K; by the pack's resolution-aware rule (l2p/schedule.py) a
    # 16-token world wants far less. 1 (no shift) for training and sampling of every model here.
    shift: float = 1.0
    # datasets for L2P: prompts x images per prompt
    data_prompts: int = 512
    images_per_prompt: int = 4
    # L2P training (training/launch.py)
    train_steps: int = 600
    train_batch: int = 16
    train_lr: float = 1e-3  # at 2e-4 the new embedder and head were still noise after 600 steps
    train_warmup: int = 50
    # EMA of the trainable weights, what every checkpoint is evaluated (and shipped) with: at lr 1e-3 the raw
    # weights sample visibly grainier (600-step A/B from the 2400-step model: detail 0.94 raw vs 0.99 EMA)
    train_ema: float = 0.99
    eval_every: int = 200
    runs: tuple[str, ...] = tuple(RUNS)
    timeouts: dict = field(default_factory=lambda: {"dataset": 3600.0})

    @property
    def data_items(self) -> int:
        return self.data_prompts * self.images_per_prompt


FULL = Budget()
SMOKE = Budget(name="smoke", layers=2, pool=64, eval_prompts=12, validate=60, vae_steps=3, vae_batch=4,
               source_steps=3, source_batch=4, sample_steps=2, data_prompts=4, images_per_prompt=2, train_steps=2,
               train_batch=2, train_warmup=1, eval_every=1, runs=("l2p_paper_syn", "l2p_official_syn", "l2p_paper_real",
                                                                  "scratch_syn", "l2p_paper_syn_vae"))

STAGE_FIELDS = {
    "world": ("size", "pool", "eval_prompts", "validate"),
    "vae": ("vae_steps", "vae_batch", "vae_lr", "kl_weight"),
    "source": ("dim", "layers", "heads", "cap_dim", "source_steps", "source_batch", "source_lr", "source_ema",
               "caption_dropout", "shift"),
    "sample": ("sample_steps", "cfg", "shift"),
    "data": ("data_prompts", "images_per_prompt"),
    "train": ("train_steps", "train_batch", "train_lr", "train_warmup", "train_ema", "caption_dropout", "eval_every",
              "shift"),
}


def stage_key(stage: str, budget: Budget, *upstream: str, extra: object = None) -> str:
    cfg = {f: getattr(budget, f) for f in STAGE_FIELDS.get(stage, ())}
    blob = json.dumps({"stage": stage, "cfg": cfg, "up": upstream, "seeds": SEEDS, "v": VERSION, "extra": extra},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def budget_dict(budget: Budget) -> dict:
    return {k: v for k, v in asdict(budget).items() if k != "timeouts"}
