"""The L2P training loop on accelerate: the source model's flow matching, a named trainable set, exact resume.

Randomness that shapes a step (sigma, and the noise unless it is fixed per item) is drawn from generators
seeded by (run seed, step, position in the global batch), and the data order depends only on
(seed, epoch). So a step's result does not depend on how many processes share the global batch, and a run
resumed from a checkpoint continues bit for bit (CPU) where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import time
from typing import Any

import torch

from l2p.format.export import OWN, export_metadata, plan_export
from l2p.format.layouts import COMFY
from l2p.format.tensor_io import save_safetensors_atomic
from l2p.policies import is_new
from l2p.sampling import euler_sample
from l2p.schedule import sampling_sigmas, shift_sigma
from l2p.sizes import side_multiple

from .checkpoint import (
    checkpoints,
    load_checkpoint,
    load_optimizer_state,
    optimizer_state,
    resolve_resume,
    restore_rng,
    save_checkpoint,
)
from .contract import TrainConfig, event_line, to_toml
from .data import Scan, TrainData, check_usable, load_conditioning, scan_dataset
from .lora import add_lora, lora_file, merged, target_modules
from .model import (
    LoadedModel,
    fsdp_units,
    load_model,
    model_header,
    official_names,
    policy_report,
    store_frozen,
    trainable_report,
)
from .sharding import fsdp_requested, full, shard_like, shard_model
from .text_cache import EMPTY_CONDITIONING, cache_text

DONE = "training_complete.json"


def item_generator(*parts: int) -> torch.Generator:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def sigma_grid(cfg: TrainConfig) -> torch.Tensor:
    """The official training grid: ``num_train_timesteps`` points of the shifted schedule in (0, 1]."""
    n = cfg.num_train_timesteps
    return torch.tensor([shift_sigma(1 - i / n, cfg.shift) for i in range(n)], dtype=torch.float32)


def noisy_batch(cfg: TrainConfig, x0: torch.Tensor, seeds: list[int], step: int, slots: list[int],
                grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, sigma, target) with x_t = (1 - sigma) x0 + sigma noise and target noise - x0."""
    sigmas, noises = [], []
    for seed, slot, x in zip(seeds, slots, x0, strict=True):
        gen = item_generator(cfg.seed, step, slot)
        sigmas.append(grid[torch.randint(len(grid), (1,), generator=gen)])
        noise_gen = item_generator(seed) if cfg.fixed_noise else gen
        noises.append(torch.randn(x.shape, generator=noise_gen))
    sigma = torch.cat(sigmas)
    noise = torch.stack(noises)
    s = sigma.view(-1, 1, 1, 1)
    return (1 - s) * x0 + s * noise, sigma, noise - x0


def drops_caption(seed: int, step: int, slot: int, share: float) -> bool:
    """Whether this (step, slot) trains on the empty prompt: a draw of its own, so a resumed run repeats it."""
    return torch.rand(1, generator=item_generator(seed, step, slot, 1)).item() < share


def param_groups(trained: list[tuple[str, torch.nn.Parameter]], lr: float, lr_new: float) -> list[dict]:
    """AdamW's parameter groups, each with its rate after warm-up: one at ``lr``; with ``lr_new``, the weights L2P
    adds (``l2p.policies.is_new``, LoRA adapters excepted) in a second group at that rate."""
    if not lr_new:
        return [{"params": [p for _, p in trained], "lr": lr}]
    new = [is_new(name) and ".lora_" not in name for name, _ in trained]
    groups = [{"params": [p for (_, p), n in zip(trained, new, strict=True) if not n], "lr": lr},
              {"params": [p for (_, p), n in zip(trained, new, strict=True) if n], "lr": lr_new}]
    return [g for g in groups if g["params"]]


def ema_decay_at(decay: float, update: int) -> float:
    """The EMA's decay at its ``update``-th update (0-based): ``min(decay, (1 + n) / (10 + n))``, the warm-up of
    diffusers' ``EMAModel``. Without it a start far from the trained weights lingers: at decay 0.99, 13% of the
    initial weights are still in the EMA after 200 steps; with it, none to float precision."""
    return min(decay, (1 + update) / (10 + update))


