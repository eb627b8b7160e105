"""The one training configuration: a dataclass read from TOML, with command-line overrides.

    python training/launch.py --config run.toml [--steps 200 --lr 1e-4 ...] [--print-config]

Every field is also a flag (``--batch-size`` for ``batch_size``); flags win over the file. Checked before
any work starts, each problem as one line saying what to change.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class TrainConfig:
    # what to train and on what
    model: str = ""  # an L2P checkpoint (python -m l2p.convert / L2PSaveCheckpoint output), either layout
    dataset: str = ""  # folder with metadata.jsonl + NNNNN.png (+ NNNNN.cond.safetensors)
    output_dir: str = "l2p-train"
    policy: str = ""  # trainable set: paper, official, custom:<ranges>; empty = the checkpoint's l2p.policy
    # the objective (the source model's flow matching, Z-Image conventions)
    shift: float = 3.0
    num_train_timesteps: int = 500  # sigma is drawn uniformly from this many points of the shifted grid
    fixed_noise: bool = True  # noise drawn from each item's seed, as the official code does
    # share of items trained on the empty prompt instead of their own, so that CFG's unconditional branch (the
    # empty prompt) is trained too: the official recipe has none (0); a new or small model needs it for CFG
    caption_dropout: float = 0.0
    empty_conditioning: str = ""  # the empty prompt's features, a .cond.safetensors file (needed for dropout)
    # optimisation (official recipe: AdamW, lr 5e-5, weight decay 0.01, batch 1 per GPU)
    steps: int = 1000
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    batch_size: int = 1  # per process
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    ema_decay: float = 0.0  # 0 = no EMA; e.g. 0.999 keeps an EMA of the trainable weights
    mixed_precision: str = "auto"  # auto (bf16 where supported), bf16, fp16, no
    gradient_checkpointing: bool = False
    # data
    max_pixels: int = 1024 * 1024
    shuffle: bool = True
    # bookkeeping
    seed: int = 0
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 3  # 0 = keep all
    resume: str = ""  # "", "latest" or a checkpoint-<step> folder
    log_every: int = 10
    validate_every: int = 0  # 0 = never; validation uses the first items' conditioning and seeds
    validation_items: int = 2
    validation_steps: int = 8
    export_name: str = "l2p-trained"  # written as <output_dir>/<export_name>.safetensors ...
    export_path: str = ""  # ... unless a full path is given here (L2PTrain exports into models/l2p)
    export_layout: str = "official"  # official or comfy
    extra: dict[str, Any] = field(default_factory=dict)  # kept in the export metadata, not interpreted

    def check(self) -> None:
        """One-line errors for what can be checked before any work starts."""
        if not self.model:
            raise ValueError("model is not set: give the L2P checkpoint to train (--model FILE)")
        if not os.path.isfile(self.model):
            raise ValueError(f"model {self.model} does not exist: convert one with python -m l2p.convert")
        if not self.dataset:
            raise ValueError("dataset is not set: give the dataset folder (--dataset DIR)")
        if not os.path.isdir(self.dataset):
            raise ValueError(f"dataset folder {self.dataset} does not exist: build one with the L2P dataset nodes "
                             "or python -m dataset.make")
        for name in ("steps", "batch_size", "gradient_accumulation_steps", "num_train_timesteps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is {getattr(self, name)}: it must be at least 1")
        if self.lr <= 0 or self.shift <= 0:
            raise ValueError(f"lr {self.lr} and shift {self.shift} must be positive")
        if self.mixed_precision not in ("auto", "bf16", "fp16", "no"):
            raise ValueError(f"mixed_precision {self.mixed_precision!r}: use auto, bf16, fp16 or no")
        if self.export_layout not in ("official", "comfy"):
            raise ValueError(f"export_layout {self.export_layout!r}: use official or comfy")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay {self.ema_decay} must be in [0, 1)")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout {self.caption_dropout} must be in [0, 1)")
        if self.caption_dropout and not os.path.isfile(self.empty_conditioning):
            raise ValueError("caption_dropout needs the empty prompt's conditioning: set empty_conditioning to a "
                             ".cond.safetensors file of the prompt \"\" (e.g. from the L2P Dataset Writer)")


def _flag_type(f: dataclasses.Field):
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool, "str": str}.get(
        str(f.type), str)
    if kind is bool:
        return lambda s: s.lower() in ("1", "true", "yes", "on")
    return kind


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    ap = argparse.ArgumentParser(prog="training/launch.py", description="Train an L2P pixel model.")
    ap.add_argument("--config", help="TOML file with TrainConfig fields")
    ap.add_argument("--print-config", action="store_true", help="print the merged config as TOML and exit")
    for f in dataclasses.fields(TrainConfig):
        if f.name != "extra":
            ap.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_flag_type(f), default=None)
    args = ap.parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, "rb") as fh:
                values = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"cannot read config {args.config} ({e}): fix the TOML") from None
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config key {unknown[0]!r} in {args.config}: known keys are "
                             f"{', '.join(sorted(known))}")
    for f in dataclasses.fields(TrainConfig):
        if getattr(args, f.name, None) is not None:
            values[f.name] = getattr(args, f.name)
    return TrainConfig(**values), args


def to_toml(cfg: TrainConfig) -> str:
    lines = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "extra":
            continue
        if isinstance(value, bool):
            lines.append(f"{f.name} = {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{f.name} = {value!r}")
        else:
            lines.append(f"{f.name} = {_toml_str(str(value))}")
    if cfg.extra:
        lines.append("\n[extra]")
        lines += [f"{k} = {_toml_str(str(v))}" for k, v in cfg.extra.items()]
    return "\n".join(lines) + "\n"


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
