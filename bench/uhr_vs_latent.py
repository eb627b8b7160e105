"""L2P against the latent path (the same DiT on 8x latents, then a VAE decode): step and generation time and peak
memory, side by side, at Z-Image's width.

What is measured (fp32, this CPU, threads pinned; every measurement in a fresh process, ``bench.measure``; all of
them interleaved A B C ... A B C, ``--reps`` times, so a machine that drifts shifts every part alike):

* **trunks** (1K: the L2P trunk, patch 16 on a 1024² image, and the latent trunk, patch 2 on its 128² 16-channel
  latent, both 4096 image tokens; 4K: the L2P trunk, patch 64 on 4096², 4096 tokens), each with its embedders, a
  128-token caption and one main block whose time a forward hook takes;
* **Detailer Heads** (the 1k head on 1024², the 4k head on 4096², untiled: what ``auto`` picks when memory allows)
  on random feature maps, the sampling forward;
* **the VAE decode** of a 1024² image: ComfyUI's own VAE of the Flux / Z-Image architecture (random weights),
  its decoder on the whole 128² latent.

How each figure is obtained, and labelled so:

* *measured*: a part as it ran;
* *extrapolated per block*: a full trunk = the run's time outside its main block + 30 x its measured main block
  + 2 noise and 2 caption refiners priced from that block by their FLOPs; a step or a generation composed from
  such trunks and measured heads and decodes (CFG = two model passes per step, as two measured batch-1 passes;
  one decode per generation);
* *FLOP model*: what was not run (a latent 4K trunk block sees 65,536 tokens, about 20 min here; the untiled 4K
  decode needs about 60 GiB), priced at this run's measured rate per FLOP, or plain FLOP ratios.

Ratios are per repetition (each repetition's parts ran close together), reported as median [min, max]. Memory is
each part's peak (``PeakRise``; batch 1): a path's peak is the larger of its trunk's and its head's or decode's.

    python -m bench.uhr_vs_latent            # 3 repetitions, about 20 min here
    python -m bench.uhr_vs_latent --smoke    # tiny widths and sizes, one repetition, about a minute
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import time
from dataclasses import asdict, dataclass, field

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.measure import MIB, Figure, PeakRise, interleaved, run_child, spread, write_figures  # noqa: E402

LATENT_CH, VAE_DOWN = 16, 8
STEPS = 50  # Z-Image's and the UHR models' default (l2p-technical.md §1.7), with CFG
# Flux / Z-Image VAE decoder widths, deepest first, and its ResNets per up block (layers_per_block + 1)
VAE_WIDTHS, VAE_RESNETS = (512, 512, 256, 128), 3


@dataclass(frozen=True)
class Width:
    """Z-Image's widths and depth (performance.md §1) and the sizes; ``smoke`` shrinks them."""

    dim: int = 3840
    heads: int = 30
    cap_dim: int = 2560
    cap_tokens: int = 128  # a 300-character prompt (bench/results/prompt_stats.md), padded to 32
    layers: int = 30
    refiners: int = 2
    sizes: dict[str, int] = field(default_factory=lambda: {"1K": 1024, "2K": 2048, "4K": 4096})

    @property
    def ffn(self) -> int:
        return int(self.dim / 3 * 8)  # diffusers' Z-Image FeedForward: 10240 at dim 3840

    @staticmethod
    def smoke() -> Width:
        return Width(dim=256, heads=4, cap_dim=64, cap_tokens=32, sizes={"1K": 256, "2K": 512, "4K": 1024})


# The measured parts: name -> (kind, size label, patch)
PARTS = {"l2p trunk 1K": ("l2p", "1K", 16), "latent trunk 1K": ("latent", "1K", 2), "head 1K": ("head", "1K", 16),
         "VAE decode 1K": ("vae", "1K", 0), "l2p trunk 4K": ("l2p", "4K", 64), "head 4K": ("head", "4K", 64)}


# ---------------------------------------------------------------------------------------------------------------
# FLOP model (1 MAC = 2 FLOP, forward, batch 1)