class StopFlag:
    """SIGINT/SIGTERM ask for a clean stop: finish the step, save a checkpoint, exit 0."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._set)

    def _set(self, *_):
        self.requested = True


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout per event, as training/contract.py defines it: what the L2PTrain node and log
    readers parse (an event or field outside the contract raises here, not in a reader)."""
    print(event_line(event, **fields), flush=True)


FROZEN_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def make_accelerator(cfg: TrainConfig):
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    # Without CUDA, accelerate only forms a process group (gloo, MULTI_CPU) when asked for the CPU. The group's
    # timeout bounds how long the others wait for a process that died or hangs.
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    timeout = InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.process_group_timeout_s))
    return Accelerator(mixed_precision=_mixed_precision(cfg), cpu=several and not torch.cuda.is_available(),
                       kwargs_handlers=[timeout])


def empty_conditioning_path(cfg: TrainConfig) -> str:
    """The empty prompt's features for caption dropout: the configured file, else cached into output_dir."""
    if cfg.empty_conditioning or not cfg.caption_dropout:
        return cfg.empty_conditioning
    return os.path.join(cfg.output_dir, EMPTY_CONDITIONING)


def prepare_dataset(cfg: TrainConfig, acc, warn: Any = None) -> Scan:
    """The training folder scanned (any layout), its missing conditioning cached with ``cfg.text_encoder`` by
    every process, and checked usable (one-line ``DatasetError`` otherwise). Emits ``dataset`` and ``caching``.

    A folder that is not shared between machines still works: after the shared pass, what a process still
    misses it caches itself."""
    header = model_header(cfg.model)
    multiple = side_multiple(header.patch_size, header.head_variant)
    scan = scan_dataset(cfg.dataset, multiple, header.cap_feat_dim)
    main = acc.is_main_process
    if not cfg.text_encoder:
        check_usable(scan)  # refused before any event: nothing can be cached
    if main:
        emit("dataset", layout=scan.layout, items=len(scan.items) + len(scan.uncached), skipped=len(scan.skipped),
             reasons=scan.reasons(), uncached=len(scan.uncached))
    empty = empty_conditioning_path(cfg) if cfg.text_encoder else ""
    if cfg.text_encoder and (scan.uncached or (empty and not os.path.isfile(empty))):
        total, done = len(scan.uncached), [0]

        def progress(n: int) -> None:
            done[0] += n * acc.num_processes  # every process encodes an equal share at the same pace
            if main:
                emit("caching", done=min(done[0], total), total=total)

        if empty:
            os.makedirs(os.path.dirname(empty) or ".", exist_ok=True)
        cache_text(scan.uncached, cfg.text_encoder, cfg.tokenizer, acc.process_index, acc.num_processes,
                   cfg.text_encoder_batch, empty, progress)
        acc.wait_for_everyone()
        scan = scan_dataset(cfg.dataset, multiple, header.cap_feat_dim)
        if scan.uncached or (empty and not os.path.isfile(empty)):  # a folder other machines do not see
            cache_text(scan.uncached, cfg.text_encoder, cfg.tokenizer, batch_size=cfg.text_encoder_batch,
                       empty_path=empty)
            scan = scan_dataset(cfg.dataset, multiple, header.cap_feat_dim)
        if main:
            emit("caching", done=total, total=total)
    check_usable(scan)
    if scan.skipped and warn is not None:
        reasons = ", ".join(f"{n} {why}" for why, n in scan.reasons().items())
        warn(f"{len(scan.skipped)} of {len(scan.skipped) + len(scan.items)} items skipped ({reasons}); first "
             f"{scan.skipped[0].name}: {scan.skipped[0].why}; --print-dataset lists them")
    return scan


def _mixed_precision(cfg: TrainConfig) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


