"""The replication's stages, each cached by a key over its budget fields and its upstream stages' keys.

world -> vae -> source (+ text encoder) -> source_<split>_cfg<c> (the CFG chosen on validation)
                       \\-> files -> convert (python -m l2p.convert, init official) + scratch inits
                                \\-> data_syn (the source through ComfyUI) -> distill (l2p.convert --init distill)
                                                                    \\-> train_<run> (training/launch.py)
train_<run> -> <run>_val_cfg3_step<s> (every checkpoint) -> <run>_val_cfg<c>_step<chosen>
            -> <run>_test_cfg<chosen>_step<chosen> + flow_<run>

Every choice (checkpoint, CFG, the scratch rate) is made on the validation split; the test split is sampled once
per model, at its chosen checkpoint and CFG. Stages that produce folders (datasets, conversions, training runs)
keep them in ``<cache>/<name>-<key>/`` and record completion with their cache entry, written last.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import Cache, Stages, psnr, summary
from dataset.folder import conditioning_file_bytes
from dataset.prompts import PromptRecord
from l2p.format.tensor_io import save_safetensors_atomic
from shapes_world import detail_ratio, evaluate, make_scenes, prompt_for, stripe_contrast, validate
from shapes_world.render import render_many
from shapes_world.scene import TASKS, sample_scene
from shapes_world.score import check, summarize
from training.contract import TrainConfig, parse_event, to_toml

from . import models
from .config import (
    FULL,
    HEAD_WIDTH_DIV,
    LATENT_SCALE,
    LATENT_SHIFT,
    REPO,
    RUNS,
    SCRATCH_LRS,
    SEEDS,
    SMOKE,
    Budget,
    budget_dict,
    stage_key,
)

Tensor = torch.Tensor


def balanced_scenes(n: int, seed: int, size: int) -> list:
    """``n`` scenes cycling through GenEval's tasks (equal counts per task when n is a multiple of 6)."""
    return [sample_scene(np.random.default_rng([seed, i]), task=TASKS[i % len(TASKS)], size=size) for i in range(n)]


@dataclass
class Split:
    """Held-out prompts with their scenes, sampling seeds and ground-truth renders."""

    name: str
    scenes: list
    prompts: list[str]
    seeds: list[int]
    gt: Tensor | None = None  # uint8 [N, H, W, 3]

    @property
    def specs(self) -> list:
        return [s.spec for s in self.scenes]

    @property
    def tasks(self) -> list[str]:
        return [s.task for s in self.scenes]


def scratch_l2p_model(budget: Budget, seed: int) -> torch.nn.Module:
    """An L2P model (``PixelDiT``) of the replication's size with every weight at its default init."""
    from l2p.head import build_head
    from l2p.pixel_dit import PixelDiT
    from l2p.tiny import official_trunk

    torch.manual_seed(seed)
    trunk = official_trunk(budget.dim, budget.layers, 1, budget.heads, budget.cap_dim, budget.pixel_patch)
    return PixelDiT(trunk, build_head(budget.head, budget.dim, width_div=HEAD_WIDTH_DIV))


def scratch_l2p_state(budget: Budget, seed: int) -> dict[str, Tensor]:
    """The same in the official layout."""
    return {k: v.contiguous() for k, v in scratch_l2p_model(budget, seed).official_state_dict().items()}


def run_logged(cmd: list[str], log: Path, env: dict | None = None) -> list[tuple[float, dict]]:
    """Run a command (argument list, no shell); its stdout's trainer events come back timestamped, everything
    (stderr's progress bars too) goes to ``log``."""
    events: list[tuple[float, dict]] = []
    start = time.monotonic()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=out, text=True, cwd=REPO,
                                env={**os.environ, **(env or {})})
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if (event := parse_event(line)) is not None:
                events.append((time.monotonic() - start, event))
        code = proc.wait()
    if code != 0:
        tail = "".join(log.read_text(encoding="utf-8").splitlines(keepends=True)[-15:])
        raise RuntimeError(f"{cmd[1:3]} exited with {code}; log {log}:\n{tail}")
    return events


