"""Peak memory of converting a latent DiT: the streamed CLI vs loading everything and saving with safetensors.

Writes a synthetic latent Z-Image-shaped source (bf16, official names) of about ``--gb`` GB to a temp
folder, then converts it twice, each in a fresh process, side by side:

* streamed: ``python -m l2p.convert`` (lazy source, tensors written one at a time);
* naive: ``safetensors.torch.load_file`` -> ``latent_to_l2p`` -> ``safetensors.torch.save_file``;

each to the official layout (tensors copied as they are) and to ComfyUI's layout (q, k, v fused: new tensors).

It prints each process's peak anonymous memory (what it really holds) and peak total RSS (which also counts
the memory-mapped source's page cache) above a bare ``import torch`` process, as multiples of the source size.

    .venv/bin/python -m bench.convert_memory [--gb 0.8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from bench.measure import MIB, Figure, poll_peaks, write_figures
from l2p.format.tensor_io import PlannedTensor, write_safetensors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAIVE = (
    "import sys, safetensors.torch as st\n"
    "from l2p.convert import latent_to_l2p\n"
    "sd = latent_to_l2p(st.load_file(sys.argv[1]), layout=sys.argv[3])\n"
    "st.save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2])\n"
)


def synthetic_source(path: str, gb: float) -> int:
    """A latent Z-Image-shaped DiT (dim 2048) with as many blocks as fit in ``gb``; returns its byte size."""
    from l2p.tiny import zimage_trunk

    shape = {"in_channels": 16, "patch_size": 2, "dim": 2048, "n_refiner_layers": 1, "n_heads": 16,
             "cap_feat_dim": 1024, "device": "meta"}
    one = zimage_trunk(n_layers=1, **shape)
    per_block = sum(p.numel() for n, p in one.named_parameters() if n.startswith("layers.0.")) * 2
    n_layers = max(2, int(gb * 1e9 / per_block))
    dit = zimage_trunk(n_layers=n_layers, **shape)
    plan = [PlannedTensor(k, torch.empty(v.shape, dtype=torch.bfloat16, device="meta"),
                          lambda v=v: (torch.randn(v.shape) * 0.02).to(torch.bfloat16))
            for k, v in dit.state_dict().items()]
    write_safetensors(path, plan)
    return os.path.getsize(path)


def peaks_mib(args: list[str]) -> tuple[float, float]:
    """(peak anonymous RSS, peak total RSS) in MiB of ``python <args>`` (``bench.measure.poll_peaks``). Anonymous
    memory is what a conversion really holds; file-backed pages of a memory-mapped source are page cache the
    kernel drops under pressure, so they count in the total only."""
    anon, total, _ = poll_peaks(args, cwd=REPO)
    return anon / MIB, total / MIB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=0.8)
    ap.add_argument("--smoke", action="store_true", help="a 0.1 GB source; figures to bench/results/smoke")
    args = ap.parse_args()
    if args.smoke:
        args.gb = 0.1
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "source.safetensors")
        mb = synthetic_source(src, args.gb) / 2**20
        base = peaks_mib(["-c", "import torch, time; time.sleep(1)"])
        runs = {
            f"streamed (python -m l2p.convert), {layout} layout": peaks_mib(
                ["-m", "l2p.convert", "--source", src, "--out", os.path.join(tmp, f"s-{layout}.safetensors"),
                 "--layout", layout])
            for layout in ("official", "comfy")
        } | {
            f"naive load_file + save_file, {layout} layout": peaks_mib(
                ["-c", NAIVE, src, os.path.join(tmp, f"n-{layout}.safetensors"), layout])
            for layout in ("official", "comfy")
        }
    print(f"source: {mb:.0f} MiB (bf16); memory above a bare `import torch` process "
          f"(anonymous {base[0]:.0f} MiB, total {base[1]:.0f} MiB):")
    print("| conversion | peak anonymous | x source | peak total (incl. mapped file pages) | x source |")
    print("|---|---|---|---|---|")
    for name, (anon, total) in runs.items():
        a, t = anon - base[0], total - base[1]
        print(f"| {name} | {a:.0f} MiB | {a / mb:.2f} | {t:.0f} MiB | {t / mb:.2f} |")
    values = list(runs.values())
    figures = []
    for i, layout in enumerate(("official", "comfy")):
        ratio = (values[i][0] - base[0]) / max(values[i + 2][0] - base[0], 1)
        print(f"anonymous memory, streamed / naive, {layout} layout: {ratio:.2f}")
        figures += [Figure(f"converting a {mb:.0f} MiB bf16 source to the {layout} layout: peak anonymous memory, "
                           "streamed / load-all", ratio, "x", "measured"),
                    Figure(f"converting to the {layout} layout: streamed peak anonymous memory / source size",
                           (values[i][0] - base[0]) / mb, "x", "measured")]
    write_figures("convert_memory", figures, time.perf_counter() - began, f"{mb:.0f} MiB synthetic bf16 source, "
                  "one process per conversion", args.smoke)


if __name__ == "__main__":
    main()
