"""Where a LoRA's tensors land in an L2P model: every naming LoRA files for Z-Image and L2P use, for one model.

LoRA files name the weight they adapt in one of these ways (``B`` a weight's name without ``.weight``):

- diffusers / peft names of the official layout (``layers.0.attention.to_q``, ``all_x_embedder.16-1``,
  ``local_decoder.enc1.0``), bare or under ``diffusion_model.`` (ai-toolkit, this pack's trainer) or
  ``transformer.`` (diffusers pipelines), with ``.lora_A/.lora_B`` or ``.lora_down/.lora_up`` suffixes;
- kohya / LyCORIS style: ``lora_unet_`` or ``lycoris_`` and the same name with ``_`` for ``.``;
- ComfyUI's own names (``layers.0.attention.qkv``), which core's loader already maps.

ComfyUI fuses q, k and v into one ``qkv`` weight, so a q, k or v LoRA is a slice of it: the map's value is then
``(model key, (dim, offset, size))``, the form core's LoRA loader takes. Pure: computed from the names and
shapes of the model's own tensors (ComfyUI names), so it serves the 6B release, tiny models and every head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .layouts import comfy_to_official_keys

Target = str | tuple[str, tuple[int, int, int]]
MODEL_PREFIX = "diffusion_model."  # how ComfyUI names a diffusion model's weights in its patch keys
FILE_PREFIXES = ("", "diffusion_model.", "transformer.")  # what LoRA files put before an official name
# A LoRA tensor's name is its target's name plus one of these (peft, kohya, LyCORIS, DoRA, ComfyUI diffs).
SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_A.bias", ".lora_B.bias", ".lora_down.weight",
            ".lora_up.weight", ".lora_mid.weight", ".alpha", ".dora_scale", ".diff", ".diff_b", ".set_weight",
            ".lokr_w1", ".lokr_w2", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2_a", ".lokr_w2_b", ".lokr_t2",
            ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".hada_t1", ".hada_t2", ".w_norm", ".b_norm",
            ".lora.down.weight", ".lora.up.weight", "_lora.down.weight", "_lora.up.weight",
            ".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight", ".oft_blocks", ".oft_diag", ".rescale")


def lora_key_map(shapes: Mapping[str, Sequence[int]], patch_size: int) -> dict[str, Target]:
    """LoRA base name -> the model weight it adapts (``diffusion_model.`` + ComfyUI name, with a q/k/v slice of
    a fused ``qkv``), for every naming above. ``shapes``: the model's weights, ComfyUI names, no prefix."""
    out: dict[str, Target] = {}
    for m in comfy_to_official_keys([k for k in shapes if k.endswith(".weight")], patch_size):
        comfy = m.sources[0]
        whole: Target = MODEL_PREFIX + comfy
        targets = {m.name[:-len(".weight")]: whole, comfy[:-len(".weight")]: whole}
        if m.part is not None:  # q, k or v of the fused qkv: rows [offset, offset + size); the fused name whole
            rows, dim = int(shapes[comfy][0]), int(shapes[comfy][1])
            kv = (rows - dim) // 2
            offset, size = ((0, dim), (dim, kv), (dim + kv, kv))[m.part]
            targets[m.name[:-len(".weight")]] = (whole, (0, offset, size))
        for base, target in targets.items():
            for prefix in FILE_PREFIXES:
                out.setdefault(prefix + base, target)
            flat = base.replace(".", "_")
            out.setdefault("lora_unet_" + flat, target)
            out.setdefault("lycoris_" + flat, target)
    return out


def lora_base(key: str) -> str:
    """A LoRA tensor's target name: ``key`` without its suffix (``.lora_A.weight``, ``.alpha``, ...)."""
    return next((key[:-len(s)] for s in SUFFIXES if key.endswith(s)), key)


def unmatched(lora_keys: Sequence[str], key_map: Mapping[str, object]) -> list[str]:
    """The LoRA tensors whose base name maps to no weight (sorted): what a loader would drop."""
    left = []
    for key in lora_keys:
        base = lora_base(key)
        if base not in key_map and key not in key_map:
            left.append(key)
    return sorted(left)
