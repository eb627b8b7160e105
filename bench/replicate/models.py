"""The world's models in plain torch: the VAE, the latent source (+ text encoder), and their samplers.

The source is the real Z-Image DiT class (diffusers' ``ZImageTransformer2DModel``, the names the pack
converts) at toy size; the VAE is a diffusers ``AutoencoderKL`` (8x down, 16 latent channels) narrow
enough to train on a CPU yet loadable by ComfyUI's own AutoencoderKL (32 norm groups, mid attention).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from l2p.sampling import euler_sample, guided
from l2p.schedule import sampling_sigmas
from l2p.tiny import reference_vae, zimage_trunk
from shapes_world.text_encoder import EncoderConfig, ShapesTextEncoder

from .config import LATENT_CH, LATENT_SCALE, LATENT_SHIFT, Budget

Tensor = torch.Tensor


def to_tensor(images: np.ndarray | Tensor) -> Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images))
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(x: Tensor) -> Tensor:
    """float [N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


# --- VAE --------------------------------------------------------------------------------------------------

def new_vae() -> nn.Module:
    return reference_vae((32, 32, 64, 64), latent_channels=LATENT_CH)


def vae_from_state(sd: dict[str, Tensor]) -> nn.Module:
    vae = new_vae()
    vae.load_state_dict(sd)
    return vae.train(False)


@torch.no_grad()
def bake_latent_norm(vae: nn.Module, latents: Tensor) -> None:
    """Rewrite the 1x1 (post_)quant_conv so raw latents z satisfy (z - SHIFT) * SCALE ~ N(0, 1) per channel.

    ``latents``: raw posterior means of the training images. Encoder and decoder stay exact inverses of
    each other's affine map, so reconstructions do not change.
    """
    mean = latents.mean(dim=(0, 2, 3))
    std = latents.std(dim=(0, 2, 3)).clamp_min(1e-4)
    a = 1.0 / (std * LATENT_SCALE)  # z_new = a * z + b
    b = LATENT_SHIFT - mean * a
    q, p = vae.quant_conv, vae.post_quant_conv
    c = LATENT_CH
    q.weight[:c] *= a.view(-1, 1, 1, 1)
    q.bias[:c] = q.bias[:c] * a + b
    q.bias[c:] += 2 * torch.log(a)  # log-variance of the scaled posterior
    p.bias += (p.weight[:, :, 0, 0] * (-b / a)).sum(dim=1)
    p.weight /= a.view(1, -1, 1, 1)


@torch.no_grad()
def encode(vae: nn.Module, images: Tensor, chunk: int = 128) -> Tensor:
    """Images in [-1, 1] -> the DiT's normalised latents (posterior means)."""
    raw = torch.cat([vae.encode(images[i:i + chunk]).latent_dist.mean for i in range(0, len(images), chunk)])
    return (raw - LATENT_SHIFT) * LATENT_SCALE


@torch.no_grad()
def decode(vae: nn.Module, latents: Tensor, chunk: int = 128) -> Tensor:
    """What ComfyUI's VAEDecode does after the sampler: latent / SCALE + SHIFT, then the decoder."""
    return torch.cat([vae.decode(latents[i:i + chunk] / LATENT_SCALE + LATENT_SHIFT).sample
                      for i in range(0, len(latents), chunk)]).clamp(-1, 1)


def train_vae(pool: Tensor, steps: int, batch: int, lr: float, kl_weight: float, seed: int) -> tuple[nn.Module, list]:
    torch.manual_seed(seed)
    vae = new_vae()
    with torch.no_grad():  # a small initial posterior std: unit sampling noise stalls a short training
        vae.quant_conv.bias[LATENT_CH:] -= 8.0
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    # 5% warm-up; OneCycleLR divides by zero when the warm-up is exactly one step (20 steps), so at least 1.5
    total = max(steps, 2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=max(0.05, 1.5 / total))
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        x = pool[torch.randint(len(pool), (batch,), generator=gen)]
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample(generator=gen)).sample
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return vae.train(False), losses


# --- latent source + text encoder -------------------------------------------------------------------------

def new_source(budget: Budget) -> nn.Module:
    return zimage_trunk(in_channels=LATENT_CH, patch_size=budget.latent_patch, dim=budget.dim, n_layers=budget.layers,
                        n_refiner_layers=1, n_heads=budget.heads, cap_feat_dim=budget.cap_dim)