def run_cli(cmd: list[str], threads: int) -> str:
    """Run one of the pack's CLIs (argument list, no shell); its stdout, or its error's last lines."""
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:4])} exited with {done.returncode}: {done.stderr.strip()[-1500:]}")
    return done.stdout


def choose(scored: dict[Any, dict[str, Any]], prefer: Any) -> Any:
    """The key with the best colour-level score, then GenEval; a tie goes to ``prefer``, then to the larger key
    (the later step) (the rule RESULTS.md states)."""
    def rank(k: Any) -> tuple[float, float, bool, Any]:
        return scored[k]["colour_level"]["overall"], scored[k]["geneval"]["overall"], k == prefer, k

    return max(scored, key=rank)


class Pipeline:
    def __init__(self, budget: Budget, cache_dir: Path, fresh: bool = False, threads: int = 2):
        self.b = budget
        self.dir = cache_dir / budget.name
        self.dir.mkdir(parents=True, exist_ok=True)
        # a variant of the full design reads the stages it shares with it (same key: the world, the VAE) from there
        shared = () if budget.name in (FULL.name, SMOKE.name) else (cache_dir / FULL.name,)
        self.cache = Cache(self.dir, fresh, shared=shared)
        self.stages = Stages(self.cache)
        self.fresh = fresh
        self.report: dict[str, Any] = {"budget": budget_dict(budget)}
        self.scratch_lr: float | None = None
        self._samples: dict[str, Tensor] = {}  # each stage fetched once, so its seconds are counted once
        self._trained: dict[str, tuple[Path, dict[str, Any], str]] = {}
        self.threads = 0
        self.set_threads(threads)

    def set_threads(self, threads: int) -> None:
        """Threads for this process's torch and for the CLIs and trainers it starts (at most the CPU count)."""
        self.threads = max(1, min(threads, os.cpu_count() or 1))
        torch.set_num_threads(self.threads)

    # ------------------------------------------------------------------------------------------- helpers
    def folder_stage(self, name: str, key: str, make) -> tuple[Path, dict[str, Any]]:
        """A stage whose product is a folder: rerun when its cache entry or its folder is missing."""
        folder = self.dir / f"{name}-{key}"
        if not folder.is_dir():
            (self.dir / f"{name}.safetensors").unlink(missing_ok=True)
        for stale in self.dir.glob(f"{name}-*"):
            if stale != folder and stale.is_dir():
                shutil.rmtree(stale)

        def build():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            return {}, make(folder)

        _, info = self.stages.get(name, key, build)
        return folder, info

    def scores(self, images: Tensor, split: Split) -> dict[str, Any]:
        """GenEval and colour level (summaries and each prompt's hit, for the intervals), fine detail."""
        arr = images.numpy()
        hits = {m: [bool(check(im, spec, m == "geneval").correct) for im, spec in zip(arr, split.specs, strict=True)]
                for m in ("geneval", "colour_level")}
        # each image judged once per metric; the summaries are derived from the same hits
        return {"geneval": summarize(hits["geneval"], split.tasks),
                "colour_level": summarize(hits["colour_level"], split.tasks), "hits": hits, "tasks": split.tasks,
                "detail": detail_ratio(arr, split.gt.numpy()),
                "stripes": self.stripes(arr, split)}

    @staticmethod
    def stripes(images: np.ndarray, split: Split) -> float:
        """Mean depth of the 2-3 px stripes on the prompts that ask for a striped background, relative to the
        ground truth's: fine detail that grain cannot fake (``detail`` counts noise as detail)."""
        striped = [i for i, s in enumerate(split.scenes) if s.spec.background == "striped"]
        reference = float(stripe_contrast(split.gt.numpy()[striped]).mean())
        return float(stripe_contrast(images[striped]).mean()) / reference

    def sampled(self, name: str, key: str, draw, group: str) -> Tensor:
        """A cached set of samples (``draw() -> uint8 images``); its seconds count under ``group``."""
        if name not in self._samples:
            self._samples[name] = self.stages.get(name, key, lambda: ({"images": draw()}, {}), group=group)[0]["images"]
        return self._samples[name]

    # ------------------------------------------------------------------------------------------- world, VAE, source
    def world(self) -> None:
        b = self.b
        self.pool_scenes = make_scenes(b.pool, SEEDS["pool"], b.size)
        self.pool_prompts = [prompt_for(s) for s in self.pool_scenes]
        self.splits = {}
        for name, n in (("val", b.val_prompts), ("test", b.test_prompts)):
            scenes = balanced_scenes(n, SEEDS[name], b.size)
            self.splits[name] = Split(name, scenes, [prompt_for(s) for s in scenes],
                                      [SEEDS[name] * 1000 + i for i in range(n)])
        self.world_key = stage_key("world", b)
        self.pool_key = stage_key("pool", b)

        def make():
            pool = torch.from_numpy(render_many(self.pool_scenes))
            gt = {name: torch.from_numpy(render_many(split.scenes)) for name, split in self.splits.items()}
            info = {"validation": validate(b.validate, SEEDS["validate"], b.size),
                    "gt_test": evaluate(gt["test"].numpy(), self.splits["test"].specs)}
            return {"pool": pool, **gt}, info

        sd, info = self.stages.get("world", self.world_key, make)
        self.pool_u8 = sd["pool"]
        for name, split in self.splits.items():
            split.gt = sd[name]
        test = self.splits["test"]
        self.report["world"] = {**info, "gt_colour": evaluate(test.gt.numpy(), test.specs, match_shape=False)}

    def vae(self) -> None:
        b = self.b
        self.vae_key = stage_key("vae", b, self.pool_key)

        def make():
            pool = models.to_tensor(self.pool_u8)
            vae, losses = models.train_vae(pool, b.vae_steps, b.vae_batch, b.vae_lr, b.kl_weight, SEEDS["vae"])
            with torch.no_grad():
                raw = torch.cat([vae.encode(pool[i:i + 256]).latent_dist.mean for i in range(0, len(pool), 256)])
            models.bake_latent_norm(vae, raw)
            return {k: v.contiguous() for k, v in vae.state_dict().items()}, {"loss": summary(losses)}

        sd, info = self.stages.get("vae", self.vae_key, make)
        self.vae_model = models.vae_from_state(sd)
        self.vae_sd = sd
        test = self.splits["test"]
        gt = models.to_tensor(test.gt)
        recon = models.decode(self.vae_model, models.encode(self.vae_model, gt))
        self.vae_recon = models.to_uint8(recon)
        self.report["vae"] = {**info, "psnr": psnr(recon, gt), "test": self.scores(self.vae_recon, test),
                              "params": sum(v.numel() for v in sd.values())}

    def source(self) -> None:
        b = self.b
        self.source_key = stage_key("source", b, self.vae_key)

        def make():
            from shapes_world import vocabulary

            latents = models.encode(self.vae_model, models.to_tensor(self.pool_u8))
            torch.manual_seed(SEEDS["source"])
            source = models.new_source(b)
            encoder = models.new_text_encoder(vocabulary(), b)
            losses = models.train_source(source, encoder, latents, self.pool_prompts, b, SEEDS["source"])
            sd = {f"dit.{k}": v.contiguous() for k, v in source.state_dict().items()}
            sd.update({f"te.{k}": v.contiguous() for k, v in encoder.model.state_dict().items()})
            return sd, {"loss": summary(losses), "te_meta": encoder.file_metadata()}

        sd, info = self.stages.get("source", self.source_key, make)
        self.source_sd = {k[4:]: v for k, v in sd.items() if k.startswith("dit.")}
        self.source_model = models.new_source(b)
        self.source_model.load_state_dict(self.source_sd)
        self.source_model.train(False)
        from shapes_world.text_encoder import text_encoder_from_state

        self.te_sd = {k[3:]: v for k, v in sd.items() if k.startswith("te.")}
        self.te_meta = info["te_meta"]
        self.encoder = text_encoder_from_state(self.te_sd, self.te_meta)
        self.report["source"] = {"loss": info["loss"], "params": sum(v.numel() for v in self.source_sd.values()),
                                 "te_params": sum(v.numel() for v in self.te_sd.values())}

    def source_images(self, split: Split, cfg: float) -> Tensor:
        key = stage_key("sample", self.b, self.source_key, self.world_key, extra=(split.name, cfg))
        name = f"source_{split.name}_cfg{cfg:g}"
        return self.sampled(name, key, lambda: models.sample_source(
            self.source_model, self.vae_model, self.encoder, split.prompts, split.seeds, self.b, cfg=cfg),
            "source_eval")

    def source_eval(self) -> None:
        """The source's CFG chosen on validation, then its test samples at that CFG."""
        val, test = self.splits["val"], self.splits["test"]
        scored = {cfg: self.scores(self.source_images(val, cfg), val) for cfg in self.b.cfg_choices}
        cfg = choose(scored, self.b.cfg)
        self.source_test_images = self.source_images(test, cfg)
        self.report["source_eval"] = {"val": {f"{c:g}": v for c, v in scored.items()}, "cfg": cfg,
                                      "test": self.scores(self.source_test_images, test)}

    # ------------------------------------------------------------------------------------------- files, starts, data
    def files(self) -> None:
        """The source, its VAE and text encoder as files (what ComfyUI and l2p.convert read)."""
        self.files_dir = self.dir / "files"
        self.files_dir.mkdir(exist_ok=True)
        self.source_file = self.files_dir / "l2p-shapes-source.safetensors"
        self.vae_file = self.files_dir / "l2p-shapes-vae.safetensors"
        self.te_file = self.files_dir / "l2p-shapes-te.safetensors"
        meta = {"bench.key": self.source_key}
        for path, sd, extra in ((self.source_file, self.source_sd, {}), (self.vae_file, self.vae_sd, {}),
                                (self.te_file, self.te_sd, self.te_meta)):
            if self._file_key(path) != self.source_key:
                save_safetensors_atomic(sd, str(path), metadata={**meta, **extra})
        self.empty_file = self.files_dir / "empty.cond.safetensors"  # CFG's negative, what caption dropout trains on
        with torch.no_grad():
            self.empty_file.write_bytes(conditioning_file_bytes(self.encoder([""])[0]))

    @staticmethod
    def _file_key(path: Path) -> str | None:
        if not path.is_file():
            return None
        import safetensors

        with safetensors.safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("bench.key")

    def convert(self) -> None:
        """The pack's conversion CLI on the source file (the released init), and the scratch inits."""
        key = stage_key("convert", self.b, self.source_key)

        def make(folder: Path) -> dict[str, Any]:
            out = folder / "l2p-converted.safetensors"
            run_cli([sys.executable, "-m", "l2p.convert", "--source", str(self.source_file), "--out", str(out),
                     "--patch", str(self.b.pixel_patch), "--head", self.b.head, "--init", "official",
                     "--policy", "paper", "--seed", str(SEEDS["convert"]), "--head-width-div", str(HEAD_WIDTH_DIV)],
                    self.threads)
            for seed in sorted({r.seed for r in RUNS.values() if r.scratch}):
                save_safetensors_atomic(scratch_l2p_state(self.b, SEEDS["scratch"] + seed),
                                        str(folder / f"scratch-{seed}.safetensors"),
                                        metadata={"l2p.policy": "official"})
            return {}

        self.convert_dir, _ = self.folder_stage("convert", key, make)
        self.start_files = {"convert": (self.convert_dir / "l2p-converted.safetensors", key)}
        for seed in {r.seed for r in RUNS.values() if r.scratch}:
            self.start_files[f"scratch-{seed}"] = (self.convert_dir / f"scratch-{seed}.safetensors", key)

    def vae_folder(self, folder: Path) -> Path:
        """The world's VAE as a diffusers folder (what l2p.convert reads), scaled to the DiT's latent space."""
        vae = models.vae_from_state(self.vae_sd)
        # the DiT's latents are (raw - SHIFT) * SCALE (models.encode): the fits must target that space
        vae.register_to_config(scaling_factor=LATENT_SCALE, shift_factor=LATENT_SHIFT)
        vae.save_pretrained(str(folder / "vae"), safe_serialization=True)
        return folder / "vae"

    def distill(self) -> None:
        """The aligned conversion through the pack's CLI, on the synthetic dataset with its captions."""
        b = self.b
        key = stage_key("distill", b, self.source_key, self.syn_key)

        def make(folder: Path) -> dict[str, Any]:
            start = time.perf_counter()
            stdout = run_cli(
                [sys.executable, "-m", "l2p.convert", "--source", str(self.source_file), "--out",
                 str(folder / "l2p-distilled.safetensors"), "--patch", str(b.pixel_patch), "--head", b.head,
                 "--init", "distill",
                 "--vae", str(self.vae_folder(folder)), "--policy", "paper", "--seed", str(SEEDS["convert"]),
                 "--head-width-div", str(HEAD_WIDTH_DIV), "--distill-images", str(self.syn_dir),
                 "--distill-size", str(b.size), "--distill-batch", str(b.distill_batch), "--distill-steps",
                 str(b.distill_steps), "--distill-head-steps", str(b.distill_steps), "--distill-lr",
                 str(b.distill_lr), "--device", "cpu"], self.threads)
            line = next((ln for ln in stdout.splitlines() if "distill:" in ln), "")
            return {"summary": line.strip(" |"), "wall_seconds": time.perf_counter() - start}

        folder, info = self.folder_stage("distill", key, make)
        self.start_files["distill"] = (folder / "l2p-distilled.safetensors", key)
        self.report["distill"] = info

    def data_syn(self) -> None:
        from .comfy_dataset import render_dataset

        b = self.b
        key = stage_key("data", b, self.source_key, stage_key("sample", b))
        scenes = make_scenes(b.data_prompts, SEEDS["syn"], b.size)
        records = [PromptRecord(i, s.task, prompt_for(s), SEEDS["syn"] * 100_000 + i) for i, s in enumerate(scenes)]
        files = {"diffusion_models": self.source_file, "vae": self.vae_file, "text_encoders": self.te_file}
        self.syn_dir, info = self.folder_stage("data_syn", key,
                                               lambda folder: render_dataset(records, files, folder, b))
        self.syn_key = key
        self.report["data_syn"] = info

    def start_file(self, run_name: str) -> tuple[Path, str]:
        run = RUNS[run_name]
        return self.start_files[f"scratch-{run.seed}" if run.scratch else run.start]

    # ------------------------------------------------------------------------------------------- training
    def run_lr(self, run_name: str) -> float:
        lr = RUNS[run_name].lr
        if lr:
            return lr
        if self.scratch_lr is None:
            raise RuntimeError(f"{run_name} takes the scratch rate chosen on validation: run the scratch_lr* runs "
                               "first")
        return self.scratch_lr

    def train(self, run_name: str) -> tuple[Path, dict[str, Any], str]:
        if run_name not in self._trained:
            self._trained[run_name] = self._train(run_name)
        return self._trained[run_name]

    def _train(self, run_name: str) -> tuple[Path, dict[str, Any], str]:
        b, run = self.b, RUNS[run_name]
        model, start_key = self.start_file(run_name)
        lr = self.run_lr(run_name)
        steps = b.train_steps + (b.scratch_extra_steps if run.scratch else 0)
        key = stage_key("train", b, start_key, self.syn_key, extra=(run, lr))

        def make(folder: Path) -> dict[str, Any]:
            config = TrainConfig(
                model=str(model), dataset=str(self.syn_dir), output_dir=str(folder / "run"),
                caption_dropout=b.caption_dropout, empty_conditioning=str(self.empty_file), policy=run.policy,
                steps=steps, lr=lr, lr_new=run.lr_new, warmup_steps=b.train_warmup, batch_size=b.train_batch,
                ema_decay=b.train_ema, shift=b.shift, fixed_noise=False, mixed_precision="no",
                max_pixels=b.size * b.size, checkpoint_every=b.eval_every, checkpoints_total_limit=0, log_every=10,
                validate_every=0, seed=SEEDS["train"] + run.seed, export_name=run_name)
            cfg_path = folder / "config.toml"
            cfg_path.write_text(to_toml(config), encoding="utf-8")
            events = run_logged([sys.executable, "training/launch.py", "--config", str(cfg_path)], folder / "log.txt",
                                env={"OMP_NUM_THREADS": str(self.threads)})
            t0, start = next(((t, e) for t, e in events if e.get("event") == "start"), (0.0, {}))
            log = [(t - t0, e["step"], e["loss"]) for t, e in events if e.get("event") == "log"]
            if not log or log[-1][1] != steps:
                raise RuntimeError(f"{run_name}: the trainer's log ends before step {steps}; see {folder}")
            return {"log": log, "policy": start.get("policy", ""), "seconds_per_step": log[-1][0] / log[-1][1],
                    "lr": lr}

        folder, info = self.folder_stage(f"train_{run_name}", key, make)
        return folder, info, key

    def run_model(self, run_name: str, checkpoint: str | None) -> torch.nn.Module:
        """The run's start model with a checkpoint's weights (its EMA when the run kept one) copied in."""
        import safetensors.torch

        from training.model import load_model, official_names

        loaded = load_model(str(self.start_file(run_name)[0]), RUNS[run_name].policy)
        if checkpoint is not None:
            ema = os.path.join(checkpoint, "ema.safetensors")
            trained = safetensors.torch.load_file(ema if os.path.isfile(ema) else
                                                  os.path.join(checkpoint, "trainable.safetensors"))
            names = official_names(loaded.model)
            params = {names[n]: p for n, p in loaded.model.named_parameters()}
            with torch.no_grad():
                for name, value in trained.items():
                    params[name].copy_(value)
        return loaded.model.train(False)

    # ------------------------------------------------------------------------------------------- evaluation
    def _scored(self, label: str, images: Tensor, split: Split) -> dict[str, Any]:
        scores = self.scores(images, split)
        print(f"  {label}: GenEval {scores['geneval']['overall']:.3f} (colour level "
              f"{scores['colour_level']['overall']:.3f}), detail {scores['detail']:.2f}", flush=True)
        return scores

    def checkpoints(self, run_name: str) -> tuple[dict[int, str | None], str]:
        """step -> checkpoint folder (None: the start weights, step 0 of an L2P run) and the training key."""
        from training.checkpoint import checkpoints

        folder, _, train_key = self.train(run_name)
        steps: dict[int, str | None] = {} if RUNS[run_name].scratch else {0: None}
        steps.update({step: path for step, path in checkpoints(str(folder / "run"))})
        return steps, train_key

    def run_images(self, run_name: str, step: int, split: Split, cfg: float) -> Tensor:
        steps, train_key = self.checkpoints(run_name)
        # step 0 is the start model, shared by every run from it
        key = stage_key("sample", self.b, self.start_file(run_name)[1] if step == 0 else train_key, self.world_key,
                        extra=(split.name, cfg))
        owner = f"start_{RUNS[run_name].start}" if step == 0 else run_name
        return self.sampled(f"{owner}_{split.name}_cfg{cfg:g}_step{step}", key, lambda: models.sample_pixels(
            self.run_model(run_name, steps[step]), self.encoder, split.prompts, split.seeds, self.b, cfg=cfg),
            f"eval_{owner}")

    def val_curve(self, run_name: str) -> tuple[dict[int, dict[str, Any]], int]:
        """Validation at every checkpoint at the budget's CFG, and the checkpoint chosen on it."""
        val = self.splits["val"]
        steps, _ = self.checkpoints(run_name)
        curve = {step: self._scored(f"{run_name} step {step}", self.run_images(run_name, step, val, self.b.cfg), val)
                 for step in steps}
        return curve, choose(curve, max(steps))

    def evaluate_run(self, run_name: str, cfg: float | None = None) -> None:
        """The validation curve and the chosen checkpoint; then the CFG chosen on validation there (or ``cfg``,
        chosen on the run's seed-0 twin); the test split once at that choice; the flow loss per sigma with and
        without the caption."""
        b, run = self.b, RUNS[run_name]
        val, test = self.splits["val"], self.splits["test"]
        curve, step = self.val_curve(run_name)
        choices = b.cfg_choices if cfg is None else (cfg,)
        by_cfg = {c: curve[step] if c == b.cfg else self._scored(f"{run_name} step {step} CFG {c:g}",
                                                                  self.run_images(run_name, step, val, c), val)
                  for c in choices}
        cfg = choose(by_cfg, b.cfg)
        images = self.run_images(run_name, step, test, cfg)
        _, train_info, _ = self.train(run_name)
        extra = b.scratch_extra_steps if run.start == "distill" else 0
        self.report.setdefault("runs", {})[run_name] = {
            **train_info, "curve": [{"step": s, "compute": s + extra, **v} for s, v in curve.items()],
            "chosen": {"step": step, "cfg": cfg, "val": by_cfg[cfg], "cfg_searched": len(choices) > 1},
            "test": self._scored(f"{run_name} test (step {step}, CFG {cfg:g})", images, test),
            "flow": self.flow(run_name, step), "start_compute": extra}
        self.test_images = getattr(self, "test_images", {})
        self.test_images[run_name] = images

    def twin_cfg(self, run_name: str) -> float | None:
        """A seed-1 run takes the CFG chosen for its seed-0 twin (None: search, when the twin is not run)."""
        twin = RUNS[run_name].twin
        if twin == "scratch":
            twin = self.report.get("scratch_lr", {}).get("run", "")
        done = self.report.get("runs", {}).get(twin)
        return done["chosen"]["cfg"] if done else None

    def scratch(self) -> None:
        """The scratch rate chosen on validation (each candidate's seed-0 run at its chosen checkpoint, at the
        budget's CFG); the chosen run gets the CFG search, the other keeps the budget's CFG; then seed 1."""
        runs = {lr: f"scratch_lr{lr:g}" for lr in SCRATCH_LRS}
        chosen_val = {}
        for lr, name in runs.items():
            curve, step = self.val_curve(name)
            chosen_val[lr] = curve[step]
        self.scratch_lr = choose(chosen_val, SCRATCH_LRS[0])
        self.report["scratch_lr"] = {"chosen": self.scratch_lr, "run": runs[self.scratch_lr]}
        for lr, name in runs.items():
            self.evaluate_run(name, None if lr == self.scratch_lr else self.b.cfg)
        for name in (r for r in self.b.runs if RUNS[r].scratch and not RUNS[r].lr):
            self.evaluate_run(name, self.twin_cfg(name))

    # ------------------------------------------------------------------------------------------- flow loss
    def flow_batch(self) -> tuple[Tensor, list[str], Tensor, Tensor]:
        """The validation prompts' source images (x0 in [-1, 1]), their prompts, sigmas (bin centres) and fixed
        noise: the source's own distribution, on prompts no model trained on."""
        b, val = self.b, self.splits["val"]
        n = min(b.flow_items, len(val.prompts))
        x0 = models.to_tensor(self.source_images(val, b.cfg)[:n])
        sigmas = (torch.arange(b.flow_sigmas, dtype=torch.float32) + 0.5) / b.flow_sigmas
        gen = torch.Generator().manual_seed(SEEDS["flow"])
        noise = torch.randn((b.flow_sigmas, *x0.shape), generator=gen)
        return x0, val.prompts[:n], sigmas, noise

    @torch.no_grad()
    def flow_losses(self, velocity, x0: Tensor, prompts: list[str], sigmas: Tensor, noise: Tensor) -> dict[str, list]:
        """Mean squared flow error (velocity noise - x0) at each sigma, with the right caption and with the empty
        one; ``velocity(x, sigma, caps)``."""
        caps, empty = self.encoder(prompts), self.encoder([""] * len(prompts))
        out: dict[str, list] = {"caption": [], "empty": []}
        for sigma, eps in zip(sigmas.tolist(), noise, strict=True):
            s = torch.full((len(x0),), sigma)
            x = (1 - sigma) * x0 + sigma * eps
            for name, c in (("caption", caps), ("empty", empty)):
                out[name].append(float((velocity(x, s, c) - (eps - x0)).pow(2).mean()))
        return out

    def flow(self, run_name: str, step: int) -> dict[str, Any]:
        steps, train_key = self.checkpoints(run_name)
        key = stage_key("flow", self.b, self.start_file(run_name)[1] if step == 0 else train_key, self.world_key,
                        extra=step)

        def make():
            x0, prompts, sigmas, noise = self.flow_batch()
            model = self.run_model(run_name, steps[step])
            return {}, {"sigmas": sigmas.tolist(), **self.flow_losses(model, x0, prompts, sigmas, noise)}

        return self.stages.get(f"flow_{run_name}", key, make, group="flow")[1]

    def source_flow(self) -> None:
        """The source's flow loss per sigma in its latent space (the same images, encoded), for its text gain."""
        key = stage_key("flow", self.b, self.source_key, self.world_key)

        def make():
            x0, prompts, sigmas, noise = self.flow_batch()
            z0 = models.encode(self.vae_model, x0)
            zn = torch.randn((len(sigmas), *z0.shape), generator=torch.Generator().manual_seed(SEEDS["flow"]))
            losses = self.flow_losses(lambda z, s, c: models.source_velocity(self.source_model, z, s, c), z0, prompts,
                                      sigmas, zn)
            return {}, {"sigmas": sigmas.tolist(), **losses}

        self.report["source_eval"]["flow"] = self.stages.get("flow_source", key, make, group="flow")[1]

    # ------------------------------------------------------------------------------------------- all
    def start_lane(self, runs: list[str], threads: int) -> tuple[subprocess.Popen, Path]:
        """``runs`` (after the shared stages, cached by now) in a second ``python -m bench.replicate`` with
        ``threads``; its output goes to a log in the cache folder."""
        budget = ["--smoke"] if self.b.name == SMOKE.name else ["--budget", self.b.name]
        cmd = [sys.executable, "-m", "bench.replicate", *budget, "--cache", str(self.dir.parent), "--runs",
               ",".join(runs), "--no-report", "--lanes", "1", "--threads", str(threads)]
        log = self.dir / "lane-scratch.log"
        print(f"[lanes] {', '.join(runs)} in a second process (log {log})", flush=True)
        with open(log, "w", encoding="utf-8") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                    env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        return proc, log

    def prepare(self) -> None:
        """Every stage before the training runs: world, VAE, source and its scores, conversion, dataset, distill."""
        for stage in (self.world, self.vae, self.source, self.source_eval, self.files, self.convert, self.data_syn,
                      self.distill, self.source_flow):
            stage()

    def run_all(self, lanes: int = 1) -> dict[str, Any]:
        """Every stage. ``lanes=2``: after the shared stages, the scratch runs train and are scored in a second
        process while this one does the L2P runs, one thread each: on 2 cores two one-thread processes do
        1.1-1.3x the work of one with two threads (these models are too small to keep a second thread busy;
        ``python -m bench.replicate.cost``). This process then reads the other lane's stages from the cache."""
        self.prepare()
        l2p_runs = [r for r in self.b.runs if not RUNS[r].scratch]
        scratch_runs = [r for r in self.b.runs if RUNS[r].scratch]
        threads, lane_threads = self.threads, max(1, self.threads // 2)
        split = lanes > 1 and l2p_runs and scratch_runs and not self.fresh
        lane = self.start_lane(scratch_runs, lane_threads) if split else None
        try:
            if lane is not None:
                self.set_threads(lane_threads)
            for name in l2p_runs:
                self.evaluate_run(name, self.twin_cfg(name))
        except BaseException:
            if lane is not None:
                lane[0].kill()
                lane[0].wait()
            raise
        finally:
            self.set_threads(threads)
        if lane is not None and (code := lane[0].wait()) != 0:
            tail = "".join(lane[1].read_text(encoding="utf-8").splitlines(keepends=True)[-15:])
            raise RuntimeError(f"the scratch lane exited with {code}; log {lane[1]}:\n{tail}")
        self.report["lanes"] = 1 if lane is None else 2
        if scratch_runs:
            self.scratch()
        self.report["seconds"] = self.stages.seconds
        self.report["cached"] = self.stages.cached
        return self.report
