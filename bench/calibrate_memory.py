"""Calibrate ComfyUI's memory estimate for L2P models: measured peak vs estimate at 512, 1024 and 2048.

Each size runs in its own process (peak RSS is per process): ComfyUI's NextDiT trunk at the real width
(dim 3840, 30 heads, caption width 2560) with a reduced depth (inference activations do not grow with depth:
blocks run one after another) plus the real 1K Detailer Head, fp32 on this CPU, batch 1, one model call.
The activation peak is the rise of the process's peak RSS over its peak after the weights were built.

ComfyUI reserves ``area * 0.15 * factor`` MB on this path and ``area * dtype_size * 0.01 * factor`` MB
with flash attention (typical GPUs, bf16); ``area`` = batch * H * W of the pixel latent. We need a factor
with the flash/bf16 estimate above the measured peak scaled to bf16 (half of fp32) at every size.

    python bench/calibrate_memory.py [--sizes 512 1024 2048] [--layers 1]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(size: int, layers: int) -> dict:
    sys.path.insert(0, str(REPO))
    import importlib

    import torch

    from harness.inprocess import import_pack
    from l2p.arch import ZIMAGE
    from l2p.format.layouts import L2PConfig

    model_mod = importlib.import_module(import_pack().__name__ + ".nodes.comfy_core")
    import comfy.ops

    cfg = L2PConfig(dim=3840, n_heads=30, n_layers=layers, n_noise_refiner=1, n_context_refiner=1, cap_feat_dim=2560,
                    patch_size=16, in_channels=3, ffn_hidden_dim=10240, t_embed_hidden=1024, adaln_dim=256,
                    head_variant="1k", axes_dims=ZIMAGE.axes_dims(3840 // 30))
    dit = model_mod.NextDiTL2P(**model_mod.unet_config_for(cfg), operations=comfy.ops.disable_weight_init)
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0, 0.02)
    x, sigma, cap = torch.randn(1, 3, size, size), torch.tensor([0.5]), torch.randn(1, 64, 2560)
    base = peak_mb()
    start = time.perf_counter()
    with torch.no_grad():
        dit(x, sigma, cap, 64)
    return {"size": size, "weights_peak_mb": base, "peak_mb": peak_mb(), "delta_mb": max(0.0, peak_mb() - base),
            "seconds": time.perf_counter() - start}


def estimates_mb(size: int, factor: float) -> tuple[float, float]:
    area = size * size
    return area * 0.15 * factor, area * 2 * 0.01 * factor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.layers)))
        return
    sys.path.insert(0, str(REPO))
    text = (REPO / "nodes" / "model.py").read_text()
    factor = float(text.split("MEMORY_USAGE_FACTOR = ")[1].split()[0])
    rows = []
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(size), "--layers", str(args.layers)],
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"MEMORY_USAGE_FACTOR = {factor}")
    print(f"{'size':>6} {'peak fp32 MB':>13} {'est. CPU MB':>12} {'ratio':>6} {'bf16 peak MB':>13} "
          f"{'est. flash MB':>14} {'ratio':>6} {'needs factor':>13} {'s':>6}")
    need = 0.0
    for r in rows:
        cpu_est, flash_est = estimates_mb(r["size"], factor)
        bf16 = r["delta_mb"] / 2
        f = bf16 / (r["size"] ** 2 * 2 * 0.01)
        need = max(need, f)
        print(f"{r['size']:>6} {r['delta_mb']:>13.0f} {cpu_est:>12.0f} {cpu_est / max(r['delta_mb'], 1):>6.2f} "
              f"{bf16:>13.0f} {flash_est:>14.0f} {flash_est / max(bf16, 1):>6.2f} {f:>13.4f} {r['seconds']:>6.1f}")
    print(f"smallest factor that never under-reserves (flash/bf16 path): {need:.4f}")


if __name__ == "__main__":
    main()
