"""LoRA training (``network = "lora"``): peft adapters on the trunk, the pixel interface trained fully, two exports.

peft (the library diffusers trains LoRAs with) wraps the chosen linear layers of the chosen blocks; every
trunk weight stays frozen. The parts named by ``lora_full`` (by default the Detailer Head and the pixel
embedder, which a converted model must still learn) train whole, as in full training. The run exports:

- ``<export_name>-lora.safetensors``: the LoRA file, peft names under ``diffusion_model.`` (the layout
  ai-toolkit writes for L2P), ``.alpha`` per module, and the fully trained parts as ``.diff`` / ``.diff_b``
  (their change from the base), so the stock LoraLoaderModelOnly applies all of it to the base model;
- ``<export_name>.safetensors``: the merged model (base + scale * B @ A, and the fully trained parts), an L2P
  checkpoint like a full fine-tune's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from l2p.policies import parse_ranges

LORA_A, LORA_B = re.compile(r"^(.+)\.lora_A\.default\.weight$"), re.compile(r"^(.+)\.lora_B\.default\.weight$")
FILE_PREFIX = "diffusion_model."
ALL_LINEARS = ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0", "feed_forward.w1",
               "feed_forward.w2", "feed_forward.w3")  # lora_modules = "all"


def target_modules(model: torch.nn.Module, blocks: str, modules: str, n_layers: int) -> list[str]:
    """Names (in ``model.trunk``) of the linear layers to adapt: ``modules`` (``all``: ``ALL_LINEARS``, or
    comma-separated names inside a block, e.g. ``attention.to_q``) of the main blocks in ``blocks`` (``all`` or
    ranges like ``0-4,-5--1``)."""
    chosen = set(range(n_layers)) if blocks.strip() == "all" else parse_ranges(blocks, n_layers)
    wanted = list(ALL_LINEARS) if modules.strip() == "all" else [m.strip() for m in modules.split(",") if m.strip()]
    names = dict(model.trunk.named_modules())
    out = []
    for i in sorted(chosen):
        for m in wanted:
            name = f"layers.{i}.{m}"
            if not isinstance(names.get(name), torch.nn.Linear):
                raise ValueError(f"lora_modules: {name} is not a linear layer of this model (try "
                                 "attention.to_q, attention.to_k, attention.to_v, attention.to_out.0, "
                                 "feed_forward.w1, feed_forward.w2, feed_forward.w3)")
            out.append(name)
    if not out:
        raise ValueError(f"lora_blocks {blocks!r} and lora_modules {modules!r} choose no layer to adapt")
    return out


def add_lora(model: torch.nn.Module, targets: list[str], rank: int, alpha: float, dropout: float,
             full: str, seed: int = 0) -> None:
    """Wrap ``targets`` of ``model.trunk`` with LoRA adapters (A drawn from ``seed``, B zero: the model starts
    as it was); freeze everything but the adapters and the parameters whose official name starts with one of
    ``full``'s comma-separated prefixes."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        init_lora_weights=True)
    with torch.random.fork_rng(devices=[]):  # the same adapters in every run and process of a run
        torch.manual_seed(seed)
        inject_adapter_in_model(config, model.trunk)
    prefixes = tuple(p.strip() for p in full.split(",") if p.strip())
    for name, p in model.named_parameters():
        official = name.removeprefix("trunk.")
        p.requires_grad_(".lora_A." in name or ".lora_B." in name or official.startswith(prefixes))


def lora_file(trainable: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor], alpha: float
              ) -> dict[str, torch.Tensor]:
    """The LoRA file's tensors: adapters in peft names under ``diffusion_model.`` with ``.alpha``, the fully
    trained parts as ``.diff`` (weights) and ``.diff_b`` (biases) against ``base`` (official names)."""
    out: dict[str, torch.Tensor] = {}
    for name, value in trainable.items():
        a, b = LORA_A.match(name), LORA_B.match(name)
        if a or b:
            module = (a or b).group(1)
            out[f"{FILE_PREFIX}{module}.lora_{'A' if a else 'B'}.weight"] = value.detach().float().cpu().contiguous()
            out[f"{FILE_PREFIX}{module}.alpha"] = torch.tensor(float(alpha))
        elif name.endswith((".weight", ".bias")):
            stem, kind = name.rsplit(".", 1)
            suffix = ".diff" if kind == "weight" else ".diff_b"
            change = value.detach().float().cpu() - base[name].float()
            out[f"{FILE_PREFIX}{stem}{suffix}"] = change.contiguous()
    return out


def merged(trainable: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor], alpha: float
           ) -> dict[str, torch.Tensor]:
    """``base`` (official names) with every adapter merged (W + alpha / rank * B @ A) and the fully trained
    parts replaced; each tensor in the base's dtype."""
    out = dict(base)
    for name, value in trainable.items():
        a = LORA_A.match(name)
        if a:
            module = a.group(1)
            down, up = value.float().cpu(), trainable[f"{module}.lora_B.default.weight"].float().cpu()
            weight = base[f"{module}.weight"]
            out[f"{module}.weight"] = (weight.float() + (alpha / down.shape[0]) * (up @ down)).to(weight.dtype)
        elif not LORA_B.match(name):
            out[name] = value.detach().cpu().to(base[name].dtype)
    return out
