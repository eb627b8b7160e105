"""Budgets, seeds and the cache key of every stage of the shapes-world replication."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
REPO = BENCH.parent
CACHE = BENCH / ".cache" / "replicate"
RESULTS_DIR = BENCH / "results" / "replicate"
RESULTS_MD = BENCH / "RESULTS.md"
SHIPPED = REPO / "shapes_world" / "models"

SEEDS = {"pool": 101, "val": 202, "test": 606, "validate": 303, "syn": 404, "vae": 7, "source": 8, "convert": 0,
         "scratch": 9, "train": 0, "flow": 707}
VERSION = 3  # bump when a stage's meaning changes, to invalidate every cached stage (3: the issue-20 design)

# Z-Image's latent format in ComfyUI (comfy.latent_formats.Flux, what ZImage declares): the sampler sees
# (z - SHIFT) * SCALE. The world's VAE has this normalisation baked into its weights, so the stock
# pipeline (KSampler -> VAEDecode) and the plain-torch benchmark see the same unit-variance latents.
LATENT_SCALE, LATENT_SHIFT = 0.3611, 0.1159
VAE_DOWN, LATENT_CH = 8, 16
# The official 1K Detailer Head has 8.3 M parameters whatever the DiT's size: next to a 6B DiT it is tiny, next to
# this world's 9 M one it would be half the model. A 4x narrower head (0.54 M) keeps the paper's proportions.
HEAD_WIDTH_DIV = 4


@dataclass(frozen=True)
class Run:
    """One fine-tune of the design: start weights, trainable set, learning rates and seed.

    ``start``: "convert" (``l2p.convert --init official``: random pixel embedder and head, as the released code
    converts), "distill" (``--init distill``, the aligned conversion) or "scratch" (the same architecture, every
    weight at its default init). ``lr`` is the pretrained weights' rate (every weight's when ``lr_new`` is 0);
    0 means the scratch rate chosen on validation. Scratch runs get the distill's images as extra steps
    (``Budget.scratch_extra_steps``), so every comparison is at equal compute.
    """

    start: str
    policy: str  # l2p.policies name; "custom:" trains the pixel embedder and the head only
    lr: float
    lr_new: float = 0.0
    seed: int = 0
    twin: str = ""  # a seed-1 run: the run whose CFG (chosen on validation) it takes; "scratch": the chosen rate's

    @property
    def scratch(self) -> bool:
        return self.start == "scratch"


SCRATCH_LRS = (1e-3, 3e-4)  # the scratch baseline's candidate rates; the better on validation gets seed 1 too
RUNS = {
    # L2P as published: the released conversion (random embedder and head), the paper's trainable set, one rate
    "published": Run("convert", "paper", lr=1e-3),
    # the aligned conversion, then the paper's set with separate rates for the new and the pretrained weights
    "aligned": Run("distill", "paper", lr=1e-4, lr_new=1e-3),
    "aligned_s1": Run("distill", "paper", lr=1e-4, lr_new=1e-3, seed=1, twin="aligned"),
    # the aligned conversion with the whole trunk frozen: only the pixel embedder and the head train
    "aligned_frozen": Run("distill", "custom:", lr=1e-4, lr_new=1e-3),
    **{f"scratch_lr{lr:g}": Run("scratch", "official", lr=lr) for lr in SCRATCH_LRS},
    "scratch_s1": Run("scratch", "official", lr=0.0, seed=1, twin="scratch"),
}
MAIN_PAIR = (("aligned", "aligned_s1"), ("scratch", "scratch_s1"))  # "scratch": the validation-chosen rate's run


@dataclass(frozen=True)
class Budget:
    name: str = "full"
    size: int = 64  # image side: 8x8 latents / 4x4 tokens for both models
    # the token grid: the source's latent patch; the pixel model's patch and head follow from it (properties below)
    latent_patch: int = 2
    dim: int = 256
    layers: int = 6
    heads: int = 4
    cap_dim: int = 64
    # world
    pool: int = 8192  # rendered scenes: what the VAE and the source train on
    val_prompts: int = 180  # validation split, 30 per GenEval task: every choice (checkpoint, CFG, scratch rate)
    test_prompts: int = 480  # test split, 80 per task: every reported number
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
    caption_dropout: float = 0.1
    # sampling (evaluation, dataset)
    sample_steps: int = 20
    cfg: float = 3.0  # the dataset's CFG and the one checkpoints are chosen at
    cfg_choices: tuple[float, ...] = (2.0, 3.0, 5.0)  # each model's CFG, chosen on validation at its checkpoint
    # Z-Image's shift 3 is for 4096 tokens at 1K; by the pack's resolution-aware rule (l2p/schedule.py) a
    # 16-token world wants far less. 1 (no shift) for training and sampling of every model here.
    shift: float = 1.0
    # the synthetic dataset: prompts x images per prompt, rendered by the source through ComfyUI
    data_prompts: int = 512
    images_per_prompt: int = 4
    # the aligned conversion (python -m l2p.convert --init distill) on the synthetic dataset, its captions too
    distill_steps: int = 100  # each stage: token alignment, then the head
    distill_batch: int = 16
    distill_lr: float = 1e-3
    # fine-tuning (training/launch.py)
    train_steps: int = 600
    train_batch: int = 16
    train_warmup: int = 50
    # EMA of the trainable weights, what every checkpoint is evaluated (and shipped) with (with warm-up)
    train_ema: float = 0.99
    eval_every: int = 200
    flow_sigmas: int = 10  # the flow loss and the text gain are measured at this many sigmas (bin centres)
    flow_items: int = 120  # on this many validation prompts, the source's own images of them
    runs: tuple[str, ...] = tuple(RUNS)
    timeouts: dict = field(default_factory=lambda: {"dataset": 3600.0})

    @property
    def pixel_patch(self) -> int:
        """One pixel patch per latent token."""
        return self.latent_patch * VAE_DOWN

    @property
    def head(self) -> str:
        from l2p.head import head_for_patch

        return head_for_patch(self.pixel_patch)

    @property
    def data_items(self) -> int:
        return self.data_prompts * self.images_per_prompt

    @property
    def scratch_extra_steps(self) -> int:
        """The distill's compute in training steps, counted generously for scratch: every image the two distill
        stages see counts as one training image (a distill step costs less than a training step)."""
        return -(-2 * self.distill_steps * self.distill_batch // self.train_batch)


FULL = Budget()
# Issue 20, item 4: the 4x4-token world cannot show the transfer (bench/RESULTS.md), so the same design at 8x8
# tokens: latent patch 1, pixel patch 8 and the 3-level 0.5K head. Width 128 (2 heads of 64) keeps the compute of
# a block per image where it was: 4x the tokens at half the width is the same linear-layer FLOPs (64 x 128^2 =
# 16 x 256^2); a measured source step (batch 32, 2 threads) takes 0.37 s against the 4x4 world's 0.67 s. The same
# scenes, prompts, seeds and rules; every run of the design.
# At FULL's steps (20 Euler steps, the VAE at 2500, the source at 3000, 180 validation prompts) it is the run the
# shipped demo model comes from (measured at commit 9565ec5, both criteria passed;
# bench/results/replicate-tokens8-full/; its aligned run reproduced bit for bit at commit 0e3dccf). That does not
# fit 2 h on 2 cores (about 128 min projected on a fast host).
TOKENS8_FULL = replace(FULL, name="tokens8-full", latent_patch=1, dim=128, heads=2)
# TOKENS8 is the same design cut to fit the whole rerun in 2 hours on 2 cores:
# - 12 Euler steps instead of 20 (sampling is over half of it): on the 180 validation prompts, the colour level at
#   12 steps minus at 20 is -0.022 [-0.061, 0.017] for the aligned run and +0.022 [-0.011, 0.056] for the source
#   (paired bootstrap 95%, ``python -m bench.replicate.sample_steps``): no difference either way;
# - the VAE at 1000 steps and the source at 2000 instead of 2500 and 3000 (the two took 55 min of the 20-step
#   run; their losses fell only 0.133 -> 0.095 and 0.409 -> 0.353 over their last 1500 and 1800 steps), and the
#   flow loss on 60 validation images instead of 120;
# - 120 validation prompts (20 per task) instead of 180: every choice is still made on validation, at two thirds of
#   its sampling. Splitting the VAE's and the source's batches over two one-thread processes (gloo, averaged
#   gradients) was tried and measured 0.90-1.16x one two-thread process: not worth its code.
TOKENS8 = replace(TOKENS8_FULL, name="tokens8", sample_steps=12, vae_steps=1000, source_steps=2000, val_prompts=120,
                  flow_items=60)
BUDGETS = {b.name: b for b in (FULL, TOKENS8, TOKENS8_FULL)}
# three blocks: the paper set (first and last) leaves one frozen for the aligned conversion to align to
SMOKE = Budget(name="smoke", layers=3, pool=64, val_prompts=12, test_prompts=12, validate=60, vae_steps=3,
               vae_batch=4, source_steps=3, source_batch=4, sample_steps=2, data_prompts=4, images_per_prompt=2,
               distill_steps=2, distill_batch=1, train_steps=2, train_batch=2, train_warmup=1, eval_every=2,
               flow_sigmas=2, flow_items=4)

STAGE_FIELDS = {
    "pool": ("size", "pool"),
    "world": ("size", "pool", "val_prompts", "test_prompts", "validate"),
    "vae": ("vae_steps", "vae_batch", "vae_lr", "kl_weight"),
    "source": ("dim", "layers", "heads", "cap_dim", "source_steps", "source_batch", "source_lr", "source_ema",
               "caption_dropout", "shift"),
    "sample": ("sample_steps", "cfg", "shift"),
    "data": ("data_prompts", "images_per_prompt"),
    "distill": ("distill_steps", "distill_batch", "distill_lr"),
    "train": ("train_steps", "train_batch", "train_warmup", "train_ema", "caption_dropout", "eval_every", "shift",
              "distill_steps", "distill_batch"),
    "flow": ("flow_sigmas", "flow_items"),
}


# Fields added after the 4x4 run: they enter a stage's key only when they differ from FULL's, so its cached stages
# stay valid.
VARIANT_FIELDS = {"source": ("latent_patch",), "convert": ("pixel_patch", "head"), "distill": ("pixel_patch", "head")}


def stage_key(stage: str, budget: Budget, *upstream: str, extra: object = None) -> str:
    cfg = {f: getattr(budget, f) for f in STAGE_FIELDS.get(stage, ())}
    cfg.update({f: getattr(budget, f) for f in VARIANT_FIELDS.get(stage, ()) if getattr(budget, f) != getattr(FULL, f)})
    blob = json.dumps({"stage": stage, "cfg": cfg, "up": upstream, "seeds": SEEDS, "v": VERSION, "extra": extra},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def results_paths(budget: Budget) -> tuple[Path, Path]:
    """Where a full-size design's report goes: (folder for plots and report.json, the markdown file)."""
    if budget.name == FULL.name:
        return RESULTS_DIR, RESULTS_MD
    folder = RESULTS_DIR.with_name(f"replicate-{budget.name}")
    return folder, folder / "RESULTS.md"


def budget_dict(budget: Budget) -> dict:
    return {**{k: v for k, v in asdict(budget).items() if k != "timeouts"}, "pixel_patch": budget.pixel_patch,
            "head": budget.head}
