"""The replication's stages, each cached by a key over its budget fields and its upstream stages' keys.

world -> vae -> source (+ text encoder) -> source_eval
                       \\-> convert (python -m l2p.convert) + scratch init
                       \\-> data_syn (ComfyUI) / data_real (renders) -> train_<run> (training/launch.py) -> eval_<run>

Stages that produce folders (datasets, training runs) keep them in ``<cache>/<name>-<key>/`` and record
completion with their cache entry, written last.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import Cache, Stages, psnr, summary
from dataset.folder import DatasetItem, DatasetWriter, conditioning_file_bytes, png_bytes
from dataset.prompts import PromptRecord
from l2p.format.tensor_io import save_safetensors_atomic
from shapes_world import detail_ratio, evaluate, make_scenes, prompt_for, stripe_contrast, validate, vocabulary
from shapes_world.render import render_many
from shapes_world.scene import TASKS, sample_scene
from training.contract import TrainConfig, parse_event, to_toml

from . import models
from .config import (
    HEAD_WIDTH_DIV,
    LATENT_SCALE,
    LATENT_SHIFT,
    PIXEL_PATCH,
    REPO,
    RUNS,
    SEEDS,
    Budget,
    budget_dict,
    stage_key,
)

Tensor = torch.Tensor


def balanced_scenes(n: int, seed: int, size: int) -> list:
    """``n`` scenes cycling through GenEval's tasks (equal counts per task when n is a multiple of 6)."""
    return [sample_scene(np.random.default_rng([seed, i]), task=TASKS[i % len(TASKS)], size=size) for i in range(n)]


def scratch_l2p_state(budget: Budget, seed: int) -> dict[str, Tensor]:
    """An L2P model of the replication's size with every weight at its default init (official layout)."""
    from l2p.head import build_head
    from l2p.pixel_dit import official_state_dict
    from l2p.tiny import official_trunk

    torch.manual_seed(seed)
    trunk = official_trunk(budget.dim, budget.layers, 1, budget.heads, budget.cap_dim, PIXEL_PATCH)
    head = build_head("1k", budget.dim, width_div=HEAD_WIDTH_DIV)
    return {k: v.contiguous() for k, v in official_state_dict(trunk, head).items()}


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


