"""Training checkpoints without pickle: ``checkpoint-<step>/`` holds safetensors + JSON, a marker last.

Contents: ``trainable.safetensors`` (trainable weights), ``ema.safetensors`` (when EMA is on),
``optimizer.safetensors`` + ``optimizer.json`` (AdamW moments and step counts, tensors by parameter name),
``rng.safetensors`` + ``state.json`` (torch/python/numpy RNG states, step, data position, config). The
folder is written as ``.tmp-checkpoint-<step>`` and renamed; ``COMPLETE`` is written last, so ``latest``
skips any folder a crash left unfinished.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

MARKER = "COMPLETE"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: str, complete_only: bool = True) -> list[tuple[int, str]]:
    """(step, path) of checkpoints in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        m = _NAME.match(name)
        path = os.path.join(output_dir, name)
        if m and (not complete_only or os.path.isfile(os.path.join(path, MARKER))):
            found.append((int(m.group(1)), path))
    return sorted(found)


def resolve_resume(output_dir: str, resume: str) -> str | None:
    if not resume:
        return None
    if resume == "latest":
        found = checkpoints(output_dir)
        return found[-1][1] if found else None
    if not os.path.isfile(os.path.join(resume, MARKER)):
        raise ValueError(f"resume {resume} is not a complete checkpoint (no {MARKER} marker): use latest or another "
                         "checkpoint-<step> folder")
    return resume


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    np_state = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64))}
    meta = {"python": _jsonable(random.getstate()), "numpy": [np_state[0], int(np_state[2]), int(np_state[3]),
                                                               float(np_state[4])]}
    return tensors, meta


def _set_rng_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    random.setstate(_tupled(meta["python"]))
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))


def _jsonable(x: Any) -> Any:
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tupled(x: Any) -> Any:
    return tuple(_tupled(v) for v in x) if isinstance(x, list) else x


def optimizer_state(opt: torch.optim.Optimizer, names: Mapping[torch.nn.Parameter, str],
                    gather: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> tuple[dict, dict]:
    """AdamW's state keyed by parameter name: tensors for safetensors, the rest for JSON. ``gather`` makes a
    sharded moment whole (training/sharding.py; a collective, so every process calls this in the same order)."""
    tensors, meta = {}, {"param_groups": [], "scalars": {}}
    for group in opt.param_groups:
        meta["param_groups"].append({k: v for k, v in group.items() if k != "params"}
                                    | {"params": [names[p] for p in group["params"]]})
    for p, state in opt.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                tensors[f"{names[p]}::{key}"] = gather(value.detach()).contiguous()
            else:
                meta["scalars"][f"{names[p]}::{key}"] = float(value)
    return tensors, meta


def load_optimizer_state(opt: torch.optim.Optimizer, by_name: Mapping[str, torch.nn.Parameter], tensors: Mapping,
                         meta: Mapping, place: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                         ) -> None:
    """The saved state back into ``opt``; ``place(value, param)`` puts a whole moment where its parameter lives
    (its shard under FSDP); default: a copy."""
    place = place or (lambda value, _: value.clone())
    if len(opt.param_groups) != len(meta["param_groups"]):
        raise ValueError(f"the checkpoint's optimizer has {len(meta['param_groups'])} parameter group(s), this "
                         f"run makes {len(opt.param_groups)}: resume with the lr_new it was started with (0 or not)")
    for group, saved in zip(opt.param_groups, meta["param_groups"], strict=True):
        group.update({k: v for k, v in saved.items() if k != "params"})
    for key, value in tensors.items():
        name, field = key.split("::")
        opt.state[by_name[name]][field] = place(value, by_name[name])
    for key, value in meta["scalars"].items():
        name, field = key.split("::")
        opt.state[by_name[name]][field] = torch.tensor(value)


def save_checkpoint(output_dir: str, step: int, trainable: Mapping[str, torch.Tensor], opt_state: tuple[dict, dict],
                    state: dict[str, Any], ema: Mapping[str, torch.Tensor] | None = None, limit: int = 0) -> str:
    final = os.path.join(output_dir, f"checkpoint-{step}")
    tmp = os.path.join(output_dir, f".tmp-checkpoint-{step}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file({k: v.detach().contiguous() for k, v in trainable.items()}, os.path.join(tmp, "trainable.safetensors"))
    if ema is not None:
        save_file({k: v.detach().contiguous() for k, v in ema.items()}, os.path.join(tmp, "ema.safetensors"))
    save_file(opt_state[0], os.path.join(tmp, "optimizer.safetensors"))
    rng_tensors, rng_meta = _rng_state()
    save_file(rng_tensors, os.path.join(tmp, "rng.safetensors"))
    with open(os.path.join(tmp, "optimizer.json"), "w", encoding="utf-8") as f:
        json.dump(opt_state[1], f)
    with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as f:
        json.dump({**state, "rng": rng_meta}, f, indent=1)
    shutil.rmtree(final, ignore_errors=True)  # an unfinished folder of the same step from a crash
    os.replace(tmp, final)
    with open(os.path.join(final, MARKER), "w", encoding="utf-8") as f:
        f.write(f"{step}\n")
    if limit:
        for _, old in checkpoints(output_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str) -> dict[str, Any]:
    with open(os.path.join(path, "state.json"), encoding="utf-8") as f:
        state = json.load(f)
    with open(os.path.join(path, "optimizer.json"), encoding="utf-8") as f:
        opt_meta = json.load(f)
    ema_path = os.path.join(path, "ema.safetensors")
    return {
        "state": state,
        "trainable": load_file(os.path.join(path, "trainable.safetensors")),
        "ema": load_file(ema_path) if os.path.exists(ema_path) else None,
        "optimizer": (load_file(os.path.join(path, "optimizer.safetensors")), opt_meta),
        "rng": (load_file(os.path.join(path, "rng.safetensors")), state["rng"]),
    }


def restore_rng(ckpt: Mapping[str, Any]) -> None:
    _set_rng_state(*ckpt["rng"])
