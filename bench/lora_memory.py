"""Memory of a LoRA training step of the real 6B L2P model: counted where it is arithmetic, measured where it can
be on this CPU, extrapolated where it cannot (no GPU, no 6B weights here).

Counted exactly, from the real architecture on the meta device (dim 3840, 30 blocks, 2 + 2 refiners, caption
2560, the 1K head): all parameters; the trainable set of ``network = "lora"`` at rank R (adapters on every
linear layer of every block; head and pixel embedder whole); its fp32 weights, gradients and AdamW moments
(16 bytes a parameter); the frozen weights stored as fp32, bf16 or fp8 (4, 2, 1 bytes).

Measured: the activation peak of one training step (forward, loss, backward, AdamW step) on this CPU, fp32,
batch 1, at the real width with 1 and 2 main blocks (real refiners and head), with and without gradient
checkpointing, at two image sizes. Each run is its own process; the activation peak is the rise of its peak
RSS over the peak after the model and optimizer state were built. The step at 2 blocks minus 1 block is one
block's share; activations grow with tokens, so the 1024x1024 figure is scaled from the two measured sizes
(the scaling is linear when the attention kernel does not keep the token x token matrix, which the two sizes
check). Activations in bf16 (autocast on a GPU) are taken as half of fp32.

    OMP_NUM_THREADS=2 python bench/lora_memory.py [--rank 16] [--sizes 384 512]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
GIB = 2**30
REAL = {"dim": 3840, "n_layers": 30, "n_refiner_layers": 2, "n_heads": 30, "cap_feat_dim": 2560}
CAPTION_TOKENS = 128
sys.path.insert(0, str(REPO))  # run as a script: the pack's packages
from bench.measure import vm_status  # noqa: E402  (VmHWM: ru_maxrss carries over from the parent)


def build(n_layers: int, rank: int, device: str | None):
    from l2p.head import build_head
    from l2p.pixel_dit import PixelDiT
    from l2p.tiny import official_trunk
    from training.lora import add_lora, target_modules

    cfg = {**REAL, "n_layers": n_layers}
    model = PixelDiT(official_trunk(**cfg, device=device), build_head("1k", REAL["dim"], device=device),
                     head_variant="1k")
    add_lora(model, target_modules(model, "all", "all", n_layers), rank, float(rank), 0.0,
             "local_decoder,all_x_embedder")
    return model


def counted(rank: int) -> dict:
    """Exact parameter and byte counts of the real model (meta tensors: nothing is allocated)."""
    model = build(REAL["n_layers"], rank, "meta")
    adapters = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for n, p in model.named_parameters() if ".lora_" not in n)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"total": total, "adapters": adapters, "trained": trained, "frozen": frozen,
            "training_state_bytes": trained * 16, "frozen_bytes": {"fp32": frozen * 4, "bf16": frozen * 2,
                                                                  "fp8": frozen * 1}}


def network_table(ranks: tuple[int, ...] = (16, 64), activations_gib: float = 3.9) -> list[str]:
    """Every way to train the real model, counted exactly: what trains, its training state, the frozen weights
    in bf16 and fp8, and a 1K step's total with ``activations_gib`` (bf16, gradient checkpointing: the figure the
    measurement below extrapolates, plus the checkpointed block inputs) added. Full and policy runs keep their
    trained weights fp32 too."""
    from l2p.pixel_dit import official_names
    from l2p.policies import trainable_names

    rows = ["| network | trained parameters | share | training state GiB | frozen bf16 GiB | frozen fp8 GiB "
            "| 1K step, bf16 frozen, GiB | 1K step, fp8 frozen, GiB |", "|---|---|---|---|---|---|---|---|"]
    model = build(REAL["n_layers"], ranks[0], "meta")
    names = official_names(model)
    base = {names[n]: p.numel() for n, p in model.named_parameters() if ".lora_" not in n}
    total = sum(base.values())
    choices: list[tuple[str, int, int]] = [("full fine-tune", total, 0)]
    for policy in ("official", "paper"):
        trained = sum(base[n] for n in trainable_names(base, policy, REAL["n_layers"]))
        choices.append((f"{policy} policy", trained, total - trained))
    for rank in ranks:
        c = counted(rank)
        choices.append((f"LoRA rank {rank} (+ head, embedder)", c["trained"], c["frozen"]))
    for label, trained, frozen in choices:
        state = trained * 16
        row = [label, f"{trained:,}", f"{100 * trained / total:.2f}%", f"{state / GIB:.2f}",
               f"{frozen * 2 / GIB:.1f}", f"{frozen / GIB:.1f}",
               f"{(state + frozen * 2) / GIB + activations_gib:.1f}", f"{(state + frozen) / GIB + activations_gib:.1f}"]
        rows.append("| " + " | ".join(row) + " |")
    return rows


def measure(n_layers: int, size: int, checkpointing: bool, rank: int) -> dict:
    import torch

    torch.manual_seed(0)
    model = build(n_layers, rank, None)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    if checkpointing:
        model.trunk.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    for p in params:  # AdamW's moments exist before the step, so the baseline holds them
        opt.state[p]["step"] = torch.tensor(0.0)
        opt.state[p]["exp_avg"] = torch.zeros_like(p)
        opt.state[p]["exp_avg_sq"] = torch.zeros_like(p)
    x = torch.randn(1, 3, size, size)
    cap = torch.randn(CAPTION_TOKENS, REAL["cap_feat_dim"])
    base = vm_status()["VmHWM"]
    start = time.perf_counter()
    pred = model(x, torch.tensor([0.5]), [cap])
    loss = (pred - x).square().mean()
    loss.backward()
    opt.step()
    return {"layers": n_layers, "size": size, "checkpointing": checkpointing, "baseline_bytes": base,
            "activation_bytes": max(0.0, vm_status()["VmHWM"] - base), "seconds": time.perf_counter() - start}


def run_one(layers: int, size: int, checkpointing: bool, rank: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps([layers, size, checkpointing, rank])],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--sizes", type=int, nargs=2, default=[384, 512])
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--count-only", action="store_true",
                    help="only the exact counts of every network (full, official, paper, LoRA ranks 16 and 64)")
    ap.add_argument("--activations-gib", type=float, default=3.9,
                    help="a 1K step's bf16 activations with checkpointing plus the stored block inputs, for the totals "
                         "(default: %(default)s = 3.0 + 0.9, bench/results/lora_memory.md)")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(*json.loads(args.one))))
        return
    print("\n".join(network_table(activations_gib=args.activations_gib)))
    if args.count_only:
        return
    c = counted(args.rank)
    print(f"real model: {c['total']:,} parameters; LoRA rank {args.rank}: {c['adapters']:,} adapter parameters, "
          f"{c['trained']:,} trained with the head and embedder ({100 * c['trained'] / c['total']:.2f}%)")
    print(f"training state (fp32 weights + gradients + AdamW moments): {c['training_state_bytes'] / GIB:.2f} GiB")
    print("frozen weights: " + ", ".join(f"{k} {v / GIB:.1f} GiB" for k, v in c["frozen_bytes"].items()))
    rows = []
    for checkpointing in (False, True):
        for size in args.sizes:
            for layers in (1, 2):
                row = run_one(layers, size, checkpointing, args.rank)
                rows.append(row)
                print(f"  measured: {layers} block(s), {size}x{size}, checkpointing {checkpointing}: activations "
                      f"{row['activation_bytes'] / GIB:.2f} GiB fp32 ({row['seconds']:.0f} s)", flush=True)
    tokens = {s: (s // 16) ** 2 + CAPTION_TOKENS for s in [*args.sizes, 1024]}
    print(f"\n1024x1024 step, batch 1, 30 blocks, activations in bf16 (half of fp32), {tokens[1024]} tokens:")
    print("| frozen weights | checkpointing | activations GiB | training state GiB | weights GiB | total GiB |")
    print("|---|---|---|---|---|---|")
    for checkpointing in (False, True):
        act = {}
        for size in args.sizes:
            one, two = (next(r for r in rows if (r["layers"], r["size"], r["checkpointing"]) == (n, size,
                                                                                                  checkpointing))
                        for n in (1, 2))
            per_block = max(0.0, two["activation_bytes"] - one["activation_bytes"])
            act[size] = one["activation_bytes"] + per_block * (REAL["n_layers"] - 1)
        lo, hi = args.sizes
        slope = (act[hi] - act[lo]) / (tokens[hi] - tokens[lo])
        at_1k = act[hi] + slope * (tokens[1024] - tokens[hi])
        per_token = {s: act[s] / tokens[s] for s in args.sizes}
        for dtype, weights in c["frozen_bytes"].items():
            total = at_1k / 2 + c["training_state_bytes"] + weights
            print(f"| {dtype} | {'on' if checkpointing else 'off'} | {at_1k / 2 / GIB:.1f} | "
                  f"{c['training_state_bytes'] / GIB:.2f} | {weights / GIB:.1f} | {total / GIB:.1f} |")
        print(f"(checkpointing {'on' if checkpointing else 'off'}: fp32 activations per token at the two sizes "
              + ", ".join(f"{s}: {v / 2**20:.2f} MiB" for s, v in per_token.items()) + ")")


if __name__ == "__main__":
    main()
