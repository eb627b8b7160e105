"""Step time and memory of the trainable-set policies against a full fine-tune, side by side in one run.

A Z-Image-architecture L2P model with the real block count (30 main blocks, 2 + 2 refiners) at a small
width (dim 256) trains for a few AdamW steps on 256x256 images (batch 2) under each policy: ``paper``
(input projection, first and last block, head), ``official`` (frozen middle 20 blocks) and ``full``
(everything). Each runs in a fresh process; peak anonymous memory is polled from /proc (see
``bench/convert_memory.py``). Frozen parameters get no gradients and no optimizer state, which is where
the savings come from; activations of frozen blocks are still needed for the trainable ones below them.

    .venv/bin/python -m bench.policy_cost [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import time

from bench.convert_memory import peaks_mib

CHILD = r"""
import json, sys, time, torch
from l2p.pixel_dit import PixelDiT
from l2p.policies import trainable_names
from l2p.tiny import tiny_l2p
torch.manual_seed(0)
torch.set_num_threads(2)
policy, steps = sys.argv[1], int(sys.argv[2])
trunk, head = tiny_l2p(seed=0, n_layers=30, n_refiner_layers=2)
model = PixelDiT(trunk, head)
names = {n: n.removeprefix("trunk.") for n, _ in model.named_parameters()}
chosen = set(names.values()) if policy == "full" else trainable_names(names.values(), policy, 30)
for n, p in model.named_parameters():
    p.requires_grad_(names[n] in chosen)
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-5)
x0, cap = torch.rand(2, 3, 256, 256) * 2 - 1, [torch.randn(16, 64) for _ in range(2)]
times = []
for step in range(steps + 1):
    t = time.perf_counter()
    noise, sigma = torch.randn_like(x0), torch.rand(2)
    s = sigma.view(-1, 1, 1, 1)
    loss = torch.nn.functional.mse_loss(model((1 - s) * x0 + s * noise, sigma, cap), noise - x0)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - t)
print(json.dumps({"trainable": sum(p.numel() for p in params), "total": sum(p.numel() for p in model.parameters()),
                  "step_s": sum(times[1:]) / steps}))
"""


def run(policy: str, steps: int) -> dict:
    anon, _, stdout = peaks_mib(["-c", CHILD, policy, str(steps)])
    return {**json.loads(stdout.strip().splitlines()[-1]), "anon_mib": anon}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    start = time.monotonic()
    rows = {p: run(p, args.steps) for p in ("paper", "official", "full")}
    full = rows["full"]
    print(f"dim 256, 30 blocks, 2+2 refiners, 256x256, batch 2, AdamW, mean of {args.steps} steps after a warm-up")
    print("| policy | trainable | share | step time | x full | peak anonymous memory | x full |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        share, t_ratio = r["trainable"] / r["total"], r["step_s"] / full["step_s"]
        m_ratio = r["anon_mib"] / full["anon_mib"]
        print(f"| {name} | {r['trainable']:,} | {share:.1%} | {r['step_s']:.2f} s | {t_ratio:.2f} | "
              f"{r['anon_mib']:.0f} MiB | {m_ratio:.2f} |")
    print(f"(ran in {time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main()
