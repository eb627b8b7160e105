"""Training step time of the trainable-set policies against a full fine-tune, at Z-Image's width, per block.

A policy's step is a sum of block costs: a block whose weights train runs forward, backward with weight
gradients and its AdamW update; a frozen block below a trainable parameter (every main block: the pixel
embedder trains) runs forward and a backward for its input only; a block with nothing trainable below it
(the caption refiners when the caption embedder is frozen) runs forward only. So this bench measures those
block kinds at the real width (dim 3840, 30 heads, FFN 10240; diffusers' ``ZImageTransformerBlock``) on a
1024² image's tokens (4096 + a 128-token caption), and the 1K Detailer Head's training step at 1024², in one
process, interleaved (A B C ... A B C), ``--reps`` times, threads pinned; then composes each policy from
``l2p.policies`` over the real block list (30 main, 2 noise and 2 caption refiners): **extrapolated per
block**. With gradient checkpointing each block that runs backward runs its forward once more (extrapolated
from the measured forward). Ratios are computed per repetition and reported as median [min, max].
Memory is counted, not measured: trainable parameters x 12 bytes (float32 gradient and two AdamW moments).

    python -m bench.policy_cost              # about 8 min here
    python -m bench.policy_cost --smoke      # dim 256, seconds
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from dataclasses import dataclass

import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.measure import Figure, interleaved, spread, write_figures  # noqa: E402
from l2p.policies import POLICIES, trainable_names  # noqa: E402

GIB = 2**30
N_LAYERS, N_REFINERS = 30, 2


@dataclass(frozen=True)
class Width:
    dim: int = 3840
    heads: int = 30
    image_tokens: int = 4096
    caption_tokens: int = 128
    image: int = 1024

    @staticmethod
    def smoke() -> Width:
        return Width(dim=256, heads=4, image_tokens=256, caption_tokens=32, image=256)


def make_block(width: Width, modulation: bool) -> torch.nn.Module:
    from diffusers.models.transformers.transformer_z_image import ZImageTransformerBlock

    return ZImageTransformerBlock(0, width.dim, width.heads, width.heads, 1e-5, True, modulation=modulation)


def block_inputs(width: Width, tokens: int) -> dict[str, torch.Tensor]:
    half = width.dim // width.heads // 2
    freqs = torch.polar(torch.ones(1, tokens, half), torch.rand(1, tokens, half) * 6.28)
    return {"x": torch.randn(1, tokens, width.dim) * 0.5, "attn_mask": torch.ones(1, tokens, dtype=torch.bool),
            "freqs_cis": freqs, "adaln_input": torch.randn(1, min(width.dim, 256))}


def time_block(block: torch.nn.Module, inputs: dict, kind: str, modulation: bool) -> float:
    """One step of ``kind``: "train" (weights train), "grad" (input gradient only) or "forward"."""
    for p in block.parameters():
        p.requires_grad_(kind == "train")
    args = {k: v for k, v in inputs.items() if modulation or k != "adaln_input"}
    x = args["x"].detach().requires_grad_(kind != "forward")
    args["x"] = x
    start = time.perf_counter()
    if kind == "forward":
        with torch.no_grad():
            block(**args)
    else:
        out = block(**args)
        out.backward(torch.ones_like(out))
        if kind == "train":
            block.optimizer.step()
            block.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def time_head(head: torch.nn.Module, optimizer, width: Width) -> float:
    x = torch.randn(1, 3, width.image, width.image)
    features = torch.randn(1, width.dim, width.image // 16, width.image // 16)
    start = time.perf_counter()
    out = head(x, features)
    out.backward(torch.ones_like(out))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def block_kinds(policy: str) -> dict[str, int]:
    """How many blocks of each measured kind a step under ``policy`` runs (main and noise refiners see the image
    tokens, caption refiners the caption's)."""
    names = ([f"layers.{i}.w" for i in range(N_LAYERS)] + [f"noise_refiner.{i}.w" for i in range(N_REFINERS)]
             + [f"context_refiner.{i}.w" for i in range(N_REFINERS)] + ["cap_embedder.1.weight"])
    trained = names if policy == "full" else trainable_names(names, policy, N_LAYERS)
    count = {"image train": 0, "image grad": 0, "caption train": 0, "caption grad": 0, "caption forward": 0}
    for name in names[:-1]:
        side = "caption" if name.startswith("context_refiner") else "image"
        if name in trained:
            count[f"{side} train"] += 1
        elif side == "image" or "cap_embedder.1.weight" in trained:
            count[f"{side} grad"] += 1  # a trainable parameter sits below it
        else:
            count[f"{side} forward"] += 1
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "policy_cost.md"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    width = Width.smoke() if args.smoke else Width()
    from l2p.head import build_head

    blocks = {"image": make_block(width, True), "caption": make_block(width, False)}
    for block in blocks.values():
        block.optimizer = torch.optim.AdamW(block.parameters(), lr=1e-5)
    inputs = {"image": block_inputs(width, width.image_tokens + width.caption_tokens),
              "caption": block_inputs(width, width.caption_tokens)}
    head = build_head("1k", width.dim)
    head_opt = torch.optim.AdamW(head.parameters(), lr=1e-5)
    parts = [f"{side} {kind}" for side in ("image", "caption") for kind in ("train", "grad", "forward")] + ["head"]
    began = time.perf_counter()
    for part in parts:  # warm-up: allocator, kernels, AdamW state
        time_part(part, blocks, inputs, head, head_opt, width)
    seconds: dict[str, list[float]] = {part: [] for part in parts}
    for _, part in interleaved(parts, args.reps):
        seconds[part].append(time_part(part, blocks, inputs, head, head_opt, width))
    lines = report(width, seconds, blocks, head, args.reps)
    took = time.perf_counter() - began
    lines.append(f"\nWhole run: {took / 60:.1f} min.")
    text = "\n".join(lines)
    print(text)
    if not args.smoke:
        pathlib.Path(args.out).write_text(text + "\n")
    figures = [Figure.over(f"training step, {policy} policy / full fine-tune" + (", both checkpointed" * ckpt),
                           step_ratios(seconds, policy, ckpt), "x", "extrapolated per block")
               for policy in POLICIES for ckpt in (False, True)]
    write_figures("policy_cost", figures, took, f"dim {width.dim}, {width.image}² image, fp32, 2 threads, "
                  f"{args.reps} interleaved repetitions", args.smoke)


def time_part(part: str, blocks: dict, inputs: dict, head, head_opt, width: Width) -> float:
    if part == "head":
        return time_head(head, head_opt, width)
    side, kind = part.split()
    return time_block(blocks[side], inputs[side], kind, side == "image")


def step_seconds(seconds: dict[str, list[float]], policy: str, rep: int, checkpointing: bool) -> float:
    """One training step under ``policy`` in repetition ``rep``, composed from the measured block kinds."""
    total = seconds["head"][rep]
    for kind, n in block_kinds(policy).items():
        side, what = kind.split()
        total += n * seconds[kind][rep]
        if checkpointing and what != "forward":
            total += n * seconds[f"{side} forward"][rep]
    return total


def step_ratios(seconds: dict[str, list[float]], policy: str, checkpointing: bool) -> list[float]:
    """Per repetition: a step under ``policy`` / a full fine-tune's step (both with or without checkpointing)."""
    return [step_seconds(seconds, policy, r, checkpointing) / step_seconds(seconds, "full", r, checkpointing)
            for r in range(len(seconds["head"]))]


def report(width: Width, seconds: dict[str, list[float]], blocks: dict, head, reps: int) -> list[str]:
    per_block = {"image": sum(p.numel() for p in blocks["image"].parameters()),
                 "caption": sum(p.numel() for p in blocks["caption"].parameters())}
    head_params = sum(p.numel() for p in head.parameters())

    def trainable(policy: str) -> int:
        counts = block_kinds(policy)
        return (counts["image train"] * per_block["image"] + counts["caption train"] * per_block["caption"]
                + head_params)

    lines = ["# Trainable-set policies against a full fine-tune (`python -m bench.policy_cost`)", "",
             f"Width {width.dim}, {width.heads} heads; a {width.image}² image ({width.image_tokens} tokens) and a "
             f"{width.caption_tokens}-token caption; float32, this CPU, 2 threads; {reps} interleaved repetitions. "
             "Block kinds measured; policies **extrapolated per block** over 30 main blocks, 2 noise and 2 caption "
             "refiners and the head (embedders and the final norm left out); gradient checkpointing adds one "
             "measured forward per block that runs backward (extrapolated); memory counted.", "",
             "| measured part | seconds, median [min, max] |", "|---|---|"]
    for part, values in seconds.items():
        med, lo, hi = spread(values)
        lines.append(f"| {part} | {med:.2f} [{lo:.2f}, {hi:.2f}] |")
    lines += ["", "| policy | trainable blocks (image side + caption) | trainable parameters | step / full | "
              "with checkpointing / full (checkpointed) | gradient + AdamW state |", "|---|---|---|---|---|---|"]
    full = trainable("full")
    for policy in (*POLICIES, "full"):
        counts = block_kinds(policy)
        med, lo, hi = spread(step_ratios(seconds, policy, False))
        cmed, clo, chi = spread(step_ratios(seconds, policy, True))
        n = trainable(policy)
        lines.append(f"| {policy} | {counts['image train']} + {counts['caption train']} | {n / 1e6:,.0f}M "
                     f"({n / full:.0%}) | {med:.2f} [{lo:.2f}, {hi:.2f}] | {cmed:.2f} [{clo:.2f}, {chi:.2f}] | "
                     f"{n * 12 / GIB:.1f} GiB |")
    return lines


if __name__ == "__main__":
    main()
