"""The trainer's one contract with its readers: the config schema and the JSON event lines.

The trainer (training/), the L2PTrain node (nodes/train.py), the benchmark (bench/replicate/) and, through the
node's ``l2p.train`` websocket events, the frontend (js/l2p.js) all read this one definition, so a renamed
field fails in tests rather than silently in a panel. Standard library only and no imports of the pack: the
node imports it relatively inside ComfyUI, where torch-heavy training modules must not load.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any


def _opt(default: Any, help: str, metavar: str = "") -> Any:
    """A field with its one-line description: ``training/launch.py --help`` shows it with the default."""
    return field(default=default, metadata={"help": help, "metavar": metavar})


# What error messages point at, named once: where models and datasets come from.
CONVERT_HOW = ("python -m l2p.convert --source SRC --out FILE, or L2P Convert (latent -> pixel) + L2P Save Checkpoint "
               "in ComfyUI")
DATASET_TOOL = ("the l2p_make_dataset workflow in ComfyUI (L2P Dataset Writer) or python -m dataset.make --server URL "
                "--prompts FILE --out DIR")
CACHE_HOW = ("set text_encoder to the model's text encoder (--text-encoder FILE, e.g. qwen_3_4b.safetensors) and the "
             "trainer caches it before training (--cache-text only caches), or write the dataset with the L2P Dataset "
             "Writer's conditioning input connected")


@dataclass
class TrainConfig:
    # what to train and on what
    model: str = _opt("", "the L2P checkpoint to train (.safetensors, official or ComfyUI layout): "
                          "python -m l2p.convert or L2P Save Checkpoint writes one", "FILE")
    dataset: str = _opt("", "training folder: this pack's dataset (L2P Dataset Writer, dataset.make), diffusers' "
                            "imagefolder (metadata.jsonl with file_name and text), or images beside .txt captions "
                            "(nested folders too)", "DIR")
    text_encoder: str = _opt("", "the text encoder that caches missing conditioning before training (the "
                                 "model's own: qwen_3_4b.safetensors for Z-Image, or any Qwen3-architecture "
                                 "file); empty = every item must have its .cond.safetensors", "FILE")
    tokenizer: str = _opt("", "Qwen's tokenizer folder for text_encoder; empty = ComfyUI's own "
                              "(comfy/text_encoders/qwen25_tokenizer of $COMFYUI_PATH or of the ComfyUI this "
                              "pack is installed in)", "DIR")
    text_encoder_batch: int = _opt(8, "captions encoded at once while caching")
    output_dir: str = _opt("l2p-train", "run folder: checkpoints, validation images, config.toml, loss.png, the "
                                        "export", "DIR")
    policy: str = _opt("", "trainable set: paper, official or custom:<block ranges> (e.g. custom:0-4,-5--1); "
                           "empty = the checkpoint's l2p.policy", "NAME")
    network: str = _opt("full", "full: train the policy's blocks whole; lora: LoRA adapters on the trunk (peft), "
                                "the lora_full parts trained whole, exported as a LoRA file and a merged model",
                        "KIND")
    lora_rank: int = _opt(16, "LoRA rank (network = lora)")
    lora_alpha: float = _opt(16.0, "LoRA alpha: the update is scaled by alpha / rank")
    lora_dropout: float = _opt(0.0, "dropout on the LoRA path")
    lora_blocks: str = _opt("all", "main blocks that get adapters: all, or ranges like 0-4,-5--1", "RANGES")
    lora_modules: str = _opt("all", "linear layers of each chosen block that get adapters: all (attention q, k, "
                                    "v, out and the three feed-forward layers), or names like "
                                    "attention.to_q,feed_forward.w2", "NAMES")
    lora_path: str = _opt("", "where the LoRA file goes (L2PTrain: models/loras); empty = beside the export as "
                              "<export>-lora.safetensors", "FILE")
    lora_full: str = _opt("local_decoder,all_x_embedder", "parts trained whole next to the adapters (official "
                          "name prefixes): the Detailer Head and the pixel embedder, which L2P must learn; "
                          "empty = adapters only", "PREFIXES")
    # the objective (the source model's flow matching, Z-Image conventions)
    shift: float = _opt(3.0, "noise shift of the training sigmas (3 at 1K)")
    num_train_timesteps: int = _opt(500, "sigma is drawn uniformly from this many points of the shifted grid")
    fixed_noise: bool = _opt(True, "noise drawn from each item's seed, as the official code does (false: from the "
                                   "step's generator)")
    caption_dropout: float = _opt(0.0, "share of items trained on the empty prompt so that CFG's unconditional "
                                       "branch is trained too: the official recipe has 0; a new or small model "
                                       "needs it for CFG (needs empty_conditioning or text_encoder)")
    empty_conditioning: str = _opt("", "the empty prompt's features, a .cond.safetensors file (for "
                                       "caption_dropout; empty = cached with text_encoder into output_dir)", "FILE")
    # optimisation (official recipe: AdamW, lr 5e-5, weight decay 0.01, batch 1 per GPU)
    steps: int = _opt(1000, "optimizer steps in total (a resumed run continues up to this step)")
    lr: float = _opt(5e-5, "AdamW learning rate (official recipe 5e-5)")
    lr_new: float = _opt(0.0, "learning rate of the weights L2P adds, the Detailer Head and the pixel embedder, "
                              "which start from nothing the source learned (0 = lr)")
    weight_decay: float = _opt(0.01, "AdamW weight decay (official recipe 0.01)")
    warmup_steps: int = _opt(0, "linear learning-rate warmup over this many steps (0 = none)")
    batch_size: int = _opt(1, "images per step per process (global batch = batch_size x processes)")
    gradient_accumulation_steps: int = _opt(1, "micro-batches summed into one optimizer step")
    max_grad_norm: float = _opt(1.0, "gradient clipping norm (0 = no clipping)")
    ema_decay: float = _opt(0.0, "0 = no EMA; e.g. 0.999 keeps an EMA of the trainable weights, which is exported "
                                 "(warmed up: decay min(this, (1 + n) / (10 + n)) at update n)")
    mixed_precision: str = _opt("auto", "auto (bf16 where supported), bf16, fp16 or no", "MODE")
    gradient_checkpointing: bool = _opt(False, "recompute the trunk's activations in the backward pass (less "
                                               "memory, slower)")
    frozen_dtype: str = _opt("fp32", "storage of the frozen weights: fp32, or bf16 (half their memory: the 6B "
                                     "model on one 24 GB GPU; needs mixed_precision bf16; the export keeps the "
                                     "checkpoint's own values)", "DTYPE")
    # data
    max_pixels: int = _opt(1024 * 1024, "images are scaled down to at most this many pixels (aspect kept), then "
                                        "bucketed by size")
    shuffle: bool = _opt(True, "shuffle each epoch's order (reproducible from seed and epoch)")
    process_group_timeout_s: int = _opt(600, "a distributed run stops with an error when a process has not "
                                             "answered for this long (a peer that died or hangs)")
    # bookkeeping
    seed: int = _opt(0, "seed of the data order, the sigmas and (without fixed_noise) the noise")
    checkpoint_every: int = _opt(500, "save checkpoint-<step>/ every N steps (0 = only at the end or on a stop)")
    checkpoints_total_limit: int = _opt(3, "keep only the newest N checkpoints (0 = keep all)")
    resume: str = _opt("", "\"\" = start fresh, latest = the newest complete checkpoint in output_dir, or a "
                           "checkpoint-<step> folder", "WHAT")
    log_every: int = _opt(10, "write a log event (loss, lr, samples/s, memory) every N steps")
    validate_every: int = _opt(0, "render validation images every N steps (0 = never); validation uses the first "
                                  "items' conditioning and seeds")
    validation_items: int = _opt(2, "how many items validation renders")
    validation_steps: int = _opt(8, "sampling steps of each validation image")
    export_name: str = _opt("l2p-trained", "the export is written as <output_dir>/<export_name>.safetensors unless "
                                           "export_path is set", "NAME")
    export_path: str = _opt("", "the export's full path instead (L2PTrain exports into models/l2p); empty = "
                                "use export_name", "FILE")
    export_layout: str = _opt("official", "official or comfy (the export's tensor names)", "LAYOUT")
    extra: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "notes (key = \"text\" lines), kept in the export metadata, not interpreted", "metavar": ""})

    def check(self) -> None:
        """One-line errors for what can be checked before any work starts (nothing is created)."""
        for f in dataclasses.fields(self):
            problem = value_problem(f, getattr(self, f.name))
            if problem:
                raise ValueError(problem)
        if not self.model:
            raise ValueError("model is not set: give the L2P checkpoint to train (--model FILE)")
        if not os.path.isfile(self.model):
            raise ValueError(f"model {self.model} does not exist: convert one with {CONVERT_HOW}")
        if not self.dataset:
            raise ValueError("dataset is not set: give the dataset folder (--dataset DIR)")
        if not os.path.isdir(self.dataset):
            raise ValueError(f"dataset folder {self.dataset} does not exist: build one with {DATASET_TOOL}")
        for name in ("steps", "batch_size", "gradient_accumulation_steps", "num_train_timesteps", "log_every",
                     "max_pixels", "validation_steps", "text_encoder_batch", "process_group_timeout_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is {getattr(self, name)}: it must be at least 1")
        for name in ("warmup_steps", "checkpoint_every", "checkpoints_total_limit", "validate_every",
                     "validation_items", "weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is {getattr(self, name)}: it must be 0 or more")
        if self.lr <= 0 or self.shift <= 0:
            raise ValueError(f"lr {self.lr} and shift {self.shift} must be positive")
        if self.mixed_precision not in ("auto", "bf16", "fp16", "no"):
            raise ValueError(f"mixed_precision {self.mixed_precision!r}: use auto, bf16, fp16 or no")
        if self.network not in ("full", "lora"):
            raise ValueError(f"network {self.network!r}: use full or lora")
        if self.lora_rank < 1 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_rank {self.lora_rank}, lora_alpha {self.lora_alpha} and lora_dropout "
                             f"{self.lora_dropout}: the rank at least 1, alpha positive, dropout in [0, 1)")
        if self.frozen_dtype not in ("fp32", "bf16"):
            raise ValueError(f"frozen_dtype {self.frozen_dtype!r}: use fp32 or bf16")
        if self.frozen_dtype == "bf16" and self.mixed_precision != "bf16":
            raise ValueError("frozen_dtype bf16 needs mixed_precision bf16 (the frozen layers then compute in bf16 "
                             "under autocast): set mixed_precision = \"bf16\"")
        if self.export_layout not in ("official", "comfy"):
            raise ValueError(f"export_layout {self.export_layout!r}: use official or comfy")
        if self.lr_new < 0:
            raise ValueError(f"lr_new {self.lr_new} must be 0 (= lr) or positive")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay {self.ema_decay} must be in [0, 1)")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout {self.caption_dropout} must be in [0, 1)")
        if self.empty_conditioning and not os.path.isfile(self.empty_conditioning):
            raise ValueError(f"empty_conditioning {self.empty_conditioning} does not exist: give the .cond.safetensors "
                             "file of the prompt \"\", or leave it empty and set text_encoder to cache it")
        if self.caption_dropout and not (self.empty_conditioning or self.text_encoder):
            raise ValueError("caption_dropout needs the empty prompt's conditioning: set text_encoder (it is cached) "
                             "or empty_conditioning to a .cond.safetensors file of the prompt \"\"")
        if self.text_encoder and not os.path.isfile(self.text_encoder):
            raise ValueError(f"text_encoder {self.text_encoder} does not exist: give the model's text encoder file "
                             "(e.g. ComfyUI's models/text_encoders/qwen_3_4b.safetensors)")
        if not self.output_dir:
            raise ValueError("output_dir is not set: give the run folder (--output-dir DIR)")
        why = unwritable(self.output_dir)
        if why:
            raise ValueError(f"output_dir {self.output_dir} cannot be written ({why}): pick a writable folder "
                             "(--output-dir DIR)")
        if self.export_path:
            why = "it is a folder" if os.path.isdir(self.export_path) else unwritable(
                os.path.dirname(os.path.abspath(self.export_path)))
            if why:
                raise ValueError(f"export_path {self.export_path} cannot be written ({why}): give a writable file "
                                 "path (--export-path FILE), or leave it empty to export into output_dir")


_KINDS: dict[str, tuple[type, str]] = {"str": (str, "text in quotes"), "int": (int, "a whole number"),
                                       "float": (float, "a number"), "bool": (bool, "true or false")}


def value_problem(f: dataclasses.Field, value: Any) -> str | None:
    """Why ``value`` cannot be field ``f``'s (a type TOML allows but the field does not), or None."""
    name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    if f.name == "extra":
        return None if isinstance(value, dict) else f"extra = {_shown(value)} must be a [extra] table"
    kind, words = _KINDS.get(name, (object, ""))
    if isinstance(value, bool) and kind is not bool or not isinstance(value, (int, float) if kind is float else kind):
        return f"{f.name} = {_shown(value)} must be {words} (the default is {f.name} = {_shown(f.default)})"
    if kind is float and not math.isfinite(value):
        return f"{f.name} = {_shown(value)} must be a finite number (the default is {f.name} = {_shown(f.default)})"
    return None


