"""L2P at 1K, 2K and 4K against the latent path (same DiT on 8x latents + VAE decode): CPU time and peak memory.

What. One L2P sampling step (arXiv 2605.12013): Z-Image's trunk on pixel patches plus the Detailer Head. The 1K
model (patch 16, 1k head) runs at 1024² (4096 tokens) and 2048² (16,384); the 4K model (patch 64, 4k head, run
untiled and tiled with ``l2p.head_tiling``) at 4096² (4096 tokens). Against it, the latent path at the same sizes:
the same trunk with patch 2 over 16-channel 8x latents (4096, 16,384 and 65,536 tokens) plus a decode by
diffusers' AutoencoderKL in the Flux / Z-Image VAE configuration, untiled and tiled (``enable_tiling`` with
ComfyUI's 512 px tile). Facts: /work/shared/research/performance.md §1, §2, §8; l2p-technical.md §1.7;
uhr-heads.md.

How.

* Real widths (dim 3840, 30 heads, SwiGLU 10240, caption 2560; 128 caption tokens), random weights, fp32, batch 1,
  one CFG branch, no grad. Trunks run their embedders and 1 main block and are extrapolated to the real 30 + 2 + 2
  blocks: the run's non-block time plus the block time from forward hooks, averaged over the runs with the same
  token count (the blocks are the same work in both paths), the refiners scaled from it by the FLOP model.
  Inference activations do not grow with depth; weights are counted on the meta device. The tiled 4K head runs in
  its own process on a random feature map (its trunk is the untiled run's).
* Every measurement runs in a fresh subprocess (``--child``). Time: one run after a warm-up at a small size (same
  code, small shapes; a warm-up at the measured shape would double the cost). Memory: the child resets its
  high-water mark (``5`` > /proc/self/clear_refs) before each phase and reads VmHWM after it (ru_maxrss would be
  inherited across fork + exec); activations = that peak minus the RSS after model build and warm-up. The parent
  polls the child's RSS and kills it above the memory that was free at the start (the machine is shared).
* What would not fit in memory or in the time budget is reported as such and estimated from rates measured in
  this run (trunk blocks: time per linear FLOP and per attention-score FLOP, split with the hooked attention
  module; VAE: per conv FLOP and per mid-attention FLOP from the hooked attention; heads: per FLOP), marked "est.".
* FLOP model: per block 2n(4d² + 3df) + 4n²d; Detailer Head convs from the ``l2p.head`` stages; VAE decoder convs
  and mid attention from its config, tiles as diffusers cuts them; checked against torch's FlopCounterMode on the
  meta device. Predicted ratios are for the full 6B model; measured ratios use the extrapolated full-model times.

    .venv/bin/python -m bench.uhr_vs_latent [--budget-min 14.5] [--smoke]

Writes ``bench/results/uhr_vs_latent.md``, ``.png`` and ``.json`` (raw results). ``--smoke``: tiny widths and
sizes, to check the code paths in a few minutes; its outputs get a ``_smoke`` suffix.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from l2p.head import HEAD_VARIANTS, build_head, variant_for_patch
from l2p.head_tiling import auto_tile_size, head_memory_bytes, run_head_tiled, tiled_memory_bytes
from l2p.pixel_dit import PixelDiT
from l2p.tiny import FLUX_VAE, official_trunk, reference_vae, zimage_trunk
from training.plots import bar_chart

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
GIB = 2 ** 30
F32 = 4
LATENT_CH, VAE_DOWN = 16, 8
STEPS = 50  # UHR inference default (l2p-technical.md §1.7), for the whole-generation ratio
RESERVE = 3 * GIB  # left free for the other users of this machine
# Flux / Z-Image VAE (performance.md §1: 16 ch, 128/256/512/512, 2 layers per block; no quant convs)
VAE_CONFIG = FLUX_VAE


@dataclass(frozen=True)
class Setup:
    """Widths (Z-Image's, performance.md §1), the full depth, the sizes and the VAE tile; ``smoke`` shrinks them."""

    dim: int = 3840
    heads: int = 30
    cap_dim: int = 2560
    cap_tokens: int = 128  # a 300-character prompt (bench/results/prompt_stats.md) padded to 32
    layers: int = 30
    refiners: int = 2
    sizes: dict[str, int] = field(default_factory=lambda: {"1K": 1024, "2K": 2048, "4K": 4096})
    vae_tile: int = 512  # ComfyUI VAEDecodeTiled's default tile (performance.md §2.2)
    head_free: int = 2 * GIB  # memory handed to auto_tile_size for the tiled 4K head (a 1792 px tile at 4096²)

    @property
    def ffn(self) -> int:
        return int(self.dim / 3 * 8)  # diffusers' Z-Image FeedForward: 10240 at dim 3840

    @staticmethod
    def smoke() -> Setup:
        return Setup(dim=256, heads=4, cap_dim=64, cap_tokens=32, sizes={"1K": 256, "2K": 512, "4K": 1024},
                     vae_tile=128, head_free=int(0.8 * head_memory_bytes("4k", 1024, 1024, 1, F32, 256)))


@dataclass(frozen=True)
class Job:
    """One measurement. ``path``: "l2p" (trunk + head), "latent" (trunk), "vae" (decode; ``tile`` in px, 0 untiled)
    or "head" (the Detailer Head alone, tiled with ``auto_tile_size``, on a random feature map)."""

    path: str
    label: str
    size: int
    patch: int = 2
    layers: int = 1
    refiners: int = 0
    tile: int = 0

    @property
    def key(self) -> str:
        return f"{self.path} {self.label}" + (" tiled" if self.tile else "")

    @property
    def tokens(self) -> int:
        return image_tokens(self.size, self.patch * (1 if self.path in ("l2p", "head") else VAE_DOWN))


def plan(setup: Setup) -> list[Job]:
    """Measurements, most informative first: later ones are the first to go when the budget runs out."""
    s1, s2, s4 = (setup.sizes[k] for k in ("1K", "2K", "4K"))
    tile = setup.vae_tile
    return [Job("l2p", "1K", s1, 16), Job("latent", "1K", s1), Job("vae", "1K", s1), Job("l2p", "4K", s4, 64),
            Job("l2p", "2K", s2, 16), Job("head", "4K", s4, 64, tile=1), Job("vae", "1K", s1, tile=tile),
            Job("latent", "2K", s2), Job("vae", "2K", s2), Job("vae", "2K", s2, tile=tile), Job("latent", "4K", s4),
            Job("vae", "4K", s4), Job("vae", "4K", s4, tile=tile)]


# ---------------------------------------------------------------------------------------------------------------
# FLOP model (1 MAC = 2 FLOP, forward, batch 1)


def image_tokens(size: int, pixels_per_token: int) -> int:
    """Image tokens of a size x size image, padded to a multiple of 32 as the trunk pads them."""
    n = (size // pixels_per_token) ** 2
    return -(-n // 32) * 32


def block_flops(n: int, setup: Setup) -> tuple[float, float]:
    """(linear, attention) FLOPs of one Z-Image block on n tokens: 2n(4d² + 3df) and 4n²d (QK^T and AV)."""
    d = setup.dim
    return 2.0 * n * (4 * d * d + 3 * d * setup.ffn), 4.0 * n * n * d


def trunk_flops(job: Job, setup: Setup, layers: int, refiners: int) -> tuple[float, float]:
    """(linear, attention) FLOPs of a trunk pass: main blocks on image + caption tokens, noise refiners on the
    image tokens, context refiners on the caption, embedders, and the latent final layer."""
    n, t = job.tokens, setup.cap_tokens
    parts = [(layers, block_flops(n + t, setup)), (refiners, block_flops(n, setup)),
             (refiners, block_flops(t, setup))]
    lin = sum(k * f[0] for k, f in parts)
    attn = sum(k * f[1] for k, f in parts)
    in_width = 3 * job.patch ** 2 if job.path == "l2p" else LATENT_CH * job.patch ** 2
    lin += 2.0 * setup.dim * (n * in_width + t * setup.cap_dim)
    if job.path == "latent":
        lin += 2.0 * n * setup.dim * in_width  # final layer back to patch pixels of 16 latent channels
    return lin, attn


def head_flops(variant: str, size: int, feature_dim: int) -> float:
    """Conv FLOPs of a Detailer Head on a size² image, from its ``l2p.head`` stages (3x3 enc/up/dec, 1x1 rest)."""
    cls = HEAD_VARIANTS[variant].cls

    def px(level: int) -> float:
        return (size / 2 ** level) ** 2

    mac, cin = 0.0, 3
    for level, st in enumerate(cls.STAGES):
        mac += 9 * cin * st.enc_out * px(level)
        cin = st.enc_out
    mac += (cin + feature_dim) * cls.bottleneck_out * px(len(cls.STAGES))
    ch = cls.bottleneck_out
    for level in reversed(range(len(cls.STAGES))):
        st = cls.STAGES[level]
        mac += 9 * px(level) * (ch * st.up_out + (st.up_out + st.enc_out) * st.dec_out)
        ch = st.dec_out
    return 2 * (mac + 3 * ch * px(0))


def vae_decoder_flops(h: int, w: int) -> tuple[float, float]:
    """(conv and linear, mid-attention) FLOPs of decoding an h x w latent: conv_in, mid block (2 ResNets and one
    single-head attention over h*w tokens), the up blocks (layers_per_block + 1 ResNets, 2x upsample + 3x3 conv),
    conv_out. The attention part is its projections plus QK^T and AV."""
    chans = list(reversed(VAE_CONFIG["block_out_channels"]))

    def resnet(cin: int, cout: int) -> int:
        return 9 * cin * cout + 9 * cout * cout + (cin * cout if cin != cout else 0)

    px, c = h * w, chans[0]
    conv = 9 * LATENT_CH * c * px + 2 * resnet(c, c) * px
    attn = 4 * c * c * px + 2 * px * px * c
    cin = c
    for i, c in enumerate(chans):
        for _ in range(VAE_CONFIG["layers_per_block"] + 1):
            conv += resnet(cin, c) * px
            cin = c
        if i < len(chans) - 1:
            px *= 4
            conv += 9 * c * c * px
    conv += 9 * cin * 3 * px  # to RGB
    return 2.0 * conv, 2.0 * attn


def vae_tiles(size: int, tile: int) -> list[tuple[int, int]]:
    """Latent tiles decoded by diffusers' AutoencoderKL.tiled_decode (stride 3/4 tile; untiled if it covers)."""
    n = size // VAE_DOWN
    t = tile // VAE_DOWN
    if not tile or n <= t:
        return [(n, n)]
    side = [min(t, n - i) for i in range(0, n, int(t * 0.75))]
    return [(a, b) for a in side for b in side]


def vae_flops(size: int, tile: int) -> tuple[float, float]:
    parts = [vae_decoder_flops(a, b) for a, b in vae_tiles(size, tile)]
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


# Activation model, fp32 (performance.md §9 (c)): DiT ~(10d + 3f) n, VAE floor two live 256-ch full-res tensors.
def trunk_act_model(n: int, setup: Setup) -> float:
    return (10 * setup.dim + 3 * setup.ffn) * n * F32


def vae_act_model(size: int, tile: int) -> float:
    tiles = vae_tiles(size, tile)
    biggest = max(a * b for a, b in tiles) * VAE_DOWN ** 2
    stored = sum(a * b for a, b in tiles) * VAE_DOWN ** 2 * 3 * F32 if len(tiles) > 1 else 0
    return 512 * biggest * F32 + stored + 3 * size * size * F32


# ---------------------------------------------------------------------------------------------------------------
# Child: one measurement in its own process


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM and RssAnon of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        return {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f
                if ln.startswith(("VmRSS:", "VmHWM:", "RssAnon:"))}


class Probe:
    """Phases of a measurement: seconds and peak RSS (VmHWM, reset at each phase's start)."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}
        self.base = 0

    def mark_base(self) -> None:
        gc.collect()
        self.base = proc_status()["VmRSS"]

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        start = time.perf_counter()
        yield
        self.phases[name] = {"seconds": time.perf_counter() - start, "peak": proc_status()["VmHWM"]}


class HookTimer:
    """Wall time spent inside groups of modules, summed over calls (forward pre-hook and hook)."""

    def __init__(self, groups: dict[str, list[nn.Module]]):
        self.seconds: dict[str, float] = defaultdict(float)
        self._start: dict[int, float] = {}
        for name, modules in groups.items():
            for module in modules:
                module.register_forward_pre_hook(self._enter)
                module.register_forward_hook(functools.partial(self._exit, name))

    def _enter(self, module: nn.Module, args: object) -> None:
        self._start[id(module)] = time.perf_counter()

    def _exit(self, name: str, module: nn.Module, args: object, output: object) -> None:
        self.seconds[name] += time.perf_counter() - self._start.pop(id(module))


def latent_trunk(setup: Setup, layers: int, refiners: int, device: str | None = None) -> nn.Module:
    """Latent Z-Image: patch 2 over 16 latent channels, with its final layer."""
    return zimage_trunk(in_channels=LATENT_CH, patch_size=2, dim=setup.dim, n_layers=layers, n_refiner_layers=refiners,
                        n_heads=setup.heads, cap_feat_dim=setup.cap_dim, device=device)


def l2p_model(setup: Setup, job: Job, layers: int, refiners: int, device: str | None = None) -> PixelDiT:
    trunk = official_trunk(setup.dim, layers, refiners, setup.heads, setup.cap_dim, job.patch, device=device)
    variant = variant_for_patch(job.patch)
    if device == "meta":
        return PixelDiT(trunk, build_head(variant, setup.dim, device="meta"))
    return PixelDiT(trunk, head_variant=variant)


def vae_decoder(device: str | None = None) -> nn.Module:
    return reference_vae(**VAE_CONFIG, decoder_only=True, device=device)


def child_trunk(job: Job, setup: Setup, probe: Probe) -> dict:
    cap = [torch.randn(setup.cap_tokens, setup.cap_dim)]
    t = torch.tensor([0.5])
    out: dict = {}
    if job.path == "l2p":
        model = l2p_model(setup, job, job.layers, job.refiners).train(False)
        trunk = model.trunk
        model(torch.randn(1, 3, 8 * job.patch, 8 * job.patch), t, cap)  # warm-up: 64 tokens, trunk and head
    else:
        model = trunk = latent_trunk(setup, job.layers, job.refiners).train(False)
        trunk([torch.randn(LATENT_CH, 1, 16, 16)], t, cap, patch_size=2)  # warm-up: 64 tokens
    out["weights"] = sum(p.numel() * p.element_size() for p in model.parameters())
    timer = HookTimer({"main": list(trunk.layers), "noise": list(trunk.noise_refiner),
                       "context": list(trunk.context_refiner), "attention": [b.attention for b in trunk.layers]})
    if job.path == "l2p":
        x = torch.randn(1, 3, job.size, job.size)
        probe.mark_base()
        with probe.phase("trunk"):
            feats = model.features(x, 1.0 - t, cap)
        out["blocks"] = dict(timer.seconds)
        with probe.phase("head"):
            y = model.local_decoder(x, feats)
            del y
    else:
        z = torch.randn(LATENT_CH, 1, job.size // VAE_DOWN, job.size // VAE_DOWN)
        probe.mark_base()
        with probe.phase("trunk"):
            y = trunk([z], t, cap, patch_size=2, return_dict=False)[0]
            del y
        out["blocks"] = dict(timer.seconds)
    return out


def head_tile(job: Job, setup: Setup) -> int:
    """The tile ``auto_tile_size`` picks for the head when ``setup.head_free`` bytes are free."""
    return auto_tile_size(variant_for_patch(job.patch), job.size, job.size, 1, setup.head_free, F32, setup.dim)


def child_head(job: Job, setup: Setup, probe: Probe) -> dict:
    """The head alone, tiled, in its own process (so that the untiled run's freed memory cannot count here)."""
    head = build_head(variant_for_patch(job.patch), setup.dim).train(False)
    side = 8 * job.patch
    head(torch.randn(1, 3, side, side), torch.randn(1, setup.dim, 8, 8))  # warm-up
    x = torch.randn(1, 3, job.size, job.size)
    feats = torch.randn(1, setup.dim, job.size // job.patch, job.size // job.patch)
    tile = head_tile(job, setup)
    probe.mark_base()
    with probe.phase("head_tiled"):
        y = run_head_tiled(head, x, feats, tile)
        del y
    return {"weights": sum(p.numel() * p.element_size() for p in head.parameters()), "blocks": {}, "head_tile": tile}


def child_vae(job: Job, probe: Probe) -> dict:
    vae = vae_decoder().train(False)
    if job.tile:
        vae.enable_tiling()
        vae.tile_sample_min_size, vae.tile_latent_min_size = job.tile, job.tile // VAE_DOWN
    timer = HookTimer({"attention": list(vae.decoder.mid_block.attentions)})
    vae.decode(torch.randn(1, LATENT_CH, 16, 16))  # warm-up
    timer.seconds.clear()
    z = torch.randn(1, LATENT_CH, job.size // VAE_DOWN, job.size // VAE_DOWN)
    probe.mark_base()
    with probe.phase("decode"):
        y = vae.decode(z, return_dict=False)[0]
        del y
    return {"weights": sum(p.numel() * p.element_size() for p in vae.parameters()), "blocks": dict(timer.seconds)}


def child_main(job: Job, setup: Setup) -> None:
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    probe = Probe()
    with torch.no_grad():
        if job.path == "vae":
            out = child_vae(job, probe)
        elif job.path == "head":
            out = child_head(job, setup, probe)
        else:
            out = child_trunk(job, setup, probe)
    out.update(phases=probe.phases, base=probe.base)
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Parent: budget, subprocesses, extrapolation and estimates


@dataclass
class Rates:
    """Seconds per FLOP measured in this run (defaults until measured: 75 GFLOP/s)."""

    # per measured main block: (linear FLOPs, their s, attention-score FLOPs, their s)
    trunk_obs: list[tuple[float, float, float, float]] = field(default_factory=list)
    heads: dict[str, float] = field(default_factory=dict)  # s per FLOP by head variant
    vae_conv: float = 1 / 75e9
    vae_attn: float = 1 / 75e9
    vae_act_factor: float = 3.0  # measured VAE activations / the 512-channel floor (performance.md §2.3: 2-3x)
    overheads: list[float] = field(default_factory=list)  # process start, model build, warm-up (s)

    @property
    def overhead(self) -> float:
        return max(self.overheads, default=20.0)

    def trunk(self) -> tuple[float, float]:
        """(s per linear FLOP, s per attention-score FLOP) over the measured main blocks, FLOP-weighted."""
        obs = self.trunk_obs
        if not obs:
            return 1 / 75e9, 1 / 75e9
        return sum(o[1] for o in obs) / sum(o[0] for o in obs), sum(o[3] for o in obs) / sum(o[2] for o in obs)

    def head(self, variant: str) -> float:
        """s per FLOP of a head variant; a variant not measured takes the slowest measured one."""
        return self.heads.get(variant, max(self.heads.values(), default=1 / 75e9))

    def trunk_seconds(self, flops: tuple[float, float]) -> float:
        lin, att = self.trunk()
        return flops[0] * lin + flops[1] * att

    def vae_seconds(self, size: int, tile: int) -> float:
        conv, attn = vae_flops(size, tile)
        return conv * self.vae_conv + attn * self.vae_attn


@dataclass
class Part:
    """A component of a path at one size, for the full model: seconds, activation bytes, and where they came from."""

    seconds: float | None
    act: float | None
    source: str  # "measured" or "est."
    note: str = ""


def run_child(job: Job, setup: Setup, smoke: bool, cap: int, deadline: float) -> dict | str:
    """Run one measurement in a fresh process; a dict, or a string saying why there is none."""
    cmd = [sys.executable, "-m", "bench.uhr_vs_latent", "--child", json.dumps(asdict(job))] + (["--smoke"] * smoke)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
        why, start = "", time.monotonic()
        while proc.poll() is None:
            try:
                rss = proc_status(proc.pid).get("VmRSS", 0)
            except (OSError, ValueError):
                rss = 0
            if rss > cap and not why:
                why = f"does not fit: killed at {rss / GIB:.1f} GiB (free memory cap {cap / GIB:.1f} GiB)"
                proc.kill()
            elif time.monotonic() > deadline and not why:
                why = f"killed after {(time.monotonic() - start) / 60:.1f} min: over the time budget"
                proc.kill()
            time.sleep(0.05)
        stdout = proc.stdout.read() if proc.stdout else ""
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if why:
        return why
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            out = json.loads(line[len("RESULT "):])
            out["wall"] = time.monotonic() - start
            return out
    tail = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or [f"exit code {proc.returncode}"]
    return f"failed: {tail[0][:200]}"


class Bench:
    def __init__(self, setup: Setup, smoke: bool, budget_s: float):
        self.setup, self.smoke = setup, smoke
        self.start = time.monotonic()
        self.deadline = self.start + budget_s
        with open("/proc/meminfo") as f:
            info = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f}
        self.ram, self.cap = info["MemTotal"], info["MemAvailable"] - RESERVE
        self.rates = Rates()
        self.results: dict[str, dict | str] = {}
        self.jobs = {job.key: job for job in plan(setup)}
        self.weights = {key: self.count_weights(job, job.layers, job.refiners) for key, job in self.jobs.items()}

    # -- sizes of things ---------------------------------------------------------------------------------------
    def count_weights(self, job: Job, layers: int, refiners: int) -> int:
        """fp32 bytes of the model a job (or the full model at this depth) builds, counted on the meta device."""
        if job.path == "vae":
            model = vae_decoder("meta")
        elif job.path == "head":
            model = build_head(variant_for_patch(job.patch), self.setup.dim, device="meta")
        elif job.path == "latent":
            model = latent_trunk(self.setup, layers, refiners, "meta")
        else:
            model = l2p_model(self.setup, job, layers, refiners, "meta")
        return sum(p.numel() for p in model.parameters()) * F32

    def estimate(self, job: Job) -> tuple[float, float]:
        """(seconds, peak bytes) of a job as it would run here, from the rates and activations measured so far."""
        s = self.setup
        if job.path == "vae":
            seconds = self.rates.vae_seconds(job.size, job.tile)
            act = vae_act_model(job.size, job.tile) * self.rates.vae_act_factor
        elif job.path == "head":  # halo recomputation: a rough 1.6x, for the budget only
            variant = variant_for_patch(job.patch)
            seconds = 1.6 * head_flops(variant, job.size, s.dim) * self.rates.head(variant)
            act = tiled_memory_bytes(variant, job.size, job.size, 1, F32, head_tile(job, s), s.dim)
        else:
            seconds = self.rates.trunk_seconds(trunk_flops(job, s, job.layers, job.refiners))
            act = self.trunk_act(job)
            if job.path == "l2p":
                variant = variant_for_patch(job.patch)
                seconds += head_flops(variant, job.size, s.dim) * self.rates.head(variant)
                act = max(act, head_memory_bytes(variant, job.size, job.size, 1, F32, s.dim))
        return seconds + self.rates.overhead, self.weights[job.key] + act + GIB

    def trunk_act(self, job: Job) -> float:
        """Trunk activations: the measured trunk with the nearest token count, scaled by tokens, else the model."""
        measured = [(j.tokens, r["phases"]["trunk"]["peak"] - r["base"]) for k, j in self.jobs.items()
                    if j.path in ("l2p", "latent") and isinstance(r := self.results.get(k), dict)]
        if not measured:
            return trunk_act_model(job.tokens + self.setup.cap_tokens, self.setup)
        n, act = min(measured, key=lambda m: abs(math.log(m[0] / job.tokens)))
        return act * (job.tokens + self.setup.cap_tokens) / (n + self.setup.cap_tokens)

    # -- running ----------------------------------------------------------------------------------------------
    def run_all(self) -> None:
        for key, job in self.jobs.items():
            seconds, peak = self.estimate(job)
            left = self.deadline - time.monotonic()
            why = []
            if peak > self.cap:
                where = f"{self.ram / GIB:.0f} GiB" if peak > self.ram else f"the {self.cap / GIB:.0f} GiB free"
                why.append(f"does not fit in {where} (est. peak {peak / GIB:.1f} GiB)")
            if seconds > left:
                why.append(f"skipped: est. {seconds / 60:.1f} min, {max(left, 0) / 60:.1f} min of budget left")
            if why:
                self.results[key] = "; ".join(why)
                print(f"{key}: {self.results[key]}", flush=True)
                continue
            print(f"{key}: running (est. {seconds:.0f} s, peak {peak / GIB:.1f} GiB) ...", flush=True)
            load = os.getloadavg()[0]
            res = run_child(job, self.setup, self.smoke, self.cap, self.deadline + 30)
            self.results[key] = res
            if isinstance(res, dict):
                res["load"] = load
                self.learn(job, res)
                phases = ", ".join(f"{k} {v['seconds']:.1f} s / {(v['peak'] - res['base']) / GIB:.2f} GiB"
                                   for k, v in res["phases"].items())
                print(f"    {res['wall']:.0f} s wall: {phases}", flush=True)
            else:
                print(f"    {res}", flush=True)

    def learn(self, job: Job, res: dict) -> None:
        r, s = self.rates, self.setup
        r.overheads.append(res["wall"] - sum(p["seconds"] for p in res["phases"].values()))
        if job.path == "vae":
            t = res["phases"]["decode"]["seconds"]
            conv, attn = vae_flops(job.size, job.tile)
            if not job.tile:
                t_attn = min(res["blocks"].get("attention", 0.0), 0.9 * t)
                r.vae_attn = max(t_attn, 1e-6) / attn
                r.vae_conv = (t - t_attn) / conv
                r.vae_act_factor = (res["phases"]["decode"]["peak"] - res["base"]) / vae_act_model(job.size, 0)
            return
        if job.path == "head":
            return
        # split a main block with its hooked attention module: the rest (FFN, norms) gives the linear rate, which
        # prices the module's q/k/v/out projections; the remainder is RoPE + scaled_dot_product_attention
        n, d = job.tokens + s.cap_tokens, s.dim
        block, attn = (res["blocks"][k] / job.layers for k in ("main", "attention"))
        proj, ffn, scores = 8.0 * n * d * d, 6.0 * n * d * s.ffn, 4.0 * n * n * d
        per_lin = (block - attn) / ffn
        t_scores = max(attn - per_lin * proj, 0.05 * attn)
        r.trunk_obs.append((proj + ffn, block - t_scores, scores, t_scores))
        if job.path == "l2p":
            variant = variant_for_patch(job.patch)
            r.heads[variant] = res["phases"]["head"]["seconds"] / head_flops(variant, job.size, s.dim)

    # -- full-model parts -------------------------------------------------------------------------------------
    def block_time(self, tokens: int, kind: str) -> float | None:
        """Mean hooked time of one block of a kind ("main", "noise", "context") over the measured trunks with this
        image-token count: the blocks are the same work in both paths, so pooling them halves the noise of the
        shared cores."""
        times = [r["blocks"][kind] / (j.layers if kind == "main" else j.refiners) for k, j in self.jobs.items()
                 if j.path in ("l2p", "latent") and j.tokens == tokens and isinstance(r := self.results.get(k), dict)
                 and r["blocks"].get(kind)]
        return sum(times) / len(times) if times else None

    def full_trunk(self, job: Job) -> Part:
        """The full-depth trunk: this run's non-block time (embedders, patchify, final layer) plus 30 + 2 + 2 blocks
        at the pooled block times; rates fitted in this run where no trunk with these tokens was measured."""
        s, res = self.setup, self.results.get(job.key)
        n, cap = job.tokens, s.cap_tokens
        main = self.block_time(n, "main")
        if main is None:
            seconds = self.rates.trunk_seconds(trunk_flops(job, s, s.layers, s.refiners))
            return Part(seconds, self.trunk_act(job), "est.", res if isinstance(res, str) else "")
        total = sum(block_flops(n + cap, s))
        noise = self.block_time(n, "noise") or main * sum(block_flops(n, s)) / total
        context = self.block_time(n, "context") or main * sum(block_flops(cap, s)) / total
        blocks = s.layers * main + s.refiners * (noise + context)
        if isinstance(res, dict):
            hooked = sum(res["blocks"].get(k, 0.0) for k in ("main", "noise", "context"))  # "attention" is inside
            other = res["phases"]["trunk"]["seconds"] - hooked
            return Part(other + blocks, res["phases"]["trunk"]["peak"] - res["base"], "measured")
        other = self.rates.trunk_seconds(trunk_flops(job, s, 0, 0))
        return Part(other + blocks, self.trunk_act(job), "est.",
                    f"{res}; blocks as measured at {n} tokens in the other path" if res else "")

    def head(self, job: Job, tiled: bool) -> Part:
        """The head of an "l2p" job: its untiled run, or the "head" job's tiled run at that size."""
        key, phase = (f"head {job.label} tiled", "head_tiled") if tiled else (job.key, "head")
        res, variant = self.results.get(key), variant_for_patch(job.patch)
        if isinstance(res, dict):
            p = res["phases"][phase]
            return Part(p["seconds"], p["peak"] - res["base"], "measured",
                        f"tile {res['head_tile']} px" if tiled else "")
        flops = head_flops(variant, job.size, self.setup.dim) * (1.6 if tiled else 1)
        act = (tiled_memory_bytes(variant, job.size, job.size, 1, F32, head_tile(job, self.setup), self.setup.dim)
               if tiled else head_memory_bytes(variant, job.size, job.size, 1, F32, self.setup.dim))
        return Part(flops * self.rates.head(variant), act, "est.", res if isinstance(res, str) else "")

    def vae(self, job: Job) -> Part:
        res = self.results.get(job.key)
        if isinstance(res, dict):
            p = res["phases"]["decode"]
            return Part(p["seconds"], p["peak"] - res["base"], "measured")
        act = vae_act_model(job.size, job.tile) * self.rates.vae_act_factor
        return Part(self.rates.vae_seconds(job.size, job.tile), act, "est.", res or "")


# ---------------------------------------------------------------------------------------------------------------
# Report


def flop_model_check(setup: Setup) -> list[tuple[str, float, float]]:
    """(what, FLOP model, torch FlopCounterMode on the meta device) for the measured 1K configs and both heads."""
    from torch.utils.flop_counter import FlopCounterMode

    s1, s4 = setup.sizes["1K"], setup.sizes["4K"]
    rows = []
    cap = [torch.randn(setup.cap_tokens, setup.cap_dim, device="meta")]
    t = torch.tensor([0.5], device="meta")
    for job in (Job("l2p", "1K", s1, 16), Job("latent", "1K", s1), Job("l2p", "4K", s4, 64)):
        with FlopCounterMode(display=False) as counter:
            if job.path == "l2p":
                l2p_model(setup, job, 1, 1, "meta")(torch.randn(1, 3, job.size, job.size, device="meta"), t, cap)
            else:
                z = torch.randn(LATENT_CH, 1, s1 // VAE_DOWN, s1 // VAE_DOWN, device="meta")
                latent_trunk(setup, 1, 1, "meta")([z], t, cap, patch_size=2)
        model = sum(trunk_flops(job, setup, 1, 1))
        if job.path == "l2p":
            model += head_flops(variant_for_patch(job.patch), job.size, setup.dim)
        rows.append((f"{job.key}: 1 block + 1 + 1 refiners" + (" + head" if job.path == "l2p" else ""),
                     model, counter.get_total_flops()))
    for size, tile in ((s1, 0), (s1, setup.vae_tile)):
        vae = vae_decoder("meta")
        if tile:
            vae.enable_tiling()
            vae.tile_sample_min_size, vae.tile_latent_min_size = tile, tile // VAE_DOWN
        with FlopCounterMode(display=False) as counter:
            vae.decode(torch.randn(1, LATENT_CH, size // VAE_DOWN, size // VAE_DOWN, device="meta"))
        rows.append((f"VAE decode {size}²" + (f", {tile} px tiles" if tile else ""), sum(vae_flops(size, tile)),
                     counter.get_total_flops()))
    return rows


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        ram = int(f.readline().split()[1]) / 2 ** 20
    import diffusers

    return (f"{cpu}, {os.cpu_count()} cores (shared with another user's tests; load average at start "
            f"{os.getloadavg()[0]:.1f}), {ram:.0f} GiB RAM, no GPU; Python {platform.python_version()}, torch "
            f"{torch.__version__} ({torch.get_num_threads()} threads), diffusers {diffusers.__version__}; fp32")


def gib(x: float | None) -> str:
    return "—" if x is None else f"{x / GIB:.2f}"


def fmt_s(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.1f} s" if x < 600 else f"{x / 60:.1f} min" if x < 36000 else f"{x / 3600:.1f} h"


def report(bench: Bench, flop_rows: list[tuple[str, float, float]], wall: float, out_md: str, out_png: str) -> str:
    s, b = bench.setup, bench
    lines = [
        "# L2P vs the latent path at 1K / 2K / 4K on CPU (`bench/uhr_vs_latent.py`)", "",
        f"`.venv/bin/python -m bench.uhr_vs_latent{' --smoke' if b.smoke else ''}`: whole run {wall / 60:.1f} min.",
        "", f"Machine: {machine()}.", "",
        f"Model: real widths (dim {s.dim}, {s.heads} heads, FFN {s.ffn}, caption {s.cap_dim}, {s.cap_tokens} caption "
        f"tokens), random weights, batch 1, one CFG branch. Full model = {s.layers} main blocks + {s.refiners} noise "
        f"+ {s.refiners} context refiners. L2P: 1K model (patch 16, 1k head) at 1K and 2K, 4K model (patch 64, 4k "
        "head) at 4K. Latent: the same trunk with patch 2 over 16-channel 8x latents plus a decode by "
        "AutoencoderKL in the Flux / Z-Image configuration (random weights), untiled and tiled with "
        f"`enable_tiling()` and {s.vae_tile} px tiles (diffusers' 25% overlap).", "",
        "**Measured vs extrapolated.** Trunks are measured with their embedders and 1 main block and extrapolated "
        "to the full depth: the run's non-block time (embedders, final layer) plus 30 + 2 + 2 blocks at the hooked "
        "block time, averaged over the runs with the same token count (the blocks are the same work in both "
        "paths; the shared cores make one block's time vary by 10-40%), the 2 noise and 2 context refiners scaled "
        "from it by FLOPs. The tiled 4K head runs alone on a random feature map. Heads and VAE decodes are "
        "measured whole. Rows marked (est.) were not run (reason given) and are estimated from rates measured in "
        "this run. Activations = peak RSS of the phase minus the RSS after model build and warm-up (fp32, inputs "
        "excluded); they do not grow with depth.", "",
        "## Measurements", "",
        "| measurement | what ran | time (run) | main block | full-model time | activations (GiB) | model (GiB) | "
        "process peak (GiB) | GFLOP/s | load | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, job in b.jobs.items():
        res = b.results.get(key)
        if job.path == "head":
            variant, tile = variant_for_patch(job.patch), head_tile(job, s)
            h, hf = b.head(job, True), head_flops(variant, job.size, s.dim)
            est = tiled_memory_bytes(variant, job.size, job.size, 1, F32, tile, s.dim)
            ran = f"{variant} head on {job.size}², {tile} px tiles, random features"
            if isinstance(res, dict):
                lines.append(f"| {key} | {ran} | {h.seconds:.1f} s | | {fmt_s(h.seconds)} | {gib(h.act)} | {gib(est)} "
                             f"| {gib(res['phases']['head_tiled']['peak'])} | {hf / h.seconds / 1e9:.0f} | "
                             f"{res['load']:.1f} | |")
            else:
                lines.append(f"| {key} | {ran} | — | — | {fmt_s(h.seconds)} (est.) | {gib(h.act)} (est.) | {gib(est)} "
                             f"| — | — | — | {res} |")
            continue
        if job.path == "vae":
            ran = f"decode {job.size}² ({len(vae_tiles(job.size, job.tile))} tile(s))"
            part, model_act = b.vae(job), vae_act_model(job.size, job.tile)
            phase, flops = "decode", sum(vae_flops(job.size, job.tile))
        else:
            ran = (f"patch {job.patch}, {job.tokens} image tokens, embedders + {job.layers} main block"
                   + (f" + {job.refiners}+{job.refiners} refiners" if job.refiners else ""))
            part, model_act = b.full_trunk(job), trunk_act_model(job.tokens + s.cap_tokens, s)
            phase, flops = "trunk", sum(trunk_flops(job, s, job.layers, job.refiners))
        if isinstance(res, dict):
            p = res["phases"][phase]
            peak = max(v["peak"] for v in res["phases"].values())
            block = f"{res['blocks']['main'] / job.layers:.1f} s" if job.path != "vae" else ""
            lines.append(f"| {key} {phase} | {ran} | {p['seconds']:.1f} s | {block} | {fmt_s(part.seconds)} | "
                         f"{gib(part.act)} | {gib(model_act)} | {gib(peak)} | {flops / p['seconds'] / 1e9:.0f} | "
                         f"{res['load']:.1f} | |")
            if "head" in res["phases"]:
                h, variant = b.head(job, False), variant_for_patch(job.patch)
                hf = head_flops(variant, job.size, s.dim)
                est = head_memory_bytes(variant, job.size, job.size, 1, F32, s.dim)
                lines.append(f"| {key} head | {variant} head on {job.size}², untiled | {h.seconds:.1f} s | | "
                             f"{fmt_s(h.seconds)} | {gib(h.act)} | {gib(est)} | {gib(res['phases']['head']['peak'])} "
                             f"| {hf / h.seconds / 1e9:.0f} | | |")
        else:
            lines.append(f"| {key} | {ran} | — | — | {fmt_s(part.seconds)} (est.) | {gib(part.act)} (est.) | "
                         f"{gib(model_act)} | — | — | — | {part.note or res} |")
    lines += ["", "Model (GiB): the activation model — trunk (10d + 3f)·n·4 B and VAE 512 channels·px·4 B "
              "(performance.md §9 (c), §2.3; plus stored tiles and output), heads `l2p.head_tiling` estimates. "
              "GFLOP/s: FLOP model of what ran / its time. load: 1-minute load average when the measurement started "
              "(2 cores; above 2 means it shared them).", ""]
    lin, att = b.rates.trunk()
    head_rates = ", ".join(f"{v} {1 / r / 1e9:.0f}" for v, r in b.rates.heads.items())
    lines += [f"Rates behind the estimates (GFLOP/s): trunk linear {1 / lin / 1e9:.0f}, attention scores "
              f"{1 / att / 1e9:.0f} (the block split with its hooked attention module); VAE convs "
              f"{1 / b.rates.vae_conv / 1e9:.0f}, mid attention {1 / b.rates.vae_attn / 1e9:.0f}; heads {head_rates}; "
              f"VAE activations {b.rates.vae_act_factor:.2f}x the 512-channel floor.", ""]

    # -- comparison per size
    lines += ["## Latent path / L2P step, full 6B model", "",
              "Time: one step (L2P: trunk + head; latent: trunk + decode). Measured = this CPU with the extrapolated "
              f"full-depth times; FLOP = the FLOP model. {STEPS} steps: {STEPS} trunk passes and one decode. Memory: "
              "activation peak of the path (max over its phases), fp32.", "",
              "| size | L2P step | latent step + decode | + tiled decode | time ratio measured (FLOP), untiled | "
              f"tiled | {STEPS} steps, untiled: measured (FLOP) | tiled | memory ratio measured (model), untiled "
              "| tiled |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    summary: dict[str, dict[str, Part]] = {}
    plot_vals, plot_labels = [], []

    def mark(*ps: Part) -> str:
        return "" if all(p.source == "measured" for p in ps) else " (est.)"

    for label, size in s.sizes.items():
        lj, tj = b.jobs[f"l2p {label}"], b.jobs[f"latent {label}"]
        parts = {"l2p_trunk": b.full_trunk(lj), "head": b.head(lj, False), "lat_trunk": b.full_trunk(tj),
                 "vae": b.vae(b.jobs[f"vae {label}"]), "vae_tiled": b.vae(b.jobs[f"vae {label} tiled"])}
        summary[label] = parts
        variant = variant_for_patch(lj.patch)
        fl_lat = sum(trunk_flops(tj, s, s.layers, s.refiners))
        fl_vae = {"vae": sum(vae_flops(size, 0)), "vae_tiled": sum(vae_flops(size, s.vae_tile))}
        m_lat = trunk_act_model(tj.tokens + s.cap_tokens, s)
        m_vae = {"vae": vae_act_model(size, 0), "vae_tiled": vae_act_model(size, s.vae_tile)}
        heads = [("", parts["head"], head_memory_bytes(variant, size, size, 1, F32, s.dim))]
        if f"head {label} tiled" in b.jobs:
            tile = head_tile(lj, s)
            heads.append((f", head tiled ({tile} px)", b.head(lj, True),
                          tiled_memory_bytes(variant, size, size, 1, F32, tile, s.dim)))
        for suffix, head, m_head in heads:
            pl = (parts["l2p_trunk"], head)
            l2p_t, l2p_m = pl[0].seconds + head.seconds, max(pl[0].act, head.act)
            fl_l2p = sum(trunk_flops(lj, s, s.layers, s.refiners)) + head_flops(variant, size, s.dim)
            m_l2p = max(trunk_act_model(lj.tokens + s.cap_tokens, s), m_head)
            cells = []
            for key in ("vae", "vae_tiled"):
                pp = (*pl, parts["lat_trunk"], parts[key])
                lat_t = parts["lat_trunk"].seconds + parts[key].seconds
                cells.append((fmt_s(lat_t) + mark(*pp[2:]),
                              f"{lat_t / l2p_t:.2f}{mark(*pp)} ({(fl_lat + fl_vae[key]) / fl_l2p:.2f})",
                              f"{(STEPS * parts['lat_trunk'].seconds + parts[key].seconds) / (STEPS * l2p_t):.2f}"
                              f"{mark(*pp)} ({(STEPS * fl_lat + fl_vae[key]) / (STEPS * fl_l2p):.2f})",
                              f"{max(parts['lat_trunk'].act, parts[key].act) / l2p_m:.2f}{mark(*pp)} "
                              f"({max(m_lat, m_vae[key]) / m_l2p:.2f})"))
                if not suffix:
                    plot_vals.append(math.log10(lat_t))
                    plot_labels.append(f"{label} {'lat' if key == 'vae' else 'lat-t'}" + ("*" if mark(*pp) else ""))
            lines.append(f"| {label} ({size}²){suffix} | {fmt_s(l2p_t)}{mark(*pl)} | "
                         + " | ".join(" | ".join(c[i] for c in cells) for i in range(4)) + " |")
            if not suffix:
                plot_vals.insert(len(plot_vals) - 2, math.log10(l2p_t))
                plot_labels.insert(len(plot_labels) - 2, f"{label} L2P" + ("*" if mark(*pl) else ""))
    lines.append("")

    # -- FLOP model table
    lines += ["## FLOP model, full 6B model (TFLOP, one step)", "",
              "Per block 2n(4d² + 3df) + 4n²d (n = image + caption tokens; refiners on image / caption only), "
              "embedders and the latent final layer; head convs from the `l2p.head` stages; VAE decoder convs + "
              "mid attention (2·N²·512 MAC over N = latent pixels), tiles as diffusers cuts them. No norms or "
              "activations.", "",
              "| size | L2P trunk | head | L2P step | latent trunk | VAE untiled | VAE tiled | latent/L2P untiled | "
              f"tiled | {STEPS} steps untiled | tiled |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, size in s.sizes.items():
        lj, tj = b.jobs[f"l2p {label}"], b.jobs[f"latent {label}"]
        a = sum(trunk_flops(lj, s, s.layers, s.refiners))
        h = head_flops(variant_for_patch(lj.patch), size, s.dim)
        c = sum(trunk_flops(tj, s, s.layers, s.refiners))
        v, vt = sum(vae_flops(size, 0)), sum(vae_flops(size, s.vae_tile))
        lines.append(f"| {label} | {a / 1e12:.1f} | {h / 1e12:.2f} | {(a + h) / 1e12:.1f} | {c / 1e12:.1f} | "
                     f"{v / 1e12:.1f} | {vt / 1e12:.1f} | {(c + v) / (a + h):.2f} | {(c + vt) / (a + h):.2f} | "
                     f"{(STEPS * c + v) / (STEPS * (a + h)):.2f} | {(STEPS * c + vt) / (STEPS * (a + h)):.2f} |")
    lines += ["", "FLOP model vs torch `FlopCounterMode` (meta device, counts matmuls, convs and attention):", "",
              "| what | FLOP model | counted | model / counted |", "|---|---:|---:|---:|"]
    lines += [f"| {w} | {m / 1e12:.3f} T | {c / 1e12:.3f} T | {m / c:.3f} |" for w, m, c in flop_rows]

    # -- memory of the full model
    lines += ["", "## Full-model memory (bf16 deployment estimate)", "",
              "Weights counted exactly (bf16 = 2 B/param: trunk + head for L2P, trunk + VAE decoder for latent, "
              "both resident) plus the fp32 activations above halved (an assumption, not a measurement). fp32 weights "
              f"alone are {b.count_weights(b.jobs['latent 1K'], s.layers, s.refiners) / GIB:.1f} GiB for the latent "
              "trunk, so the full model does not fit this machine in fp32 either way.", "",
              "| size | L2P | latent, untiled decode | latent, tiled decode | fits in 24 GiB (L2P / untiled / tiled) |",
              "|---|---:|---:|---:|---|"]
    w_vae = b.count_weights(b.jobs["vae 1K"], 0, 0) / 2
    for label, parts in summary.items():
        w_l2p = b.count_weights(b.jobs[f"l2p {label}"], s.layers, s.refiners) / 2
        w_lat = b.count_weights(b.jobs[f"latent {label}"], s.layers, s.refiners) / 2 + w_vae
        l2p = w_l2p + max(parts["l2p_trunk"].act, parts["head"].act) / 2
        lat, til = (w_lat + max(parts["lat_trunk"].act, parts[k].act) / 2 for k in ("vae", "vae_tiled"))
        fits = " / ".join("yes" if m <= 24 * GIB else "no" for m in (l2p, lat, til))
        lines.append(f"| {label} | {gib(l2p)} | {gib(lat)} | {gib(til)} | {fits} |")
    lines += ["", "## Caveats", "",
              "- CPU, fp32, 2 shared cores: absolute times are minutes per step, not the GPU's seconds; the ratios are "
              "the point. CPU convs with few channels (the heads' outer levels) and norms reach a fraction of the GEMM "
              "rate, so measured ratios differ from FLOP ratios in that direction.",
              "- Trunk times are extrapolated from one measured block (hooked) to 30 + 2 + 2 blocks; rows marked "
              "(est.) were not run here (see the note column) and come from rates fitted in this run.",
              "- The tiled decode is diffusers' (one pass, 25% overlap); ComfyUI's tiled decode averages three "
              "tilings (≈3.7x slower than untiled there, performance.md §2.2).",
              "- Activations are RSS rises over the RSS after build and warm-up, fp32, inputs excluded; freed memory "
              "that glibc keeps (small blocks) can add to a later phase of the same process (the tiled head runs in "
              "its own)."]
    os.makedirs(os.path.dirname(out_md), exist_ok=True)
    with open(out_md[:-3] + ".json", "w") as f:  # raw results: phases, hooked block times, loads
        json.dump({k: {"job": asdict(j), "result": b.results.get(k)} for k, j in b.jobs.items()}, f, indent=1)
    with open(out_md, "w") as f:
        f.write("\n".join(lines) + "\n")
    bar_chart(out_png, plot_vals, plot_labels, "One step (+ decode), full model on this CPU (* = estimated)",
              "size and path (lat = latent step + untiled decode, lat-t = + tiled decode)", "log10(seconds)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-min", type=float, default=14.5, help="wall-clock budget for the measurements")
    ap.add_argument("--smoke", action="store_true", help="tiny widths and sizes: check the code paths quickly")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    setup = Setup.smoke() if args.smoke else Setup()
    if args.child:
        child_main(Job(**json.loads(args.child)), setup)
        return 0
    start = time.monotonic()
    bench = Bench(setup, args.smoke, args.budget_min * 60 - 20)  # 20 s for the FLOP check and the report
    print(f"memory cap for a measurement: {bench.cap / GIB:.1f} GiB of {bench.ram / GIB:.1f} GiB", flush=True)
    flop_rows = flop_model_check(setup)
    bench.run_all()
    suffix = "_smoke" if args.smoke else ""
    text = report(bench, flop_rows, time.monotonic() - start, os.path.join(RESULTS, f"uhr_vs_latent{suffix}.md"),
                  os.path.join(RESULTS, f"uhr_vs_latent{suffix}.png"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
