"""Cache the text conditioning a training folder lacks, before training (as musubi-tuner and SimpleTuner do).

Each caption is encoded by the model's own text encoder exactly as ComfyUI's CLIPTextEncode encodes it for
Z-Image (l2p/text_encoding.py), and its features are written atomically as ``<image stem>.cond.safetensors``
beside the image (the format the L2P Dataset Writer writes). What is cached already is never encoded again,
so a stopped pass resumes. In a distributed launch every process encodes its share (every n-th item) and
all wait for each other before training; the encoder is freed before the diffusion model is loaded.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Sequence

import torch

from dataset.folder import conditioning_file_bytes
from l2p.format.atomic import atomic_file
from l2p.text_encoding import Qwen3TextEncoder, find_tokenizer

from .items import Item

EMPTY_CONDITIONING = "empty.cond.safetensors"  # the empty prompt's features, for caption dropout (in output_dir)

Progress = Callable[[int], None]  # called with how many captions this process has just cached


def write_conditioning(path: str, features: torch.Tensor) -> None:
    with atomic_file(path) as f:
        f.write(conditioning_file_bytes(features))


def encoder_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def cache_text(items: Sequence[Item], text_encoder: str, tokenizer: str = "", rank: int = 0, world: int = 1,
               batch_size: int = 8, empty_path: str = "", progress: Progress | None = None) -> int:
    """Encode this process's share of ``items`` (and, on rank 0, the empty prompt into ``empty_path`` when it is
    set and missing); return how many files this process wrote. bf16 on a GPU that has it, else fp32."""
    mine = [it for k, it in enumerate(items) if k % world == rank and not os.path.isfile(it.conditioning)]
    empty = bool(empty_path) and rank == 0 and not os.path.isfile(empty_path)
    if not mine and not empty:
        return 0
    device = encoder_device()
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    encoder = Qwen3TextEncoder.from_file(text_encoder, find_tokenizer(tokenizer), device, dtype)
    written = 0
    try:
        for start in range(0, len(mine), batch_size):
            chunk = mine[start:start + batch_size]
            for it, features in zip(chunk, encoder.encode([it.caption for it in chunk], batch_size),
                                    strict=True):
                write_conditioning(it.conditioning, features)
            written += len(chunk)
            if progress is not None:
                progress(len(chunk))
        if empty:
            write_conditioning(empty_path, next(encoder.encode([""])))
            written += 1
    finally:
        encoder.close()
        del encoder
        gc.collect()
    return written
