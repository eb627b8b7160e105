"""The 4K Detailer Head against ComfyUI's tiled VAE decode of the same image: peak memory and time, side by side.

What runs (fp32, this CPU, 2 threads, each measurement in a fresh process, ``bench.measure``):

* **VAE, one tile** (measured): core's ``comfy.sd.VAE`` of the Flux / Z-Image architecture (random weights)
  decodes one 64x64-latent tile (512 px, VAEDecodeTiled's default tile), as ``decode_tiled`` calls it.
* **VAE, tiled, whole image** (measured with a stand-in decoder): core's own ``VAE.decode_tiled`` (tile 512 px,
  overlap 64, VAEDecodeTiled's defaults; three passes of three tile shapes) on the image's latent, with
  ``first_stage_model.decode`` replaced by a stand-in that holds the real tile's measured peak (scaled by the
  tile's area) and returns an image of the right shape. Core's buffers are real; the decoder's activations are
  the measured tile's. (The real decoder on every tile of a 4096² image takes hours on this CPU; its time is
  extrapolated from the tile: tiles x tile seconds.)
* **Head** (measured): the real-width 4K head (feature dim 3840) on a random image and feature map:
  untiled (the sampling forward: outer skips recomputed, levels in strips), tiled with the tile ``auto_tile_size``
  picks when the free memory is the tiled VAE decode's measured peak (untiled when it fits), and the whole-level
  forward with kept skips (the order before the strips, training's) for reference.
  Runs interleaved (A B C A B C), ``--reps`` times; time = median [min, max].
* **Layout** (measured): the head in channels_last (weights and input) against the default layout, A B A B in one
  process, with the largest difference of their outputs.

Peak = how far the process's peak RSS rose during the call (weights, input and feature map were there before).

    python -m bench.head_memory              # 4096², about 15 min here
    python -m bench.head_memory --smoke      # 1024², 1 repetition, about 2 min
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.common import comfy_flux_vae, head_and_inputs  # noqa: E402
from bench.measure import MIB, Figure, PeakRise, interleaved, run_child, spread, write_figures  # noqa: E402

VARIANT, FEATURE_DIM, LATENT_CH, VAE_DOWN = "4k", 3840, 16, 8
VAE_TILE, VAE_OVERLAP = 512, 64  # VAEDecodeTiled's defaults (px)
HEAD_MODES = ("untiled", "auto tile", "whole levels")


def child_vae_tile(job: dict) -> dict:
    import torch

    torch.manual_seed(0)
    vae = comfy_flux_vae(LATENT_CH)
    side = VAE_TILE // VAE_DOWN
    with torch.no_grad():
        vae.first_stage_model.decode(torch.randn(1, LATENT_CH, 8, 8))  # warm-up
        z = torch.randn(1, LATENT_CH, side, side)
        start = time.perf_counter()
        with PeakRise() as peak:
            vae.first_stage_model.decode(z)
    return {"peak": peak.bytes, "seconds": time.perf_counter() - start, "latent_px": side * side}


def child_vae_tiled(job: dict) -> dict:
    """Core's decode_tiled with a stand-in decoder that holds the measured tile's activations."""
    import torch

    vae = comfy_flux_vae(LATENT_CH)
    per_latent_px = job["tile_peak"] / job["tile_latent_px"]
    calls = []

    def stand_in(z: torch.Tensor) -> torch.Tensor:
        out_shape = (z.shape[0], 3, z.shape[-2] * VAE_DOWN, z.shape[-1] * VAE_DOWN)
        hold = torch.ones(int(per_latent_px * z.shape[-2] * z.shape[-1]) // 4 - math.prod(out_shape))
        out = torch.zeros(out_shape)
        del hold
        calls.append(z.shape[-2] * z.shape[-1])
        return out

    vae.first_stage_model.decode = stand_in
    n = job["size"] // VAE_DOWN
    z = torch.randn(1, LATENT_CH, n, n)
    start = time.perf_counter()
    with torch.no_grad(), PeakRise() as peak:
        image = vae.decode_tiled(z, tile_x=VAE_TILE // VAE_DOWN, tile_y=VAE_TILE // VAE_DOWN,
                                 overlap=VAE_OVERLAP // VAE_DOWN)
    assert image.numel() == 3 * job["size"] ** 2, image.shape
    return {"peak": peak.bytes, "seconds": time.perf_counter() - start, "tiles": len(calls),
            "tile_equivalents": sum(calls) / job["tile_latent_px"]}


def child_head(job: dict) -> dict:
    import torch

    import l2p.head
    from l2p.head_tiling import run_head_tiled

    head, x, f = head_and_inputs(VARIANT, job["size"], FEATURE_DIM)
    if job["mode"] == "whole levels":  # the forward before strips and recomputed skips (training's order)
        l2p.head.stream_rows = lambda rows: rows
        l2p.head.RECOMPUTED_LEVELS = 0
    start = time.perf_counter()
    with torch.no_grad(), PeakRise() as peak:
        run_head_tiled(head, x, f, job["tile"] if job["mode"] == "auto tile" else 0)
    return {"peak": peak.bytes, "seconds": time.perf_counter() - start}


def child_layout(job: dict) -> dict:
    import torch

    head, x, f = head_and_inputs(VARIANT, job["size"], FEATURE_DIM)
    seconds: dict[str, list[float]] = {"default": [], "channels_last": []}
    outputs = {}
    for _, layout in interleaved(list(seconds), job["reps"]):
        cl = layout == "channels_last"
        head.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        xin = x.contiguous(memory_format=torch.channels_last) if cl else x
        start = time.perf_counter()
        with torch.no_grad():
            outputs[layout] = head(xin, f)
        seconds[layout].append(time.perf_counter() - start)
    diff = (outputs["channels_last"] - outputs["default"]).abs().max().item()
    return {"seconds": seconds, "max_diff": diff, "max_abs": outputs["default"].abs().max().item()}


CHILDREN = {"vae_tile": child_vae_tile, "vae_tiled": child_vae_tiled, "head": child_head, "layout": child_layout}


def child(job: dict) -> dict:
    return run_child([__file__, "--child", json.dumps(job)])


def fmt_time(values: list[float]) -> str:
    med, lo, hi = spread(values)
    return f"{med:.1f} [{lo:.1f}, {hi:.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096, help="image side (a multiple of 64)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of each head measurement")
    ap.add_argument("--smoke", action="store_true", help="1024², one repetition")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "head_memory.md"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(CHILDREN[job["kind"]](job)))
        return
    if args.smoke:
        args.size, args.reps = 1024, 1
    from l2p.head_tiling import auto_tile_size

    size, began = args.size, time.perf_counter()
    tile = child({"kind": "vae_tile"})
    print(f"VAE tile: {tile['peak'] / MIB:.0f} MiB, {tile['seconds']:.1f} s", flush=True)
    tiled = child({"kind": "vae_tiled", "size": size, "tile_peak": tile["peak"], "tile_latent_px": tile["latent_px"]})
    print(f"VAE tiled: {tiled['peak'] / MIB:.0f} MiB, {tiled['tiles']} tiles", flush=True)
    head_tile = auto_tile_size(VARIANT, size, size, 1, tiled["peak"], 4, FEATURE_DIM)
    runs: dict[str, list[dict]] = {mode: [] for mode in HEAD_MODES}
    for _, mode in interleaved(list(HEAD_MODES), args.reps):
        runs[mode].append(child({"kind": "head", "mode": mode, "size": size, "tile": head_tile}))
        print(f"head {mode}: {runs[mode][-1]['peak'] / MIB:.0f} MiB, {runs[mode][-1]['seconds']:.1f} s", flush=True)
    layout = child({"kind": "layout", "size": size, "reps": max(2, args.reps)})
    lines = table(size, tile, tiled, head_tile, runs, layout)
    seconds = time.perf_counter() - began
    lines.append(f"\nWhole run: {seconds / 60:.1f} min.")
    text = "\n".join(lines)
    print(text)
    if not args.smoke:
        pathlib.Path(args.out).write_text(text + "\n")
    write_figures("head_memory", figures(size, tile, tiled, runs, layout), seconds,
                  f"{size}², fp32, 2 threads, {args.reps} interleaved repetitions", args.smoke)


def figures(size: int, tile: dict, tiled: dict, runs: dict[str, list[dict]], layout: dict) -> list[Figure]:
    """The headline: the 4K head against the tiled decode (memory, time), against its old forward, and the layout."""
    untiled = runs["untiled"]
    head_time = [r["seconds"] for r in untiled]
    vae_time = tile["seconds"] * tiled["tile_equivalents"]
    time_vs_old = [r["seconds"] / o["seconds"] for r, o in zip(untiled, runs["whole levels"], strict=True)]
    cl = [d / c for d, c in zip(layout["seconds"]["default"], layout["seconds"]["channels_last"], strict=True)]
    where = f"4K head, {size}²"
    return [
        Figure(f"{where}: peak, untiled head / tiled VAE decode", max(r["peak"] for r in untiled) / tiled["peak"],
               "x", "measured"),
        Figure(f"{where}: peak of the untiled head", max(r["peak"] for r in untiled) / MIB, "MiB", "measured"),
        Figure(f"{where}: time, tiled VAE decode / untiled head", vae_time / spread(head_time)[0], "x",
               "extrapolated per tile", vae_time / max(head_time), vae_time / min(head_time), "min, max"),
        Figure.over(f"{where}: time, untiled head (strips) / the old whole-level forward", time_vs_old, "x",
                    "measured"),
        Figure.over(f"{where}: speed-up of channels_last (not used)", cl, "x", "measured"),
    ]


def table(size: int, tile: dict, tiled: dict, head_tile: int, runs: dict[str, list[dict]], layout: dict) -> list[str]:
    vae_peak = tiled["peak"]
    untiled = [r["seconds"] for r in runs["untiled"]]
    base = spread(untiled)[0]
    vae_seconds = tile["seconds"] * tiled["tile_equivalents"]
    lines = [f"# The 4K Detailer Head against ComfyUI's tiled VAE decode, {size}x{size}, fp32, this CPU (2 threads)",
             "", "`python -m bench.head_memory`. Peak = rise of the process's peak RSS during the call, one process "
             "per measurement; head times are median [min, max] of interleaved repetitions.", "",
             "| what | peak MiB | / tiled VAE | seconds | / untiled head | how |", "|---|---|---|---|---|---|",
             f"| VAE decode, one 512 px tile | {tile['peak'] / MIB:.0f} | {tile['peak'] / vae_peak:.2f} | "
             f"{tile['seconds']:.1f} | | measured |",
             f"| VAE decode tiled (VAEDecodeTiled defaults, {tiled['tiles']} tiles) | {vae_peak / MIB:.0f} | 1.00 | "
             f"{vae_seconds:.0f} | {vae_seconds / base:.1f} | peak measured with a stand-in decoder holding the "
             "tile's measured peak; time extrapolated (tiles x tile) |"]
    for mode in HEAD_MODES:
        peaks = [r["peak"] for r in runs[mode]]
        seconds = [r["seconds"] for r in runs[mode]]
        label = {"untiled": "head, untiled (outer skips recomputed, strips)",
                 "auto tile": "head, auto for that memory (" + (f"{head_tile} px tiles)" if head_tile else "untiled)"),
                 "whole levels": "head, untiled, whole levels and kept skips (before)"}[mode]
        lines.append(f"| {label} | {max(peaks) / MIB:.0f} | {max(peaks) / vae_peak:.2f} | {fmt_time(seconds)} | "
                     f"{spread(seconds)[0] / base:.2f} | measured |")
    cl, default = layout["seconds"]["channels_last"], layout["seconds"]["default"]
    lines += ["", f"Layout: channels_last {fmt_time(cl)} s against {fmt_time(default)} s "
              f"({spread(default)[0] / spread(cl)[0]:.2f}x), largest output difference {layout['max_diff']:.1e} on "
              f"outputs up to {layout['max_abs']:.2f} (measured, one process, A B A B)."]
    return lines


if __name__ == "__main__":
    main()