class Trainer:
    def __init__(self, cfg: TrainConfig):
        cfg.check()
        self.cfg = cfg
        self.progress = _progress(0, 0, False)
        self.acc = make_accelerator(cfg)  # first: caching spreads over its processes
        # the dataset's files and widths first, from headers (and its text cached): before the long model load
        scan = prepare_dataset(cfg, self.acc, self._warn)
        self.loaded: LoadedModel = load_model(cfg.model, cfg.policy)
        lc = self.loaded.config
        if cfg.network == "lora":
            add_lora(self.loaded.model, target_modules(self.loaded.model, cfg.lora_blocks, cfg.lora_modules,
                                                       lc.n_layers),
                     cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_full, cfg.seed)
            self.trainable_set = trainable_report(self.loaded.model, f"lora rank {cfg.lora_rank} on blocks "
                                                  f"{cfg.lora_blocks} + {cfg.lora_full or 'nothing'} whole")
            # the whole-trained parts as they start (the model's parameters share the loaded tensors' memory):
            # the LoRA file stores their change
            self.start_values = {official: p.detach().clone() for n, p in self.loaded.model.named_parameters()
                                 if p.requires_grad and ".lora_" not in n
                                 for official in [n.removeprefix("trunk.")]}
        else:
            self.trainable_set = policy_report(self.loaded)
        store_frozen(self.loaded.model, FROZEN_DTYPES[cfg.frozen_dtype])
        self.data = TrainData(scan, side_multiple(lc.patch_size, lc.head_variant), cfg.max_pixels, lc.cap_feat_dim)
        self.global_batch = cfg.batch_size * self.acc.num_processes
        self.data.epoch_batches(0, cfg.seed, self.global_batch)  # fail now, not at step 1, if no batch fits
        model = self.loaded.model
        if cfg.gradient_checkpointing:
            model.trunk.enable_gradient_checkpointing()
        self.names = official_names(model)
        self.sharded = fsdp_requested()
        if self.sharded:  # FSDP2 on the blocks; the optimizer then sees each process's shards
            model.to(self.acc.device)
            shard_model(model, fsdp_units(model))
        trained = [(self.names[n], p) for n, p in model.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(param_groups(trained, cfg.lr, cfg.lr_new), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay)
        # each group's rate after warm-up, from this run's config (a resumed optimizer's saved rates do not count)
        self.group_lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.sharded:
            self.model = model
        else:
            self.model, self.optimizer = self.acc.prepare(model, self.optimizer)
        self.grid = sigma_grid(cfg)
        self.ema = ({self.names[n]: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
                    if cfg.ema_decay else None)
        self.empty_cap = self._empty_conditioning(empty_conditioning_path(cfg)) if cfg.caption_dropout else None
        self.step, self.epoch, self.batch_pos = 0, 0, 0
        self.history: list[tuple[int, float]] = []
        self.begun = False

    def _empty_conditioning(self, path: str) -> torch.Tensor:
        cap, width = load_conditioning(path), self.loaded.config.cap_feat_dim
        if cap.ndim != 2 or cap.shape[1] != width:
            raise ValueError(f"empty_conditioning {path} is {list(cap.shape)}, the model takes "
                             f"[tokens, {width}]: write the empty prompt's conditioning with the model's own text "
                             "encoder (L2P Dataset Writer, prompt \"\")")
        return cap

    def _warn(self, message: str) -> None:
        """A stderr line that does not break the progress bar (stdout carries only the JSON events)."""
        write = getattr(self.progress, "write", None)
        (write or print)(f"warning: {message}", file=sys.stderr)

    def _emit(self, event: str, **fields: Any) -> None:
        if self.acc.is_main_process:
            emit(event, **fields)

    # ------------------------------------------------------------------------------------------ state
    def _trainable(self) -> dict[str, torch.Tensor]:
        """The trained weights as this process holds them (its shards under FSDP)."""
        model = self.acc.unwrap_model(self.model)
        return {self.names[n]: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def _whole(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``tensors`` gathered whole (a collective under FSDP: every process calls it)."""
        return {k: full(v) for k, v in tensors.items()}

    def _param_names(self) -> dict[torch.nn.Parameter, str]:
        model = self.acc.unwrap_model(self.model)
        return {p: self.names[n] for n, p in model.named_parameters() if p.requires_grad}

    def save(self) -> str | None:
        path = None
        trainable = self._whole(self._trainable())  # whole tensors: a checkpoint does not depend on the sharding
        opt_state = optimizer_state(self.optimizer, self._param_names(), full)
        ema = self._whole(self.ema) if self.ema is not None else None
        if self.acc.is_main_process:
            state = {"step": self.step, "epoch": self.epoch, "batch_pos": self.batch_pos,
                     "world_size": self.acc.num_processes, "config": dataclasses.asdict(self.cfg),
                     "history": self.history}
            path = save_checkpoint(self.cfg.output_dir, self.step, trainable, opt_state, state, ema,
                                   self.cfg.checkpoints_total_limit)
            self._emit("checkpoint", step=self.step, path=path)
        self.acc.wait_for_everyone()
        return path

    def resume(self) -> None:
        path = resolve_resume(self.cfg.output_dir, self.cfg.resume)
        if path is None:
            return
        ckpt = load_checkpoint(path)
        st = ckpt["state"]
        saved_batch = st["world_size"] * st["config"]["batch_size"]
        if saved_batch != self.global_batch:
            raise ValueError(f"{path} was trained with a global batch of {saved_batch}, this run has "
                             f"{self.global_batch}: keep batch_size x processes the same to resume")
        model = self.acc.unwrap_model(self.model)
        by_name = {self.names[n]: p for n, p in model.named_parameters() if p.requires_grad}
        with torch.no_grad():
            for name, value in ckpt["trainable"].items():
                by_name[name].copy_(shard_like(value, by_name[name]))
        load_optimizer_state(self.optimizer, by_name, *ckpt["optimizer"], place=lambda v, p: shard_like(v, p).clone())
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema = {k: shard_like(v, by_name[k]).clone() for k, v in ckpt["ema"].items()}
        restore_rng(ckpt)
        self.step, self.epoch, self.batch_pos = st["step"], st["epoch"], st["batch_pos"]
        self.history = [tuple(h) for h in st.get("history", [])]
        self._emit("resumed", step=self.step, path=path)

    # ------------------------------------------------------------------------------------------- loop
    def _next_batch(self) -> tuple[list[int], list[int]]:
        batches = self.data.epoch_batches(self.epoch, self.cfg.seed, self.global_batch, self.cfg.shuffle)
        if self.batch_pos >= len(batches):
            self.epoch, self.batch_pos = self.epoch + 1, 0
            batches = self.data.epoch_batches(self.epoch, self.cfg.seed, self.global_batch, self.cfg.shuffle)
        batch = batches[self.batch_pos]
        self.batch_pos += 1
        r, bs = self.acc.process_index, self.cfg.batch_size
        return batch[r * bs:(r + 1) * bs], list(range(r * bs, (r + 1) * bs))

    def _micro_step(self, sync: bool, micro: int) -> float:
        positions, slots = self._next_batch()
        items = [self.data.load_usable(p, self._warn) for p in positions]
        x0 = torch.stack([i[0] for i in items]).to(self.acc.device)
        slot_ids = [s + micro * self.global_batch for s in slots]
        caps = [self._caption(i[1], slot).to(self.acc.device) for i, slot in zip(items, slot_ids, strict=True)]
        xt, sigma, target = noisy_batch(self.cfg, x0.cpu(), [i[2] for i in items], self.step, slot_ids, self.grid)
        xt, sigma, target = xt.to(self.acc.device), sigma.to(self.acc.device), target.to(self.acc.device)
        ctx = self.acc.no_sync(self.model) if not sync else contextlib.nullcontext()
        with ctx, self.acc.autocast():
            pred = self.model(xt, sigma, caps)
            loss = torch.nn.functional.mse_loss(pred.float(), target.float())
            self.acc.backward(loss / self.cfg.gradient_accumulation_steps)
        return float(loss.detach())

    def _caption(self, cap: torch.Tensor, slot: int) -> torch.Tensor:
        """The item's features, or the empty prompt's for a ``caption_dropout`` share."""
        if self.empty_cap is not None and drops_caption(self.cfg.seed, self.step, slot, self.cfg.caption_dropout):
            return self.empty_cap
        return cap

    def _warmup(self) -> float:
        """The learning rates' share at this step: rising linearly over ``warmup_steps``, then 1."""
        if self.cfg.warmup_steps and self.step < self.cfg.warmup_steps:
            return (self.step + 1) / self.cfg.warmup_steps
        return 1.0

    def _lr(self) -> float:
        return self.cfg.lr * self._warmup()

    def begin(self) -> None:
        """The run folder, its config.toml and the resume: refused with a ValueError before step 1."""
        if self.begun:
            return
        cfg = self.cfg
        try:
            os.makedirs(cfg.output_dir, exist_ok=True)
            if self.acc.is_main_process:
                with open(os.path.join(cfg.output_dir, "config.toml"), "w", encoding="utf-8") as f:
                    f.write(to_toml(cfg))
        except OSError as e:
            raise ValueError(f"cannot write to output_dir {cfg.output_dir} ({e.strerror or e}): pick a writable "
                             "folder (--output-dir DIR)") from None
        self.resume()
        self.begun = True

    def train(self) -> str:
        """The run (``begin`` first if not yet done); a dataset that breaks beyond use mid-run raises
        ``DatasetError``, an item that fails to load is skipped (``training/data.py``)."""
        self.begin()
        try:
            return self._train()
        finally:
            self.progress.close()  # the bar ends its line, so what follows on stderr starts on its own

    def _train(self) -> str:
        cfg = self.cfg
        stop = StopFlag()
        self._emit("start", step=self.step, steps=cfg.steps, processes=self.acc.num_processes,
             global_batch=self.global_batch, policy=self.trainable_set, items=len(self.data.examples),
                   sharding="fsdp" if self.sharded else "ddp" if self.acc.num_processes > 1 else "none")
        self.progress = progress = _progress(cfg.steps, self.step, self.acc.is_main_process)
        window, t0, done_at_t0 = [], time.monotonic(), self.step
        while self.step < cfg.steps:
            for group, lr in zip(self.optimizer.param_groups, self.group_lrs, strict=True):
                group["lr"] = lr * self._warmup()
            losses = [self._micro_step(m == cfg.gradient_accumulation_steps - 1, m)
                      for m in range(cfg.gradient_accumulation_steps)]
            if cfg.max_grad_norm:
                clip = torch.nn.utils.clip_grad_norm_ if self.sharded else self.acc.clip_grad_norm_
                clip([p for p in self.model.parameters() if p.requires_grad], cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self._update_ema()
            self.step += 1
            loss = float(self.acc.reduce(torch.tensor(sum(losses) / len(losses), device=self.acc.device),
                                         reduction="mean"))
            window.append(loss)
            self.history.append((self.step, loss))
            progress.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                secs = max(time.monotonic() - t0, 1e-9)
                self._emit("log", step=self.step, steps=cfg.steps, loss=sum(window) / len(window), lr=self._lr(),
                     samples_per_s=(self.step - done_at_t0) * self.global_batch * cfg.gradient_accumulation_steps
                     / secs, memory_mb=_memory_mb(), epoch=self.epoch)
                window = []
            if cfg.validate_every and self.step % cfg.validate_every == 0:
                self.validate()
            stopping = self._agree(stop.requested)
            if stopping or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
                self.save()
            if stopping:
                progress.close()
                self._emit("stopped", step=self.step)
                return ""
        progress.close()
        if not any(s == self.step for s, _ in checkpoints(cfg.output_dir)):
            self.save()
        skipped = self._skipped()
        path, lora = self.export()
        if self.acc.is_main_process:
            self._loss_plot()
            with open(os.path.join(cfg.output_dir, DONE), "w", encoding="utf-8") as f:
                json.dump({"step": self.step, "export": path, "lora": lora, "skipped": skipped}, f)
            self._emit("done", step=self.step, export=path, lora=lora, skipped=skipped)
        return path

    def _skipped(self) -> int:
        """How many items failed to load and were left out, in all processes together (each loads its own)."""
        from accelerate.utils import gather_object

        return len(set(gather_object(sorted(self.data.skipped))))

    def _agree(self, flag: bool) -> bool:
        """Every process stops at the same step when any of them was asked to."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.acc.device)
        return bool(self.acc.reduce(t, reduction="sum").item() > 0)

    def _update_ema(self) -> None:
        if self.ema is None:
            return
        decay = ema_decay_at(self.cfg.ema_decay, self.step)
        with torch.no_grad():
            for name, value in self._trainable().items():
                self.ema[name].mul_(decay).add_(value.to(self.ema[name].dtype), alpha=1 - decay)

    # ---------------------------------------------------------------------------------------- outputs
    @torch.no_grad()
    def validate(self) -> list[str]:
        """Images from the first dataset items' conditioning and seeds, with the official Euler sampler (on the
        main process; under FSDP every process runs the model, whose forward gathers the shards)."""
        main = self.acc.is_main_process
        if not main and not self.sharded:
            self.acc.wait_for_everyone()
            return []
        from PIL import Image

        model = self.acc.unwrap_model(self.model).train(False)
        folder = os.path.join(self.cfg.output_dir, "validation")
        os.makedirs(folder, exist_ok=True)
        paths = []
        sigmas = sampling_sigmas(self.cfg.validation_steps, self.cfg.shift)
        for k in range(min(self.cfg.validation_items, len(self.data.examples))):
            x0, cap, seed = self.data.load_usable(k, self._warn)
            noise = torch.randn((1, *x0.shape), generator=item_generator(seed, 1)).to(self.acc.device)
            x = euler_sample(lambda x, s, cap=cap: model(x, s, [cap.to(x.device)]), noise, sigmas)
            img = ((x[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
            path = os.path.join(folder, f"step-{self.step:06d}-{k}.png")
            if main:
                Image.fromarray(img).save(path)
            paths.append(path)
        model.train()
        self._emit("validation", step=self.step, images=paths)
        self.acc.wait_for_everyone()
        return paths

    def export(self) -> tuple[str, str]:
        """The full model (the checkpoint's tensors with the trained ones, EMA if on) as an L2P checkpoint, and
        with ``network = lora`` the LoRA file beside it: (model path, LoRA path or "")."""
        trained = self._whole(self.ema if self.ema is not None else self._trainable())
        if not self.acc.is_main_process:
            self.acc.wait_for_everyone()
            return "", ""
        cfg, base = self.cfg, self.loaded.official
        fields = {"policy": self.loaded.policy, "policy_report": self.trainable_set, "steps": self.step,
                  "layout": OWN, "train_config": to_toml(cfg), "pack_version": OWN, "ema": cfg.ema_decay}
        path = cfg.export_path or os.path.join(cfg.output_dir, f"{cfg.export_name}.safetensors")
        lora_path = ""
        if cfg.network == "lora":
            full = merged(trained, base, cfg.lora_alpha)
            lora_path = cfg.lora_path or os.path.splitext(path)[0] + "-lora.safetensors"
            meta = export_metadata(COMFY, {**fields, "network": "lora", "lora_rank": cfg.lora_rank,
                                           "lora_alpha": cfg.lora_alpha}, inherited=self.loaded.metadata)
            save_safetensors_atomic(lora_file(trained, {**base, **self.start_values}, cfg.lora_alpha), lora_path,
                                    metadata=meta)
        else:
            full = dict(base)
            full.update({k: v.detach().cpu().to(full[k].dtype) for k, v in trained.items()})
        plan_export(full, cfg.export_layout, self.loaded.config.patch_size, fields,
                    inherited=self.loaded.metadata).write(path)
        self.acc.wait_for_everyone()
        return path, lora_path

    def _loss_plot(self) -> None:
        if not self.history:
            return
        from .plots import line_chart

        line_chart(os.path.join(self.cfg.output_dir, "loss.png"), {"train loss": list(self.history)},
                   "L2P training loss", "step", "flow-matching loss")


def _memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return math.nan


def _progress(total: int, initial: int, main: bool):
    if main:
        try:
            from tqdm import tqdm

            return tqdm(total=total, initial=initial, unit="step", desc="training", file=sys.stderr)
        except ImportError:
            pass

    class _Quiet:
        def update(self, n: int) -> None: ...

        def close(self) -> None: ...

        def write(self, s: str, file=None) -> None:
            print(s, file=file or sys.stderr, flush=True)

    return _Quiet()

