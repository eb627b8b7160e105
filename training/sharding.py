"""FSDP for the trainer: torch's ``fully_shard`` (FSDP2) over the model's blocks, asked for by an accelerate config.

``accelerate launch --config_file fsdp.yaml`` (``distributed_type: FSDP``) sets ``ACCELERATE_USE_FSDP`` for every
process. accelerate itself shards only CUDA models, so the trainer shards the model here, on any device (gloo
on CPU, NCCL on GPUs): every main and refiner block, the Detailer Head and the rest (embedders) become one
FSDP unit each, full sharding (``reshard_after_forward``). Frozen and trainable weights are sharded alike;
frozen ones get no gradient and no optimizer state, so the trainable set's weights, gradients and AdamW
moments are all split across the processes. The model is then not handed to ``accelerate.prepare`` (which
would wrap it in DDP as well).

Checkpoints stay world-size independent: weights, EMA and optimizer moments are gathered to full tensors to
be saved (``full``, on every process: it is a collective) and cut back to each process's shard when a run
resumes (``shard_like``), so a run can resume under FSDP, DDP or one process alike.
"""

from __future__ import annotations

import os

import torch

FSDP_ENV = "ACCELERATE_USE_FSDP"


def fsdp_requested() -> bool:
    """Whether this launch asked for FSDP (an accelerate config with ``distributed_type: FSDP``)."""
    return os.environ.get(FSDP_ENV, "").strip().lower() in ("1", "true", "yes")


def shard_model(model: torch.nn.Module, units: list[torch.nn.Module]) -> None:
    """``fully_shard`` each of ``units`` (blocks, the head), then the model itself (what is left: embedders)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("FSDP needs a distributed launch: accelerate launch --config_file <an FSDP config> ...")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    mesh = init_device_mesh(device, (dist.get_world_size(),))
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, reshard_after_forward=True)


def is_sharded(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor"


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a shard (a collective: call it on every process), or ``t`` itself."""
    return t.full_tensor() if is_sharded(t) else t


def shard_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` (a whole tensor every process holds) cut to ``like``'s shard; ``value`` when ``like`` is whole."""
    if not is_sharded(like):
        return value.to(like.device)
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(like.device, like.dtype), like.device_mesh, like.placements,
                             src_data_rank=None)
