"""The aligned conversion (``init = distill``): warm-start L2P's new interface from its source before fine-tuning.

A plain conversion feeds the frozen trunk tokens from a random pixel embedder, and its Detailer Head starts at
random: the model begins worse than predicting zero. Two short stages, each with the rest frozen, align it:

1. **Align the tokens.** The pixel embedder, and the policy's trainable blocks below the first frozen main block
   (the image-side refiners, e.g. the ``paper`` policy's noise refiner and block 0), learn to reproduce the
   source's token stream at the input of that first frozen block, for the same noisy image: the source sees
   z_t = (1 - sigma) E(x0) + sigma eps (E: the source's VAE encoder, in the model's latent space), L2P sees
   x_t = (1 - sigma) x0 + sigma eps_x, where eps_x carries the same latent noise through an orthonormal patch map
   M (rows orthonormal, the ``vae_orth`` fit): eps_x = M^T eps + (I - M^T M) xi with xi ~ N(0, I), so eps_x is
   N(0, I) and M eps_x = eps. Loss: squared error over the image tokens relative to the target's mean square.
   The source's parts being trained are kept as frozen copies for the teacher's pass.
2. **Decode.** With the whole trunk frozen, the Detailer Head learns the source's own flow-matching objective
   (velocity noise - x0) from the trunk's features.

The embedder starts from the ``vae_orth`` fit. Needs one pixel patch per latent token (patch 16 for Z-Image);
a higher-resolution variant re-heads the distilled 1K model (``--head 4k``). Plain torch on any device.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .format.keys import CONDITIONING_KEY, CONDITIONING_SUFFIX, IMAGE_SUFFIXES
from .init_fit import patchify
from .pixel_dit import PixelDiT, official_names, pixel_dit_from_official
from .schedule import shift_sigma

Tensor = torch.Tensor
DISTILL_INIT = "distill"
# (stage, step, steps, loss) after each step
Progress = Callable[[str, int, int, float], None]


@dataclass(frozen=True)
class DistillConfig:
    """Steps and rates of the two stages; ``shift`` shifts the uniform sigma draw (1 = uniform)."""

    align_steps: int = 200
    head_steps: int = 200
    lr: float = 1e-4
    head_lr: float = 1e-4
    shift: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class DistillReport:
    """What the distillation did, for the checkpoint's ``l2p.distill`` metadata: the config, where the tokens were
    aligned, what trained, and the losses at the start and end of each stage (mean of its first and last tenth)."""

    config: DistillConfig
    align_block: int
    aligned: list[str]  # the modules the first stage trained (official names)
    align_loss: tuple[float, float]
    head_loss: tuple[float, float]
    images: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def unpatchify(tokens: Tensor, shape: tuple[int, int, int, int], p: int) -> Tensor:
    """The inverse of ``init_fit.patchify``: [B * (H/p) * (W/p), p*p*C] in (ph, pw, c) order -> [B, C, H, W]."""
    b, c, h, w = shape
    return tokens.reshape(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


def pixel_noise(latent_noise: Tensor, noise_map: Tensor, image_shape: tuple[int, int, int, int], patch: int,
                latent_patch: int, generator: torch.Generator | None = None) -> Tensor:
    """Pixel noise eps_x ~ N(0, I) with ``noise_map @ patch(eps_x) = patch(latent_noise)`` for each token
    (``noise_map`` [latent width, pixel width] with orthonormal rows)."""
    z = patchify(latent_noise, latent_patch)
    xi = torch.randn(z.shape[0], noise_map.shape[1], generator=generator).to(z)  # a CPU generator on any device
    m = noise_map.to(z)
    return unpatchify(z @ m + xi - (xi @ m.T) @ m, image_shape, patch)


def align_block(trainable: set[str], n_layers: int) -> int:
    """The first main block the policy freezes: the stream at its input is what the aligned parts must produce."""
    for i in range(n_layers):
        if not any(name.startswith(f"layers.{i}.") for name in trainable):
            return i
    raise ValueError("the policy trains every main block, so there is no frozen trunk to align to: use init "
                     "vae_orth, or a policy that freezes the middle blocks")


class _Reached(Exception):
    def __init__(self, stream: Tensor):
        self.stream = stream


def stream_at(trunk: nn.Module, block: nn.Module, run: Callable[[], object]) -> Tensor:
    """The hidden states entering ``block`` during ``run()``; the pass stops there."""

    def stop(module: nn.Module, args: tuple) -> None:
        raise _Reached(args[0])

    handle = block.register_forward_pre_hook(stop)
    try:
        run()
    except _Reached as reached:
        return reached.stream
    finally:
        handle.remove()
    raise RuntimeError(f"the trunk never reached {type(block).__name__}: the stream to align could not be taken")


@contextmanager
def _swapped(lists: dict[tuple[nn.ModuleList, int], nn.Module]) -> Iterator[None]:
    """Put other modules at some ModuleList positions for the duration (the teacher's frozen copies)."""
    saved = {key: key[0][key[1]] for key in lists}
    for (modules, i), module in lists.items():
        modules[i] = module
    try:
        yield
    finally:
        for (modules, i), module in saved.items():
            modules[i] = module


@contextmanager
def _source_embedder(trunk: nn.Module, embedder: nn.Module, latent_patch: int) -> Iterator[None]:
    """The source's latent patch embedder beside the pixel one, so the same trunk runs the source's input."""
    key = f"{latent_patch}-1"
    patches = trunk.all_patch_size
    trunk.all_x_embedder[key] = embedder
    trunk.all_patch_size = (*patches, latent_patch)
    try:
        yield
    finally:
        del trunk.all_x_embedder[key]
        trunk.all_patch_size = patches


def _ends(losses: list[float]) -> tuple[float, float]:
    k = max(1, len(losses) // 10)
    return (sum(losses[:k]) / k, sum(losses[-k:]) / k) if losses else (math.nan, math.nan)


def _sigmas(n: int, shift: float, generator: torch.Generator) -> Tensor:
    return torch.tensor([shift_sigma(u, shift) for u in torch.rand(n, generator=generator).tolist()])


def _update(opt: torch.optim.Optimizer, loss: Tensor, losses: list[float], progress: Progress | None, stage: str,
            steps: int) -> None:
    """One optimizer step on ``loss``; its value recorded and reported."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    losses.append(loss.item())
    if progress:
        progress(stage, len(losses), steps, losses[-1])


def distill(model: PixelDiT, source_embedder: nn.Module, encode: Callable[[Tensor], Tensor],
            batches: Iterable[tuple[Tensor, list[Tensor]]], noise_map: Tensor, trainable: set[str],
            cfg: DistillConfig = DistillConfig(), latent_patch: int = 2,
            progress: Progress | None = None) -> DistillReport:
    """Run both stages on ``model`` in place (see the module docstring) and say what was done.

    ``batches`` yields (images [B, 3, H, W] in [-1, 1], caption features per image) without end; ``encode`` maps
    images to the source's latents (its VAE encoder, in the model's latent space); ``trainable``: the official
    names the checkpoint's policy trains. Every parameter is frozen again afterwards.
    """
    trunk, patch = model.trunk, model.patch_size
    n_layers = len(trunk.layers)
    k = align_block(trainable, n_layers)
    parts: dict[str, tuple[nn.ModuleList, int]] = {f"layers.{i}": (trunk.layers, i) for i in range(k)}
    parts |= {f"noise_refiner.{i}": (trunk.noise_refiner, i) for i in range(len(trunk.noise_refiner))
              if any(name.startswith(f"noise_refiner.{i}.") for name in trainable)}
    teacher = {where: copy.deepcopy(where[0][where[1]]).requires_grad_(False) for where in parts.values()}
    embedder = trunk.all_x_embedder[f"{patch}-1"]
    model.requires_grad_(False)
    aligned = [embedder, *(where[0][where[1]] for where in parts.values())]
    for module in aligned:
        module.requires_grad_(True)
    source_embedder = source_embedder.requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed)
    data = iter(batches)
    opt = torch.optim.AdamW([p for m in aligned for p in m.parameters()], lr=cfg.lr, weight_decay=0.0)
    align_losses: list[float] = []
    images = 0
    with _source_embedder(trunk, source_embedder, latent_patch):
        for _ in range(cfg.align_steps):
            x0, cap = next(data)
            images += len(x0)
            with torch.no_grad():
                z0 = encode(x0).to(x0)
            sigma = _sigmas(len(x0), cfg.shift, gen).to(x0)
            eps = torch.randn(z0.shape, generator=gen).to(x0)
            eps_x = pixel_noise(eps, noise_map, tuple(x0.shape), patch, latent_patch, gen)
            s = sigma.view(-1, 1, 1, 1)
            z_t, x_t, t = (1 - s) * z0 + s * eps, (1 - s) * x0 + s * eps_x, 1 - sigma
            n = (x0.shape[-2] // patch) * (x0.shape[-1] // patch)
            with torch.no_grad(), _swapped({where: teacher[where] for where in parts.values()}):
                target = stream_at(trunk, trunk.layers[k], lambda z_t=z_t, cap=cap, t=t: trunk(
                    [zi.unsqueeze(1) for zi in z_t], t, cap, patch_size=latent_patch))[:, :n]
            pred = stream_at(trunk, trunk.layers[k], lambda x_t=x_t, cap=cap, t=t: trunk(
                [xi.unsqueeze(1) for xi in x_t], t, cap, patch_size=patch))[:, :n]
            loss = F.mse_loss(pred, target) / target.pow(2).mean().clamp_min(1e-12)
            _update(opt, loss, align_losses, progress, "align", cfg.align_steps)
    model.requires_grad_(False)
    head = model.local_decoder.requires_grad_(True)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.head_lr, weight_decay=0.0)
    head_losses: list[float] = []
    for _ in range(cfg.head_steps):
        x0, cap = next(data)
        images += len(x0)
        sigma = _sigmas(len(x0), cfg.shift, gen).to(x0)
        noise = torch.randn(x0.shape, generator=gen).to(x0)
        s = sigma.view(-1, 1, 1, 1)
        x_t = (1 - s) * x0 + s * noise
        with torch.no_grad():
            feats = model.features(x_t, 1 - sigma, cap)
        _update(opt, F.mse_loss(-head(x_t, feats), noise - x0), head_losses, progress, "head", cfg.head_steps)
    model.requires_grad_(False)
    trained = [f"all_x_embedder.{patch}-1", *parts]
    return DistillReport(cfg, k, trained, _ends(align_losses), _ends(head_losses), images)


def zero_captions(batch: int, cap_dim: int, device: str | torch.device = "cpu") -> list[Tensor]:
    """One zero caption token per image: the aligned stream and the head's features need a caption, and this one
    is the same for teacher and student."""
    return [torch.zeros(1, cap_dim, device=device) for _ in range(batch)]


def _orders(n: int, batch: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of indices into n items: a seeded shuffle per pass (a batch may wrap around)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=gen).tolist()
        for i in range(0, max(n - batch + 1, 1), batch):
            yield [order[(i + j) % n] for j in range(batch)]


def tensor_batches(pixels: Tensor | None, size: int, batch: int, cap_dim: int, seed: int = 0,
                   device: str | torch.device = "cpu") -> Iterator[tuple[Tensor, list[Tensor]]]:
    """Endless batches of (size² images in [-1, 1], ``zero_captions``) from ``pixels`` [N, 3, S, S] (resized) or,
    without them, procedural pictures."""
    from .init_fit import fit_images

    caption = zero_captions(batch, cap_dim, device)
    if pixels is None:
        for i in range(2**62):
            yield fit_images(batch, size, seed * 1_000_003 + i).to(device), caption
    images = F.interpolate(pixels.float(), size=(size, size), mode="area") if pixels.shape[-1] != size else pixels
    for idx in _orders(len(images), batch, seed):
        yield images[idx].to(device), caption


def image_batches(folder: str | None, size: int, batch: int, cap_dim: int, seed: int = 0,
                  device: str | torch.device = "cpu") -> Iterator[tuple[Tensor, list[Tensor]]]:
    """``tensor_batches`` from a folder's images (centre-cropped square and resized, read as they are needed).

    When every image has its text features beside it (``NNNNN.cond.safetensors``, as the pack's dataset folders
    do), each image comes with its own caption, so the tokens are aligned with the text the trunk will see;
    otherwise with ``zero_captions``."""
    if folder is None:
        yield from tensor_batches(None, size, batch, cap_dim, seed, device)
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise ValueError(f"{os.path.basename(os.path.normpath(folder))}: no images ({', '.join(IMAGE_SUFFIXES)}) "
                         "to distill on")
    captions = [os.path.join(folder, os.path.splitext(f)[0] + CONDITIONING_SUFFIX) for f in files]
    if not all(os.path.isfile(c) for c in captions):
        captions = []
    from PIL import Image

    def load(name: str) -> Tensor:
        with Image.open(os.path.join(folder, name)) as im:
            im = im.convert("RGB")
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
            return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 127.5 - 1

    zeros = zero_captions(batch, cap_dim, device)
    for idx in _orders(len(files), batch, seed):
        images = torch.stack([load(files[i]) for i in idx]).to(device)
        yield images, [load_caption(captions[i], cap_dim).to(device) for i in idx] if captions else zeros


def load_caption(path: str, cap_dim: int) -> Tensor:
    """One ``.cond.safetensors`` file's text features [tokens, cap_dim] (safetensors only); a wrong file is a
    one-line error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    name = os.path.basename(path)
    try:
        feats = load_file(path).get(CONDITIONING_KEY)
    except (OSError, SafetensorError) as e:
        raise ValueError(f"{name}: cannot read its text features ({e}): write it again, or remove the folder's "
                         f"{CONDITIONING_SUFFIX} files to distill without captions") from None
    if feats is None or feats.dim() != 2 or feats.shape[1] != cap_dim:
        shape = None if feats is None else list(feats.shape)
        raise ValueError(f"{name}: text features {shape} are not [tokens, {cap_dim}] of this model's text encoder: "
                         f"cache them with the source's text encoder, or remove the {CONDITIONING_SUFFIX} files")
    return feats.float()


def distilled_conversion(source, encode: Callable[[Tensor], Tensor], batches: Iterable[tuple[Tensor, list[Tensor]]],
                         fit_pairs: tuple[Tensor, Tensor], *, patch_size: int = 16, seed: int = 0,
                         policy: str = "paper", head_variant: str = "1k", head_width_div: int = 1,
                         cfg: DistillConfig = DistillConfig(), device: str | torch.device = "cpu",
                         progress: Progress | None = None) -> tuple[dict[str, Tensor], dict[str, str], DistillReport]:
    """A latent ``source`` (a ``TensorSource``) converted with the ``vae_orth`` embedder, then distilled: the
    official-layout tensors (the source's dtype), their ``l2p.*`` metadata (``init`` distill, ``distill`` the
    report as JSON) and the report. The whole model is in memory in float32 on ``device``."""
    from .convert import plan_conversion
    from .format.keys import strip_prefix
    from .format.layouts import OFFICIAL, infer_config, source_arch
    from .init_fit import fit_linear_encoder
    from .policies import trainable_names

    arch = source_arch(source.meta)  # its own latent patch: one pixel patch per latent token
    if not arch.official_layout:
        raise ValueError(f"init distill runs on Z-Image sources (the trainer's model), not {arch.label}: convert "
                         "it with init official or vae_orth")
    if patch_size != arch.pixels_per_latent_token:
        raise ValueError(f"init distill needs one pixel patch per latent token (patch {arch.pixels_per_latent_token} "
                         f"for {arch.label}), not {patch_size}: distill at {arch.pixels_per_latent_token}, then "
                         "re-head the result (--head 4k)")
    conv = plan_conversion(source, patch_size=patch_size, init="vae_orth", seed=seed, head_variant=head_variant,
                           layout=OFFICIAL, policy=policy, fit_pairs=fit_pairs, head_width_div=head_width_div)
    sd = {p.name: p.make() for p in conv.plan}  # copied tensors are the source's own: never train those in place
    dtypes = {k: v.dtype for k, v in sd.items()}
    sd = {k: v.to(torch.float32, copy=True) for k, v in sd.items()}
    model = pixel_dit_from_official(sd, infer_config(sd), "the conversion").to(device)
    del sd
    names = strip_prefix({k: k for k in source.meta})  # stripped name -> name in the source
    weight, bias = (source.get(next(v for k, v in names.items() if k.startswith(arch.patch_embedder)
                                    and k.endswith(end))) for end in ("weight", "bias"))
    embedder = nn.Linear(weight.shape[1], weight.shape[0]).to(device)
    with torch.no_grad():
        embedder.weight.copy_(weight.float())
        embedder.bias.copy_(bias.float())
    trainable = trainable_names(official_names(model).values(), policy, len(model.trunk.layers))
    noise_map = fit_linear_encoder(*fit_pairs, "vae_orth").to(device)
    report = distill(model, embedder, encode, batches, noise_map, trainable, cfg, arch.latent_patch, progress)
    out = {k: v.detach().to("cpu", dtypes[k]).contiguous() for k, v in model.official_state_dict().items()}
    meta = {**conv.metadata, "l2p.init": "distill", "l2p.distill": report.to_json()}
    return out, meta, report
