"""The trainer's one contract with its readers: the config schema and the JSON event lines.

The trainer (training/), the L2PTrain node (nodes/train.py), the benchmark (bench/replicate/) and, through the
node's ``l2p.train`` websocket events, the frontend (js/l2p.js) all read this one definition, so a renamed
field fails in tests rather than silently in a panel. Standard library only and no imports of the pack: the
node imports it relatively inside ComfyUI, where torch-heavy training modules must not load.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any


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


def to_toml(cfg: TrainConfig) -> str:
    """Every field, so a run's config.toml (and an export's l2p.train_config) says exactly what ran."""
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
    # JSON's escapes (quote, backslash, control characters) are TOML's; TOML also forbids a raw DEL
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def load_toml(path: str) -> dict[str, Any]:
    """A config file's values, refused in one line when unreadable or naming a key TrainConfig lacks."""
    try:  # imported here: Python 3.10 needs tomli, and only the trainer reads TOML
        import tomllib
    except ImportError:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"cannot read config {path} ({e}): fix the TOML") from None
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config key {unknown[0]!r} in {path}: known keys are {', '.join(sorted(known))}")
    return values


# Each event the trainer writes to stdout, one JSON object a line ``{"event": name, **fields}``, with its fields.
EVENTS: dict[str, tuple[str, ...]] = {
    "start": ("step", "steps", "processes", "global_batch", "policy", "items"),
    "resumed": ("step", "path"),  # a checkpoint folder
    "log": ("step", "steps", "loss", "lr", "samples_per_s", "memory_mb", "epoch"),
    "checkpoint": ("step", "path"),
    "validation": ("step", "images"),  # PNG paths
    "stopped": ("step",),  # asked to stop (SIGINT/SIGTERM): a checkpoint of this step was saved
    "done": ("step", "export"),  # the exported model's path
}
WS_EVENT = "l2p.train"  # L2PTrain re-sends each event to the frontend under this websocket name


def event_line(name: str, **fields: Any) -> str:
    """One event as its JSON line (no newline); an unknown event, or fields other than its own, are refused."""
    if name not in EVENTS:
        raise ValueError(f"unknown trainer event {name!r}: add it to training/contract.py EVENTS")
    if set(fields) != set(EVENTS[name]):
        raise ValueError(f"event {name!r} takes the fields {', '.join(EVENTS[name])}, not {', '.join(fields)}: "
                         "change training/contract.py EVENTS and its readers together")
    return json.dumps({"event": name, **fields})


def parse_event(line: str) -> dict[str, Any] | None:
    """A stdout line as its event, or None for anything else (progress bars, library chatter, other JSON)."""
    if not line.lstrip().startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and event.get("event") in EVENTS else None


def ws_payload(event: dict[str, Any], node: str, view: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """What L2PTrain sends as ``l2p.train``: the event with its node id and, for validation, the images as
    /view arguments (they live under ComfyUI's output directory)."""
    return {"node": node, **event, **({"view": view} if view is not None else {})}
