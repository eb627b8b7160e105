"""ComfyUI's memory estimate for L2P models against the measured peak, per attention backend, size, batch and head.

Each case runs in its own process (peak RSS is per process): core's NextDiT trunk with the pack's head, built by
the pack's seam module, at the real width (dim 3840, 30 heads, caption width 2560, FFN 10240) with reduced depth
(one main block and one of each refiner: inference runs blocks one after another, so the peak does not grow with
depth), random weights, fp32 on this CPU, one model call. Measured = the rise of the process's peak RSS over its
peak after the weights, the input and the caption were built.

The attention backend is chosen per call through core's ``optimized_attention_override`` (both cores):
``linear`` runs core's ``attention_pytorch`` without a mask (every token is real here), so PyTorch takes its CPU
flash kernel: memory linear in tokens, as flash/xformers/sage/SDPA are on a GPU; ``sub_quad`` runs core's
``attention_sub_quad`` (its default where PyTorch attention is off: CPU, Apple MPS, most AMD).
Estimate = ``L2PModel.memory_required`` (``l2p.head_tiling.sampling_memory``) for the same shape, dtype, caption,
backend and free memory; core's own formulas (flash: ``area * dtype * 0.01 * factor``, else ``area * 0.15 * factor``
MB) are printed beside it.

    OMP_NUM_THREADS=2 python bench/calibrate_memory.py                       # real width, ~15 min here
    python bench/calibrate_memory.py --dim 256 --heads 4 --cap-dim 64 --ffn 683 --sizes 256 512 1024   # toy
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.measure import Figure, run_child, vm_status, write_figures  # noqa: E402

BACKENDS = {"linear": "attention_pytorch", "sub_quad": "attention_sub_quad"}
CAP_TOKENS = 128
MB = 2**20


def measure(case: dict) -> dict:
    """One model call in this process: the measured activation peak and the pack's estimate for it."""
    sys.path.insert(0, str(REPO))
    import importlib

    import torch

    from harness.inprocess import import_pack
    from l2p.arch import ZIMAGE
    from l2p.format.layouts import L2PConfig

    core = importlib.import_module(import_pack().__name__ + ".nodes.comfy_core")
    import comfy.ldm.modules.attention as attention
    import comfy.model_management
    import comfy.ops

    torch.manual_seed(0)
    dim, heads = case["dim"], case["heads"]
    patch = {"1k": 16, "4k": 64}[case["variant"]]
    cfg = L2PConfig(dim=dim, n_heads=heads, n_layers=1, n_noise_refiner=1, n_context_refiner=1,
                    cap_feat_dim=case["cap_dim"], patch_size=patch, in_channels=3, ffn_hidden_dim=case["ffn"],
                    t_embed_hidden=1024, adaln_dim=256, head_variant=case["variant"],
                    axes_dims=ZIMAGE.axes_dims(dim // heads))
    dit = core.NextDiTL2P(**core.unet_config_for(cfg), operations=comfy.ops.disable_weight_init)
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.02)
    batch, size = case["batch"], case["size"]
    x, sigma = torch.randn(batch, 3, size, size), torch.full((batch,), 0.5)
    cap = torch.randn(batch, CAP_TOKENS, case["cap_dim"])
    backend = getattr(attention, BACKENDS[case["backend"]])

    def override(func, *args, **kwargs):
        if case["backend"] == "linear":  # PyTorch's CPU flash kernel, memory-linear like a GPU's, takes no mask;
            args = args[:4] + (None,) + args[5:] if len(args) > 4 else args  # every token is real here (no
            kwargs = {**kwargs, "mask": None} if "mask" in kwargs else kwargs  # padding), so none is lost
        return backend(*args, **kwargs)

    options = {"optimized_attention_override": override, core.HEAD_TILE: case["tile"]}
    free = int(comfy.model_management.get_free_memory(x.device))
    estimate = core.call_memory(dit, x.shape, x.element_size(), CAP_TOKENS, free, case["tile"], case["backend"])
    base = vm_status()["VmHWM"]  # /proc's high-water mark starts afresh at exec (getrusage's does not)
    start = time.perf_counter()
    with torch.no_grad():
        dit(x, sigma, cap, CAP_TOKENS, transformer_options=options)
    return {**case, "measured": max(0.0, vm_status()["VmHWM"] - base), "estimate": estimate.total, "free": free,
            "trunk": estimate.trunk, "head": estimate.head, "images": estimate.images,
            "seconds": time.perf_counter() - start}


def run_case(case: dict, timeout: float | None = None) -> dict:
    """``measure(case)`` in a fresh process (``bench.measure.run_child``: peak RSS = peak of live memory)."""
    return run_child([__file__, "--one", json.dumps(case)], timeout=timeout)


def core_estimates(case: dict, factor: float, dtype_bytes: int = 2) -> tuple[float, float]:
    """Core's two formulas (bytes) for this call with batch*2 for CFG left out: flash at ``dtype_bytes``, else."""
    area = case["batch"] * case["size"] ** 2
    return area * dtype_bytes * 0.01 * factor * MB, area * 0.15 * factor * MB


def cases(args: argparse.Namespace) -> list[dict]:
    out = []
    shape = {"dim": args.dim, "heads": args.heads, "cap_dim": args.cap_dim, "ffn": args.ffn}
    for variant, sizes in (("1k", args.sizes), ("4k", args.sizes_4k)):
        for size in sizes:
            for batch in args.batches:
                for backend in args.backends:
                    out.append({**shape, "variant": variant, "size": size, "batch": batch, "backend": backend,
                                "tile": 0 if variant == "1k" else "auto"})
    return out


def table(rows: list[dict], factor: float) -> list[str]:
    lines = ["| head | size | batch | backend | measured MiB | estimate MiB | estimate / measured | core's formula MiB "
             "| core / measured | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        flash, other = core_estimates(r, factor, 4)
        core = flash if r["backend"] == "linear" else other
        lines.append(f"| {r['variant']} | {r['size']} | {r['batch']} | {r['backend']} | {r['measured'] / MB:.0f} | "
                     f"{r['estimate'] / MB:.0f} | {r['estimate'] / max(r['measured'], 1):.2f} | {core / MB:.0f} | "
                     f"{core / max(r['measured'], 1):.2f} | {r['seconds']:.0f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[512, 1024, 2048], help="1K head sizes")
    ap.add_argument("--sizes-4k", type=int, nargs="*", default=[2048, 4096], help="4K head sizes (auto tile)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    ap.add_argument("--dim", type=int, default=3840)
    ap.add_argument("--heads", type=int, default=30)
    ap.add_argument("--cap-dim", type=int, default=2560)
    ap.add_argument("--ffn", type=int, default=10240)
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--test-width", action="store_true",
                    help="the test's width and cases: dim 768, 12 heads, caption 64, FFN 2048; 512, 1024, 4K at 2048")
    ap.add_argument("--smoke", action="store_true", help="dim 256, 256 and 512 px, batch 1 (seconds)")
    args = ap.parse_args()
    if args.test_width:
        args.dim, args.heads, args.cap_dim, args.ffn, args.sizes, args.sizes_4k = 768, 12, 64, 2048, [512, 1024], [2048]
    if args.smoke:
        args.dim, args.heads, args.cap_dim, args.ffn, args.sizes, args.sizes_4k = 256, 4, 64, 683, [256, 512], [1024]
        args.batches = [1]
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
        return
    sys.path.insert(0, str(REPO))
    text = (REPO / "nodes" / "comfy_core.py").read_text()
    factor = float(text.split("MEMORY_USAGE_FACTOR = ")[1].split()[0])
    rows, began = [], time.perf_counter()
    for case in cases(args):
        rows.append(run_case(case))
        print(table(rows[-1:], factor)[-1], flush=True)
    print("\n".join(table(rows, factor)))
    ratios = [r["estimate"] / max(r["measured"], 1) for r in rows]
    print(f"estimate / measured: {min(ratios):.2f} .. {max(ratios):.2f} over {len(rows)} cases (goal 0.90 .. 1.50)")
    core = [core_estimates(r, factor, 4)[r["backend"] != "linear"] / max(r["measured"], 1) for r in rows]
    where = f"width {args.dim}, {len(rows)} cases"
    figures = [Figure(f"memory estimate / measured peak, {where}", statistics.median(ratios), "x", "measured",
                      min(ratios), max(ratios), "median; min, max over cases"),
               Figure(f"core's own formula / measured peak, {where}", statistics.median(core), "x", "measured",
                      min(core), max(core), "median; min, max over cases")]
    name = "calibrate_memory" if args.dim == 3840 else f"calibrate_memory_w{args.dim}"
    write_figures(name, figures, time.perf_counter() - began, f"{where}, fp32, one process per case", args.smoke)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