class Pipeline:
    def __init__(self, budget: Budget, cache_dir: Path, fresh: bool = False):
        self.b = budget
        self.dir = cache_dir / budget.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cache = Cache(self.dir, fresh)
        self.stages = Stages(self.cache)
        self.fresh = fresh
        self.report: dict[str, Any] = {"budget": budget_dict(budget)}
        self.start_scores: dict[str, dict[str, Any]] = {}
        torch.set_num_threads(min(2, os.cpu_count() or 1))

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

    # ------------------------------------------------------------------------------------------- stages
    def world(self) -> None:
        b = self.b
        self.pool_scenes = make_scenes(b.pool, SEEDS["pool"], b.size)
        self.eval_scenes = balanced_scenes(b.eval_prompts, SEEDS["eval"], b.size)
        self.pool_prompts = [prompt_for(s) for s in self.pool_scenes]
        self.eval_prompts = [prompt_for(s) for s in self.eval_scenes]
        self.eval_seeds = [SEEDS["eval"] * 1000 + i for i in range(b.eval_prompts)]
        self.world_key = stage_key("world", b)

        def make():
            pool = torch.from_numpy(render_many(self.pool_scenes))
            gt = torch.from_numpy(render_many(self.eval_scenes))
            info = {"validation": validate(b.validate, SEEDS["validate"], b.size),
                    "gt_eval": evaluate(gt.numpy(), [s.spec for s in self.eval_scenes])}
            return {"pool": pool, "eval": gt}, info

        sd, info = self.stages.get("world", self.world_key, make)
        self.pool_u8, self.eval_gt = sd["pool"], sd["eval"]
        self.report["world"] = {**info, "gt_colour": evaluate(self.eval_gt.numpy(), [s.spec for s in self.eval_scenes],
                                                              match_shape=False)}

    def vae(self) -> None:
        b = self.b
        self.vae_key = stage_key("vae", b, self.world_key)

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
        gt = models.to_tensor(self.eval_gt)
        recon = models.decode(self.vae_model, models.encode(self.vae_model, gt))
        recon_u8 = models.to_uint8(recon)
        self.vae_recon = recon_u8
        self.report["vae"] = {
            **info, "psnr": psnr(recon, gt),
            "score_recon": evaluate(recon_u8.numpy(), [s.spec for s in self.eval_scenes]),
            "colour_recon": evaluate(recon_u8.numpy(), [s.spec for s in self.eval_scenes], match_shape=False),
            "detail_recon": detail_ratio(recon_u8.numpy(), self.eval_gt.numpy()),
            "stripes_recon": self.stripes(recon_u8.numpy()),
            "params": sum(v.numel() for v in sd.values())}

    def source(self) -> None:
        b = self.b
        self.source_key = stage_key("source", b, self.vae_key)

        def make():
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

    def source_eval(self) -> None:
        key = stage_key("sample", self.b, self.source_key, self.world_key)

        def make():
            images = models.sample_source(self.source_model, self.vae_model, self.encoder, self.eval_prompts,
                                          self.eval_seeds, self.b)
            return {"images": images}, {}

        sd, _ = self.stages.get("source_eval", key, make)
        self.source_images = sd["images"]
        self.report["source_eval"] = self.scores(self.source_images)  # scored here: cheap, and never stale

    def scores(self, images: Tensor) -> dict[str, Any]:
        arr = images.numpy()
        specs = [s.spec for s in self.eval_scenes]
        return {"geneval": evaluate(arr, specs), "colour_level": evaluate(arr, specs, match_shape=False),
                "detail": detail_ratio(arr, self.eval_gt.numpy()), "stripes": self.stripes(arr)}

    def stripes(self, images: np.ndarray) -> float:
        """Mean depth of the 2-3 px stripes on the prompts that ask for a striped background, relative to the
        ground truth's: fine detail that grain cannot fake (``detail`` counts noise as detail)."""
        striped = [i for i, s in enumerate(self.eval_scenes) if s.spec.background == "striped"]
        reference = float(stripe_contrast(self.eval_gt.numpy()[striped]).mean())
        return float(stripe_contrast(images[striped]).mean()) / reference

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

    @staticmethod
    def _file_key(path: Path) -> str | None:
        if not path.is_file():
            return None
        import safetensors

        with safetensors.safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("bench.key")

    def convert(self) -> None:
        """The pack's conversion CLI on the source file, and a same-size model with a fresh init."""
        key = stage_key("convert", self.b, self.source_key)

        def make(folder: Path) -> dict[str, Any]:
            out = folder / "l2p-converted.safetensors"
            subprocess.run([sys.executable, "-m", "l2p.convert", "--source", str(self.source_file), "--out", str(out),
                            "--patch", str(PIXEL_PATCH), "--init", "official", "--policy", "official",
                            "--seed", str(SEEDS["convert"]), "--head-width-div", str(HEAD_WIDTH_DIV)],
                           check=True, cwd=REPO, capture_output=True)
            save_safetensors_atomic(scratch_l2p_state(self.b, SEEDS["scratch"]), str(folder / "scratch.safetensors"),
                                    metadata={"l2p.policy": "official"})
            return {}

        self.convert_dir, _ = self.folder_stage("convert", key, make)
        self.convert_key = key
        self.start_files = {"convert": (self.convert_dir / "l2p-converted.safetensors", key),
                            "scratch": (self.convert_dir / "scratch.safetensors", key)}

    def start_file(self, start: str) -> tuple[Path, str]:
        """A run's start weights and their stage key: the official conversion, the scratch init, or
        ``convert_<init>``: the same conversion with another pixel-embedder init (made on first use)."""
        if start not in self.start_files:
            init = start.removeprefix("convert_")
            key = stage_key("convert", self.b, self.source_key, extra=f"{init}:model-latent-space")

            def make(folder: Path) -> dict[str, Any]:
                vae_dir = folder / "vae"  # a diffusers folder: what l2p.convert reads for the vae_* inits
                vae = models.vae_from_state(self.vae_sd)
                # the DiT's latents are (raw - SHIFT) * SCALE (models.encode): the fits must target that space
                vae.register_to_config(scaling_factor=LATENT_SCALE, shift_factor=LATENT_SHIFT)
                vae.save_pretrained(str(vae_dir), safe_serialization=True)
                subprocess.run([sys.executable, "-m", "l2p.convert", "--source", str(self.source_file), "--out",
                                str(folder / "l2p-converted.safetensors"), "--patch", str(PIXEL_PATCH), "--init",
                                init, "--vae", str(vae_dir), "--policy", "official", "--seed",
                                str(SEEDS["convert"]), "--head-width-div", str(HEAD_WIDTH_DIV)],
                               check=True, cwd=REPO, capture_output=True)
                return {}

            folder, _ = self.folder_stage(start, key, make)
            self.start_files[start] = (folder / "l2p-converted.safetensors", key)
        return self.start_files[start]

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

    def data_real(self) -> None:
        b = self.b
        key = stage_key("data", b, self.source_key, "real")

        def make(folder: Path) -> dict[str, Any]:
            from PIL import Image

            scenes = make_scenes(b.data_items, SEEDS["real"], b.size)
            images = render_many(scenes)
            writer = DatasetWriter(str(folder))
            for i, (scene, image) in enumerate(zip(scenes, images, strict=True)):
                text = prompt_for(scene)
                with torch.no_grad():
                    cond = conditioning_file_bytes(self.encoder([text])[0])
                writer.write(DatasetItem(index=i, text=text, seed=SEEDS["real"] * 100_000 + i, category=scene.task,
                                         width=b.size, height=b.size), png_bytes(Image.fromarray(image)), cond)
            return {"items": len(scenes)}

        self.real_dir, info = self.folder_stage("data_real", key, make)
        self.real_key = key
        self.report["data_real"] = info

    def train(self, run_name: str) -> tuple[Path, dict[str, Any], str]:
        b, run = self.b, RUNS[run_name]
        data_dir, data_key = (self.syn_dir, self.syn_key) if run.data == "syn" else (self.real_dir, self.real_key)
        model, start_key = self.start_file(run.start)
        key = stage_key("train", b, start_key, data_key, extra=run)
        steps, every = run.steps or b.train_steps, run.eval_every or b.eval_every

        def make(folder: Path) -> dict[str, Any]:
            empty = folder / "empty.cond.safetensors"  # CFG's negative: what caption dropout trains on
            with torch.no_grad():
                empty.write_bytes(conditioning_file_bytes(self.encoder([""])[0]))
            config = TrainConfig(
                model=str(model), dataset=str(data_dir), output_dir=str(folder / "run"),
                caption_dropout=b.caption_dropout, empty_conditioning=str(empty), policy=run.policy, steps=steps,
                lr=b.train_lr, warmup_steps=b.train_warmup, batch_size=b.train_batch, ema_decay=b.train_ema,
                shift=b.shift, fixed_noise=False, mixed_precision="no", max_pixels=b.size * b.size,
                checkpoint_every=every, checkpoints_total_limit=0, log_every=10, validate_every=0,
                seed=SEEDS["train"], export_name=run_name)
            cfg_path = folder / "config.toml"
            cfg_path.write_text(to_toml(config), encoding="utf-8")
            events = run_logged([sys.executable, "training/launch.py", "--config", str(cfg_path)], folder / "log.txt",
                                env={"OMP_NUM_THREADS": "2"})
            t0, start = next(((t, e) for t, e in events if e.get("event") == "start"), (0.0, {}))
            log = [(t - t0, e["step"], e["loss"]) for t, e in events if e.get("event") == "log"]
            if not log or log[-1][1] != steps:
                raise RuntimeError(f"{run_name}: the trainer's log ends before step {steps}; see {folder}")
            return {"log": log, "policy": start.get("policy", ""), "seconds_per_step": log[-1][0] / log[-1][1]}

        folder, info = self.folder_stage(f"train_{run_name}", key, make)
        return folder, info, key

    def run_model(self, run_name: str, checkpoint: str | None) -> torch.nn.Module:
        """The run's start model with a checkpoint's weights (its EMA when the run kept one) copied in."""
        import safetensors.torch

        from training.model import load_model, official_names

        run = RUNS[run_name]
        loaded = load_model(str(self.start_file(run.start)[0]), run.policy)
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

    def _sample(self, model: torch.nn.Module) -> Tensor:
        return models.sample_pixels(model, self.encoder, self.eval_prompts, self.eval_seeds, self.b)

    def _scored(self, label: str, images: Tensor) -> dict[str, Any]:
        scores = self.scores(images)
        print(f"  {label}: GenEval {scores['geneval']['overall']:.3f} (colour level "
              f"{scores['colour_level']['overall']:.3f}), detail {scores['detail']:.2f}", flush=True)
        return scores

    def start_eval(self, start: str) -> dict[str, Any]:
        """Step 0 of every run from the same start weights (the converted source, or the scratch init): once."""
        run_name = next(k for k, r in RUNS.items() if r.start == start)
        key = stage_key("sample", self.b, self.start_file(start)[1], self.world_key, extra=start)

        def make():
            return {"images": self._sample(self.run_model(run_name, None))}, {}

        if start not in self.start_scores:  # asked for by each run; fetched (and its time counted) once
            sd, _ = self.stages.get(f"eval_start_{start}", key, make)
            self.start_scores[start] = self._scored(f"{start} step 0", sd["images"])
        return self.start_scores[start]

    def evaluate_run(self, run_name: str) -> None:
        """Score the run's model at step 0 and at every checkpoint (same prompts, seeds and sampler).

        The stage keeps every checkpoint's images; the scores are computed from them here, so a change to the
        scorer never needs the models sampled again."""
        from training.checkpoint import checkpoints

        folder, train_info, train_key = self.train(run_name)
        key = stage_key("sample", self.b, train_key, self.world_key)
        start = self.start_eval(RUNS[run_name].start)

        def make():
            steps = checkpoints(str(folder / "run"))
            images = {f"step_{step}": self._sample(self.run_model(run_name, path)) for step, path in steps}
            return images, {"steps": [step for step, _ in steps]}

        sd, info = self.stages.get(f"eval_{run_name}", key, make)
        curve = [{"step": 0, **start}]
        curve += [{"step": step, **self._scored(f"{run_name} step {step}", sd[f"step_{step}"])}
                  for step in info["steps"]]
        self.report.setdefault("runs", {})[run_name] = {**train_info, "curve": curve,
                                                        "export": str(folder / "run" / f"{run_name}.safetensors")}
        self.run_images = getattr(self, "run_images", {})
        self.run_images[run_name] = sd[f"step_{info['steps'][-1]}"]

    # ------------------------------------------------------------------------------------------- all
    def run_all(self) -> dict[str, Any]:
        self.world()
        self.vae()
        self.source()
        self.source_eval()
        self.files()
        self.convert()
        self.data_syn()
        self.data_real()
        for name in self.b.runs:
            self.evaluate_run(name)
        self.report["seconds"] = self.stages.seconds
        self.report["cached"] = self.stages.cached
        return self.report
