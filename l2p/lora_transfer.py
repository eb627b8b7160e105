"""A latent model's LoRA on the L2P model converted from it: which of its tensors can carry over.

An L2P model keeps its source's trunk; the blocks its policy froze are the source's own weights, unchanged,
so a LoRA trained on the latent source adapts them as it adapted the source. The blocks the policy trained,
and the pixel interface, have moved away from the source: a latent LoRA's delta there was computed for other
weights, and its latent-only parts (patch-2 embedder, final layer) have no counterpart at all. By default a
transfer keeps only the tensors on frozen weights; ``keep="all"`` keeps every tensor that has a target.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .format.lora import lora_base
from .policies import is_trainable, trained_blocks

LATENT_ONLY = re.compile(r"(?:^|[._])(?:all_)?(?:final_layer|x_embedder)(?:[._]2-1)?(?:[._]|$)")
KEEP = ("frozen", "all")


@dataclass
class Transfer:
    kept: list[str] = field(default_factory=list)  # LoRA tensor names applied
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason -> LoRA tensor names
    kept_weights: set[str] = field(default_factory=set)  # the model weights (ComfyUI names) they adapt

    def report(self, policy: str) -> str:
        """One line: what was kept (by block) and what was dropped, by reason."""
        parts = [f"kept {len(self.kept)} LoRA tensors on {_blocks(self.kept_weights) or 'nothing'}"]
        parts += [f"dropped {len(names)} ({why})" for why, names in self.dropped.items()]
        return f"latent LoRA on an L2P model ({policy} policy): " + "; ".join(parts)


def select(lora_keys: Iterable[str], key_map: Mapping[str, object], policy: str, n_layers: int,
           keep: str = "frozen") -> Transfer:
    """Split a latent LoRA's tensors into those to apply and those to drop, with the reason for each group.

    ``key_map``: LoRA base name -> model weight (``diffusion_model.`` + ComfyUI name, or (name, slice)), as the
    model's LoRA key map gives it; ``policy``: the model's trainable-set policy (its ``l2p.policy``)."""
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {', '.join(KEEP)}, not {keep!r}")
    blocks = trained_blocks(policy, n_layers)
    out = Transfer()
    for key in sorted(lora_keys):
        base = lora_base(key)
        target = key_map.get(base)
        if target is None:
            why = "latent-only: no L2P counterpart" if LATENT_ONLY.search(base) else "matches no weight"
            out.dropped.setdefault(why, []).append(key)
            continue
        weight = (target[0] if isinstance(target, tuple) else target).removeprefix("diffusion_model.")
        if weight.startswith(("local_decoder.", "x_embedder.")):
            out.dropped.setdefault("L2P's own pixel interface", []).append(key)
        elif keep == "frozen" and is_trainable(weight, policy, blocks):
            out.dropped.setdefault(f"trained by the {policy} policy", []).append(key)
        else:
            out.kept.append(key)
            out.kept_weights.add(weight)
    return out


def _blocks(weights: Iterable[str]) -> str:
    """``layers.1-2, noise_refiner.0``: the blocks (as ranges) that ``weights`` belong to."""
    groups: dict[str, set[int]] = {}
    other: set[str] = set()
    for w in weights:
        m = re.match(r"^(layers|noise_refiner|context_refiner)\.(\d+)\.", w)
        if m:
            groups.setdefault(m.group(1), set()).add(int(m.group(2)))
        else:
            other.add(w.split(".", 1)[0])
    out = []
    for name, idx in sorted(groups.items()):
        runs, start = [], None
        ordered = sorted(idx)
        for i, n in enumerate(ordered):
            if start is None:
                start = n
            if i + 1 == len(ordered) or ordered[i + 1] != n + 1:
                runs.append(f"{start}" if start == n else f"{start}-{n}")
                start = None
        out.append(f"{name}.{','.join(runs)}")
    return ", ".join(out + sorted(other))