def new_text_encoder(words: list[str], budget: Budget) -> ShapesTextEncoder:
    return ShapesTextEncoder(words, EncoderConfig(width=budget.cap_dim))


def source_velocity(source: nn.Module, z: Tensor, sigma: Tensor, caps: list[Tensor]) -> Tensor:
    """``noise - z0``: diffusers' Z-Image takes time 1 - sigma and predicts z0 - noise (official convention)."""
    out = source(list(z.unsqueeze(2)), 1.0 - sigma, caps, patch_size=source.all_patch_size[0], return_dict=False)[0]
    return -torch.stack(out).squeeze(2)


def train_source(source: nn.Module, encoder: ShapesTextEncoder, latents: Tensor, prompts: list[str], budget: Budget,
                 seed: int) -> list[float]:
    """Flow matching on the VAE latents, text encoder trained jointly; sigma ~ U(0, 1) shifted by
    ``budget.shift``; returns the per-step losses and leaves the EMA weights in both models."""
    from l2p.schedule import shift_sigma

    params = list(source.parameters()) + list(encoder.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=budget.source_lr, weight_decay=0.01)
    warmup = max(1, budget.source_steps // 25)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    gen = torch.Generator().manual_seed(seed)
    losses = []
    source.train()
    encoder.train()
    for _ in range(budget.source_steps):
        idx = torch.randint(len(latents), (budget.source_batch,), generator=gen)
        drop = torch.rand(budget.source_batch, generator=gen) < budget.caption_dropout
        texts = ["" if d else prompts[i] for i, d in zip(idx.tolist(), drop.tolist(), strict=True)]
        z0 = latents[idx]
        noise = torch.randn(z0.shape, generator=gen)
        u = torch.rand(budget.source_batch, generator=gen)
        sigma = torch.tensor([shift_sigma(float(v), budget.shift) for v in u])
        s = sigma.view(-1, 1, 1, 1)
        loss = F.mse_loss(source_velocity(source, (1 - s) * z0 + s * noise, sigma, encoder(texts)), noise - z0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        decay = min(budget.source_ema, (1 + len(losses)) / (10 + len(losses)))
        with torch.no_grad():
            for e, p in zip(ema, params, strict=True):
                e.lerp_(p, 1 - decay)
    with torch.no_grad():
        for e, p in zip(ema, params, strict=True):
            p.copy_(e)
    source.train(False)
    encoder.train(False)
    return losses


# --- sampling (same sampler, guidance and seeds for every model) ------------------------------------------

def seeded_noise(shape: tuple[int, ...], seeds: list[int]) -> Tensor:
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.no_grad()
def sample(velocity, encoder: ShapesTextEncoder, prompts: list[str], seeds: list[int], shape: tuple[int, ...],
           budget: Budget, chunk: int = 64, cfg: float | None = None) -> Tensor:
    """Euler + CFG (``velocity(x, sigma, caps)``; ``cfg`` default the budget's) for each (prompt, seed); returns
    the final x."""
    sigmas = sampling_sigmas(budget.sample_steps, budget.shift)
    outs = []
    for i in range(0, len(prompts), chunk):
        caps = encoder(prompts[i:i + chunk])
        empty = encoder([""] * len(caps))
        cond = guided(lambda x, s, caps=caps: velocity(x, s, caps), lambda x, s, e=empty: velocity(x, s, e),
                      budget.cfg if cfg is None else cfg)
        outs.append(euler_sample(cond, seeded_noise(shape, seeds[i:i + chunk]), sigmas))
    return torch.cat(outs)


def sample_source(source: nn.Module, vae: nn.Module, encoder: ShapesTextEncoder, prompts: list[str],
                  seeds: list[int], budget: Budget, cfg: float | None = None) -> Tensor:
    side = budget.size // 8
    z = sample(lambda x, s, c: source_velocity(source, x, s, c), encoder, prompts, seeds, (LATENT_CH, side, side),
               budget, cfg=cfg)
    return to_uint8(decode(vae, z))


def sample_pixels(model: nn.Module, encoder: ShapesTextEncoder, prompts: list[str], seeds: list[int],
                  budget: Budget, cfg: float | None = None) -> Tensor:
    x = sample(lambda x, s, c: model(x, s, c), encoder, prompts, seeds, (3, budget.size, budget.size), budget,
               cfg=cfg)
    return to_uint8(x)