def image_tokens(size: int, pixels_per_token: int) -> int:
    """Image tokens of a size² image, padded to a multiple of 32 as the trunk pads them."""
    return -(-((size // pixels_per_token) ** 2) // 32) * 32


def block_flops(n: int, w: Width) -> float:
    """One Z-Image block on n tokens: 2n(4d² + 3df) for the projections and the SwiGLU, 4n²d for QK^T and AV."""
    return 2.0 * n * (4 * w.dim ** 2 + 3 * w.dim * w.ffn) + 4.0 * n * n * w.dim


def trunk_flops(n: int, w: Width, layers: int, refiners: int) -> float:
    """A trunk pass over n image tokens: main blocks on image + caption, refiners on each alone (embedders left out:
    under 0.1%)."""
    t = w.cap_tokens
    return layers * block_flops(n + t, w) + refiners * (block_flops(n, w) + block_flops(t, w))


def head_flops(variant: str, size: int, feature_dim: int) -> float:
    """Conv FLOPs of a Detailer Head on a size² image, from its ``l2p.head`` stages (3x3 enc/up/dec, 1x1 rest)."""
    from l2p.head import HEAD_VARIANTS

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


def vae_flops(size: int) -> float:
    """Decoding a size² image whole: conv_in, the mid block (2 ResNets, one single-head attention over the latent
    pixels), the up blocks (ResNets, 2x upsample + 3x3 conv), conv_out."""

    def resnet(cin: int, cout: int) -> int:
        return 9 * cin * cout + 9 * cout * cout + (cin * cout if cin != cout else 0)

    px = (size // VAE_DOWN) ** 2
    c = VAE_WIDTHS[0]
    mac = 9 * LATENT_CH * c * px + 2 * resnet(c, c) * px + 4 * c * c * px + 2 * px * px * c
    cin = c
    for i, c in enumerate(VAE_WIDTHS):
        for _ in range(VAE_RESNETS):
            mac += resnet(cin, c) * px
            cin = c
        if i < len(VAE_WIDTHS) - 1:
            px *= 4
            mac += 9 * c * c * px
    return 2.0 * (mac + 9 * cin * 3 * px)


# ---------------------------------------------------------------------------------------------------------------
# Children: one part in a fresh process


class BlockTimer:
    """Wall time inside a module, summed over its calls (forward pre-hook and hook)."""

    def __init__(self, module):
        self.seconds, self._start = 0.0, 0.0
        module.register_forward_pre_hook(self._enter)
        module.register_forward_hook(self._exit)

    def _enter(self, *_) -> None:
        self._start = time.perf_counter()

    def _exit(self, *_) -> None:
        self.seconds += time.perf_counter() - self._start


def child_trunk(kind: str, size: int, patch: int, w: Width) -> dict:
    import torch

    from l2p.pixel_dit import PixelDiT
    from l2p.tiny import official_trunk, zimage_trunk

    cap, t = [torch.randn(w.cap_tokens, w.cap_dim)], torch.tensor([0.5])
    if kind == "l2p":
        model = PixelDiT(official_trunk(w.dim, 1, 0, w.heads, w.cap_dim, patch), head=torch.nn.Identity()).train(False)
        blocks = model.trunk.layers
        run = functools.partial(model.features, t_model=t, cap_feats=cap)
        x, warm = torch.randn(1, 3, size, size), torch.randn(1, 3, 8 * patch, 8 * patch)
    else:
        model = zimage_trunk(in_channels=LATENT_CH, patch_size=patch, dim=w.dim, n_layers=1, n_refiner_layers=0,
                             n_heads=w.heads, cap_feat_dim=w.cap_dim).train(False)
        blocks = model.layers

        def run(z):
            return model([z], t, cap, patch_size=patch, return_dict=False)[0]

        n = size // VAE_DOWN
        x, warm = torch.randn(LATENT_CH, 1, n, n), torch.randn(LATENT_CH, 1, 16, 16)
    with torch.no_grad():
        run(warm)  # 64 tokens: kernels and allocator
        timer = BlockTimer(blocks[0])
        start = time.perf_counter()
        with PeakRise() as peak:
            run(x)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "block": timer.seconds, "peak": peak.bytes}


def child_head(size: int, patch: int, w: Width) -> dict:
    import torch

    from bench.common import head_and_inputs
    from l2p.head import variant_for_patch
    from l2p.head_tiling import run_head_tiled

    head, x, f = head_and_inputs(variant_for_patch(patch), size, w.dim)
    start = time.perf_counter()
    with torch.no_grad(), PeakRise() as peak:
        run_head_tiled(head, x, f, 0)
    return {"seconds": time.perf_counter() - start, "peak": peak.bytes}


def child_vae(size: int) -> dict:
    import torch

    from bench.common import comfy_flux_vae

    torch.manual_seed(0)
    decoder = comfy_flux_vae(LATENT_CH).first_stage_model
    n = size // VAE_DOWN
    with torch.no_grad():
        decoder.decode(torch.randn(1, LATENT_CH, 8, 8))  # warm-up
        z = torch.randn(1, LATENT_CH, n, n)
        start = time.perf_counter()
        with PeakRise() as peak:
            decoder.decode(z)
    return {"seconds": time.perf_counter() - start, "peak": peak.bytes}


def child_main(part: str, w: Width) -> dict:
    import torch

    torch.manual_seed(0)
    kind, label, patch = PARTS[part]
    size = w.sizes[label]
    if kind == "vae":
        return child_vae(size)
    if kind == "head":
        return child_head(size, patch, w)
    return child_trunk(kind, size, patch, w)


# ---------------------------------------------------------------------------------------------------------------
# Composition: full trunks, steps, generations


@dataclass
class Run:
    """The measured parts of one repetition: seconds and peak bytes by part name, and the block times."""

    seconds: dict[str, float] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)
    block: dict[str, float] = field(default_factory=dict)

    def full_trunk(self, part: str, w: Width) -> float:
        """Extrapolated per block: outside-the-block time + 30 measured main blocks + the 2 + 2 refiners, priced from
        the measured block by their FLOPs."""
        _, label, patch = PARTS[part]
        pixels = patch * (VAE_DOWN if part.startswith("latent") else 1)
        n = image_tokens(w.sizes[label], pixels)
        block = self.block[part]
        refiners = block * w.refiners * (block_flops(n, w) + block_flops(w.cap_tokens, w)) / block_flops(
            n + w.cap_tokens, w)
        return self.seconds[part] - block + w.layers * block + refiners

    def l2p_step(self, label: str, w: Width) -> float:
        return self.full_trunk(f"l2p trunk {label}", w) + self.seconds[f"head {label}"]

    def ratios(self, w: Width) -> dict[str, float]:
        """Latent path / L2P at 1K, per the docstring's composition."""
        lat, vae, l2p = self.full_trunk("latent trunk 1K", w), self.seconds["VAE decode 1K"], self.l2p_step("1K", w)
        return {"one step + decode, no CFG": (lat + vae) / l2p,
                "one step + decode, CFG": (2 * lat + vae) / (2 * l2p),
                f"{STEPS} steps + decode, CFG": (2 * STEPS * lat + vae) / (2 * STEPS * l2p)}


def measure(w: Width, reps: int, smoke: bool) -> list[Run]:
    runs = [Run() for _ in range(reps)]
    for rep, part in interleaved(list(PARTS), reps):
        out = run_child([__file__, "--child", part] + ["--smoke"] * smoke)
        runs[rep].seconds[part], runs[rep].peak[part] = out["seconds"], out["peak"]
        if "block" in out:
            runs[rep].block[part] = out["block"]
        print(f"[{rep + 1}/{reps}] {part}: {out['seconds']:.1f} s, peak {out['peak'] / MIB:.0f} MiB", flush=True)
    return runs


# ---------------------------------------------------------------------------------------------------------------
# Report


def fmt(values: list[float], digits: int = 2) -> str:
    med, lo, hi = spread(values)
    return f"{med:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def report(w: Width, runs: list[Run], seconds: float) -> tuple[list[str], list[Figure]]:
    from l2p.head import variant_for_patch

    reps = len(runs)
    lines = ["# L2P against the latent path on this CPU (`python -m bench.uhr_vs_latent`)", "",
             f"Width {w.dim} ({w.heads} heads, FFN {w.ffn}, caption {w.cap_dim} x {w.cap_tokens} tokens), full depth "
             f"{w.layers} + {w.refiners} + {w.refiners}; fp32, batch 1, 2 threads pinned; {reps} interleaved "
             f"repetitions, median [min, max]; whole run {seconds / 60:.1f} min.", "",
             "## Measured parts", "", "| part | seconds | main block s | full trunk s (extrapolated per block) | "
             "peak MiB |", "|---|---|---|---|---|"]
    for part in PARTS:
        trunk = [r.full_trunk(part, w) for r in runs] if part in runs[0].block else None
        lines.append(f"| {part} | {fmt([r.seconds[part] for r in runs], 1)} | "
                     + (f"{fmt([r.block[part] for r in runs], 1)} | {fmt(trunk, 0)} | " if trunk else " | | ")
                     + f"{max(r.peak[part] for r in runs) / MIB:.0f} |")

    figures: list[Figure] = []
    s1 = w.sizes["1K"]
    lines += ["", f"## Latent path / L2P at 1K ({s1}², {image_tokens(s1, 16)} image tokens each)", "",
              "| figure | latent / L2P | how |", "|---|---|---|"]
    for name in runs[0].ratios(w):
        values = [r.ratios(w)[name] for r in runs]
        figures.append(Figure.over(f"1K time, latent / L2P: {name}", values, "x", "extrapolated per block"))
        lines.append(f"| time, {name} | {fmt(values)} | extrapolated per block |")
    share = [r.seconds["head 1K"] / r.l2p_step("1K", w) for r in runs]
    figures.append(Figure.over("1K: the Detailer Head's share of an L2P step", share, "x", "extrapolated per block"))
    lines.append(f"| the head's share of an L2P step | {fmt(share, 3)} | extrapolated per block |")
    peak = {part: max(r.peak[part] for r in runs) for part in PARTS}
    mem = max(peak["latent trunk 1K"], peak["VAE decode 1K"]) / max(peak["l2p trunk 1K"], peak["head 1K"])
    figures.append(Figure("1K peak memory, latent / L2P (batch 1)", mem, "x", "measured"))
    lines.append(f"| peak memory (batch 1) | {mem:.2f} | measured |")

    # 4K: L2P measured; the latent path priced by FLOPs at this run's measured rates
    s4 = w.sizes["4K"]
    l2p4 = [r.l2p_step("4K", w) for r in runs]
    trunk_rate = [r.full_trunk("latent trunk 1K", w) / trunk_flops(image_tokens(w.sizes["1K"], 16), w, w.layers,
                                                                     w.refiners) for r in runs]
    vae_rate = [r.seconds["VAE decode 1K"] / vae_flops(w.sizes["1K"]) for r in runs]
    lat4 = trunk_flops(image_tokens(s4, 16), w, w.layers, w.refiners)
    gen4 = [(2 * STEPS * lat4 * tr + vae_flops(s4) * vr) / (2 * STEPS * step)
            for tr, vr, step in zip(trunk_rate, vae_rate, l2p4, strict=True)]
    figures.append(Figure.over("4K L2P step (4K model, head untiled), seconds on this CPU", l2p4, "s",
                               "extrapolated per block"))
    figures.append(Figure.over(f"4K time, latent / L2P: {STEPS} steps + decode, CFG", gen4, "x", "FLOP model"))
    lines += ["", f"## 4K ({s4}²): the 4K model against the latent path", "",
              f"The L2P 4K step (trunk at 4096 tokens + the untiled 4k head): {fmt(l2p4, 0)} s, extrapolated per "
              f"block. The latent path at 4K is not run (65,536 tokens a block, an untiled decode of about 60 GiB): "
              f"its trunk is priced at this run's 1K latent trunk rate per FLOP (attention at 16x the tokens is "
              f"likely slower per FLOP, so this flatters it) and its decode at the 1K decode's rate: latent / L2P over "
              f"{STEPS} steps with CFG = **{fmt(gen4, 0)}** (FLOP model)."]

    lines += ["", "## FLOP model, full model (TFLOP, one pass; no measurement)", "",
              "| size | L2P trunk | head | latent trunk | VAE decode | latent / L2P, one step + decode | "
              f"{STEPS} steps + decode, CFG |", "|---|---|---|---|---|---|---|"]
    for label, size in w.sizes.items():
        patch = 64 if label == "4K" else 16
        a = trunk_flops(image_tokens(size, patch), w, w.layers, w.refiners)
        h = head_flops(variant_for_patch(patch), size, w.dim)
        c = trunk_flops(image_tokens(size, 16), w, w.layers, w.refiners)
        v = vae_flops(size)
        lines.append(f"| {label} ({size}², L2P patch {patch}) | {a / 1e12:.1f} | {h / 1e12:.2f} | {c / 1e12:.1f} | "
                     f"{v / 1e12:.1f} | {(c + v) / (a + h):.2f} | {(2 * STEPS * c + v) / (2 * STEPS * (a + h)):.2f} |")
    lines += ["", "Caveats: CPU fp32 on 2 cores, so absolute times are minutes where a GPU takes seconds; the ratios "
              "are the point. CPU convs with few channels (the heads' outer levels) run at a fraction of the GEMM "
              "rate, which a GPU does not share. Weights are random: time and memory do not depend on them."]
    return lines, figures


def flop_check(w: Width) -> list[str]:
    """The FLOP model against torch's FlopCounterMode on the meta device (1K trunks with 1 block, the 1k head)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from l2p.head import build_head
    from l2p.tiny import zimage_trunk

    s1 = w.sizes["1K"]
    cap, t = [torch.randn(w.cap_tokens, w.cap_dim, device="meta")], torch.tensor([0.5], device="meta")
    trunk = zimage_trunk(in_channels=LATENT_CH, patch_size=2, dim=w.dim, n_layers=1, n_refiner_layers=0,
                         n_heads=w.heads, cap_feat_dim=w.cap_dim, device="meta")
    with FlopCounterMode(display=False) as counter:
        trunk([torch.randn(LATENT_CH, 1, s1 // 8, s1 // 8, device="meta")], t, cap, patch_size=2)
    rows = [("latent trunk, 1 block", trunk_flops(image_tokens(s1, 16), w, 1, 0), counter.get_total_flops())]
    head = build_head("1k", w.dim, device="meta")
    with FlopCounterMode(display=False) as counter:
        head(torch.randn(1, 3, s1, s1, device="meta"), torch.randn(1, w.dim, s1 // 16, s1 // 16, device="meta"))
    rows.append(("1k head", head_flops("1k", s1, w.dim), counter.get_total_flops()))
    return ["", "FLOP model against torch's `FlopCounterMode` (meta device): "
            + "; ".join(f"{name} {m / c:.3f}x" for name, m, c in rows) + "."]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of every part")
    ap.add_argument("--smoke", action="store_true", help="tiny widths and sizes, one repetition; no table")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "uhr_vs_latent.md"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    w = Width.smoke() if args.smoke else Width()
    if args.child:
        print(json.dumps(child_main(args.child, w)))
        return 0
    if args.smoke:
        args.reps = 1
    began = time.perf_counter()
    runs = measure(w, args.reps, args.smoke)
    lines, figures = report(w, runs, time.perf_counter() - began)
    lines += flop_check(w)
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.smoke:
        pathlib.Path(args.out).write_text(text)
        (REPO / "bench" / "results" / "uhr_vs_latent.json").write_text(
            json.dumps([asdict(r) for r in runs], indent=1) + "\n")  # the raw parts, per repetition
    write_figures("uhr_vs_latent", figures, time.perf_counter() - began,
                  f"width {w.dim}, fp32, batch 1, 2 threads, {args.reps} interleaved repetitions", args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