def unwritable(folder: str) -> str | None:
    """Why a folder cannot be created or written at ``folder``, or None; looks only, creates nothing."""
    p = os.path.abspath(folder)
    while not os.path.lexists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    if not os.path.isdir(p):
        return f"{p} is a file, not a folder"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable"
    return None


def help_text(f: dataclasses.Field) -> str:
    """A field's --help line: its description and its default as it would be written in TOML."""
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return f"{f.metadata['help']} (default: {_shown(default)})"


def to_toml(cfg: TrainConfig) -> str:
    """Every field, so a run's config.toml (and an export's l2p.train_config) says exactly what ran."""
    lines = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "extra":
            continue
        lines.append(f"{f.name} = {_shown(value if isinstance(value, (bool, int, float)) else str(value))}")
    if cfg.extra:
        lines.append("\n[extra]")
        lines += [f"{k} = {_toml_str(str(v))}" for k, v in cfg.extra.items()]
    return "\n".join(lines) + "\n"


def _shown(value: Any) -> str:
    """A value as TOML writes it (a table as {})."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    return json.dumps(value, default=str) if isinstance(value, (dict, list)) else _toml_str(str(value))


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
    for f in dataclasses.fields(TrainConfig):
        problem = value_problem(f, values[f.name]) if f.name in values else None
        if problem:
            raise ValueError(f"{path}: {problem}")
    return values


# A refusal (bad config or dataset, exit code 2) is one stderr line with this prefix: L2PTrain shows it.
ERROR_PREFIX = "error: "


def error_line(line: str) -> str | None:
    """The trainer's one-line refusal in a stderr line (without the prefix), or None for any other line."""
    line = line.rstrip("\r\n").rsplit("\r", 1)[-1]  # after a progress bar's carriage returns
    return line[len(ERROR_PREFIX):] if line.startswith(ERROR_PREFIX) else None


# Each event the trainer writes to stdout, one JSON object a line ``{"event": name, **fields}``, with its fields.
EVENTS: dict[str, tuple[str, ...]] = {
    "dataset": ("layout", "items", "skipped", "reasons", "uncached"),  # the folder as scanned; reasons: why -> n
    "caching": ("done", "total"),  # text conditioning cached so far (all processes together)
    "start": ("step", "steps", "processes", "global_batch", "policy", "items", "sharding"),  # ddp, fsdp or none
    "resumed": ("step", "path"),  # a checkpoint folder
    "log": ("step", "steps", "loss", "lr", "samples_per_s", "memory_mb", "epoch"),
    "checkpoint": ("step", "path"),
    "validation": ("step", "images"),  # PNG paths
    "stopped": ("step",),  # asked to stop (SIGINT/SIGTERM): a checkpoint of this step was saved
    "done": ("step", "export", "lora", "skipped"),  # exported model, LoRA file ("" unless network = lora); items
    # left out as unreadable mid-run
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
