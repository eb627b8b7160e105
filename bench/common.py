"""Helpers the benchmark scripts share: a stage cache (safetensors, no pickle) and small summaries."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F

from l2p.format.tensor_io import save_safetensors_atomic

Tensor = torch.Tensor


class Cache:
    """``<name>.safetensors`` per stage: tensors plus ``bench.key`` and ``bench.info`` (JSON) metadata."""

    def __init__(self, folder: Path, fresh: bool, shared: tuple[Path, ...] = ()):
        """``shared``: other folders whose entries are read (never written) when the key matches."""
        self.folder, self.fresh, self.shared = folder, fresh, shared

    def load(self, name: str, key: str) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
        if self.fresh:
            return None
        for folder in (self.folder, *self.shared):
            path = folder / f"{name}.safetensors"
            if not path.is_file():
                continue
            with safetensors.safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            if meta.get("bench.key") == key:
                return safetensors.torch.load_file(str(path)), json.loads(meta["bench.info"])
        return None

    def save(self, name: str, key: str, sd: dict[str, Tensor], info: dict[str, Any]) -> None:
        save_safetensors_atomic(sd, str(self.folder / f"{name}.safetensors"),
                                metadata={"bench.key": key, "bench.info": json.dumps(info)})


def summary(losses: list[float], parts: int = 6) -> str:
    """``a -> b -> ...``: mean training loss over ``parts`` equal windows."""
    size = max(1, math.ceil(len(losses) / parts))
    return " → ".join(f"{sum(w) / len(w):.3f}" for w in (losses[i:i + size] for i in range(0, len(losses), size)))


def psnr(images: Tensor, reference: Tensor) -> float:
    return 10 * math.log10(4.0 / F.mse_loss(images, reference).item())  # peak-to-peak 2 in [-1, 1]


class Stages:
    """Runs each named stage once per cache key and records its seconds (from when it ran, if cached)."""

    def __init__(self, cache: Cache):
        self.cache = cache
        self.seconds: dict[str, float] = {}
        self.cached: list[str] = []

    def get(self, name: str, key: str, make, group: str | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """``make() -> (tensors, info)``; the result is cached under ``name`` with ``info["seconds"]`` added."""
        import time

        hit = self.cache.load(name, key)
        if hit is not None:
            print(f"[{name}] cached ({hit[1]['seconds']:.0f} s when run)", flush=True)
            self.cached.append(name)
        else:
            print(f"[{name}] running ...", flush=True)
            start = time.perf_counter()
            sd, info = make()
            info["seconds"] = time.perf_counter() - start
            self.cache.save(name, key, sd, info)
            hit = sd, info
            print(f"[{name}] done in {info['seconds']:.0f} s", flush=True)
        group = group or name
        self.seconds[group] = self.seconds.get(group, 0.0) + hit[1]["seconds"]
        return hit


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a rate ``hits / n``: honest near 0 and 1, unlike +-2 SE."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_bootstrap(a, b, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired items (the same prompts and seeds) and its 95% percentile bootstrap
    interval, resampling items."""
    import numpy as np

    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def comfy_flux_vae(latent_channels: int = 16):
    """ComfyUI's own ``comfy.sd.VAE`` around a Flux / Z-Image-architecture AutoencoderKL with random weights (seed
    0): the decoder a ComfyUI user runs, at its real size."""
    from harness.inprocess import import_comfy

    import_comfy()
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    from l2p.tiny import FLUX_VAE_DDCONFIG, randomize_

    autoencoder = randomize_(AutoencoderKL(ddconfig=FLUX_VAE_DDCONFIG, embed_dim=latent_channels), seed=0)
    return comfy.sd.VAE(sd=autoencoder.state_dict())


def head_and_inputs(variant: str, size: int, feature_dim: int) -> tuple[torch.nn.Module, Tensor, Tensor]:
    """A Detailer Head of ``variant`` at ``feature_dim`` (seed 0, eval), a random size² image and feature map, after a
    warm-up call on a corner."""
    from l2p.head import build_head

    torch.manual_seed(0)
    head = build_head(variant, feature_dim).train(False)
    p = head.patch_size
    x, f = torch.randn(1, 3, size, size), torch.randn(1, feature_dim, size // p, size // p)
    with torch.no_grad():
        head(x[..., : 4 * p, : 4 * p], f[..., :4, :4])  # warm-up
    return head, x, f
