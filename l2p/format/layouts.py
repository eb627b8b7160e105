"""L2P checkpoint layouts: detection, key maps both ways, and the model configuration read from shapes.

Two layouts exist in the wild (research notes l2p-technical.md §1.4):

* official -- the authors' DiffSynth/diffusers names: ``all_x_embedder.{p}-1``, split ``to_q/to_k/to_v``,
  ``to_out.0``, ``norm_q/norm_k``, no prefix, mixed F32/BF16 tensors;
* comfy -- ComfyUI's NextDiT names: ``x_embedder``, fused ``attention.qkv``, ``out``, ``q_norm/k_norm``,
  optionally under ``model.diffusion_model.``.

Both carry the Detailer Head under ``local_decoder.*`` with the same names. Everything here works on any
mapping of name -> tensor (including meta tensors) and never looks at file names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace

import torch

from ..head import HEAD_VARIANTS, detect_head_variant, head_width_div
from .keys import HEAD_PREFIX, L2PFormatError, has_head, head_part, strip_prefix

OFFICIAL = "official"
COMFY = "comfy"

# Per-block names that differ between the layouts (comfy name -> official name); q/k/v are handled apart.
_BLOCK_RENAMES = {
    "attention.out.weight": "attention.to_out.0.weight",
    "attention.out.bias": "attention.to_out.0.bias",
    "attention.q_norm.weight": "attention.norm_q.weight",
    "attention.k_norm.weight": "attention.norm_k.weight",
}
_BLOCK_RE = re.compile(r"^((?:layers|noise_refiner|context_refiner)\.\d+)\.(.+)$")
X_EMBEDDER_RE = re.compile(r"^all_x_embedder\.(\d+)-(\d+)\.(weight|bias)$")
_FINAL_LAYER_RE = re.compile(r"^all_final_layer\.(\d+)-(\d+)\.(.+)$")  # latent sources only
# Left-overs of ComfyUI's NextDiT that an L2P model does not have (an unused norm, the latent head).
_DROPPED_COMFY = ("norm_final.",)


@dataclass(frozen=True)
class L2PConfig:
    """Everything needed to build an L2P model (or its latent source), read from tensor shapes."""

    dim: int
    n_heads: int
    n_layers: int
    n_noise_refiner: int
    n_context_refiner: int
    cap_feat_dim: int
    patch_size: int
    in_channels: int
    ffn_hidden_dim: int
    t_embed_hidden: int
    adaln_dim: int
    head_variant: str | None  # None: a latent source (final layer, no Detailer Head)
    axes_dims: tuple[int, ...] = field(default=(32, 48, 48))
    pad_tokens: bool = True
    arch: str = "z-image"
    n_kv_heads: int | None = None  # None: as many as query heads
    head_width_div: int = 1  # > 1: a narrower Detailer Head than the official one (tiny replication models)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def as_dict(self) -> dict:
        return asdict(self)


def detect_layout(keys) -> str | None:
    """Return OFFICIAL, COMFY or None (neither: not a Z-Image/NextDiT diffusion model)."""
    keys = list(keys)
    if any(".attention.to_q." in k for k in keys) or any(X_EMBEDDER_RE.match(k) for k in keys):
        return OFFICIAL
    if any(".attention.qkv." in k for k in keys) or "x_embedder.weight" in keys:
        return COMFY
    return None


@dataclass(frozen=True)
class KeyMap:
    """One output tensor of a key map: ``sources`` concatenated along dim 0, or one third of a fused qkv."""

    name: str
    sources: tuple[str, ...]
    part: int | None = None

    def make(self, get: Callable[[str], torch.Tensor]) -> torch.Tensor:
        if self.part is not None:
            return get(self.sources[0]).chunk(3, dim=0)[self.part]
        if len(self.sources) == 1:
            return get(self.sources[0])
        return torch.cat([get(s) for s in self.sources], dim=0)


def official_to_comfy_keys(keys: Iterable[str]) -> list[KeyMap]:
    """Official (split q/k/v) names -> ComfyUI NextDiT names; q, k, v are concatenated along dim 0."""
    inverse = {v: k for k, v in _BLOCK_RENAMES.items()}
    out: list[KeyMap] = []
    qkv_parts: dict[str, dict[str, str]] = {}
    for key in keys:
        m = X_EMBEDDER_RE.match(key)
        if m:
            out.append(KeyMap(f"x_embedder.{m.group(3)}", (key,)))
            continue
        m = _FINAL_LAYER_RE.match(key)
        if m:
            out.append(KeyMap(f"final_layer.{m.group(3)}", (key,)))
            continue
        m = _BLOCK_RE.match(key)
        if m:
            block, rest = m.groups()
            qkv = re.match(r"attention\.to_([qkv])\.(weight|bias)$", rest)
            if qkv:
                qkv_parts.setdefault(f"{block}.attention.qkv.{qkv.group(2)}", {})[qkv.group(1)] = key
                continue
            out.append(KeyMap(f"{block}.{inverse.get(rest, rest)}", (key,)))
            continue
        out.append(KeyMap(key, (key,)))
    for key, parts in qkv_parts.items():
        if set(parts) != {"q", "k", "v"}:
            raise L2PFormatError(f"{key.rsplit('.qkv', 1)[0]} has only {sorted(parts)} of q/k/v: the file is "
                                 "incomplete; download or export it again")
        out.append(KeyMap(key, (parts["q"], parts["k"], parts["v"])))
    return out


def comfy_to_official_keys(keys: Iterable[str], patch_size: int) -> list[KeyMap]:
    """ComfyUI NextDiT names -> official names; the fused qkv is split in three equal parts."""
    out: list[KeyMap] = []
    for key in keys:
        if key.startswith(_DROPPED_COMFY):
            continue
        if key in ("x_embedder.weight", "x_embedder.bias"):
            out.append(KeyMap(f"all_x_embedder.{patch_size}-1.{key.rsplit('.', 1)[1]}", (key,)))
            continue
        if key.startswith("final_layer."):
            out.append(KeyMap(f"all_final_layer.{patch_size}-1.{key[len('final_layer.'):]}", (key,)))
            continue
        m = _BLOCK_RE.match(key)
        if m:
            block, rest = m.groups()
            qkv = re.match(r"attention\.qkv\.(weight|bias)$", rest)
            if qkv:
                out += [KeyMap(f"{block}.attention.to_{n}.{qkv.group(1)}", (key,), i) for i, n in enumerate("qkv")]
                continue
            out.append(KeyMap(f"{block}.{_BLOCK_RENAMES.get(rest, rest)}", (key,)))
            continue
        out.append(KeyMap(key, (key,)))
    return out


def layout_keys(keys: Iterable[str], target: str, patch_size: int) -> list[KeyMap]:
    """The key map from whatever layout ``keys`` are in to ``target`` (identity when they already are)."""
    keys = list(keys)
    source = detect_layout(keys)
    if source == target or source is None:
        return [KeyMap(k, (k,)) for k in keys if not (target == OFFICIAL and k.startswith(_DROPPED_COMFY))]
    return official_to_comfy_keys(keys) if target == COMFY else comfy_to_official_keys(keys, patch_size)


def apply_keys(plan: Iterable[KeyMap], sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {m.name: m.make(sd.__getitem__) for m in plan}


def official_to_comfy(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return apply_keys(official_to_comfy_keys(sd.keys()), sd)


def comfy_to_official(sd: Mapping[str, torch.Tensor], patch_size: int | None = None) -> dict[str, torch.Tensor]:
    return apply_keys(comfy_to_official_keys(sd.keys(), patch_size or infer_patch_size(sd)), sd)


def to_comfy_layout(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any supported layout (with or without prefix) -> ComfyUI names, after checking it is an L2P model."""
    sd = strip_prefix(sd)
    check_l2p(sd)
    return _comfy_names(sd)


def to_comfy_with_config(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], L2PConfig]:
    """``to_comfy_layout`` and ``infer_config`` with one check: what loading a checkpoint needs, once per load."""
    sd = strip_prefix(sd)
    check_l2p(sd)
    return _comfy_names(sd), _l2p_config(sd)


def _comfy_names(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checked, prefix-stripped L2P state dict under ComfyUI names."""
    if detect_layout(sd.keys()) == OFFICIAL:
        sd = official_to_comfy(sd)
    return {k: v for k, v in sd.items() if not k.startswith(_DROPPED_COMFY)}


def check_l2p(sd: Mapping[str, torch.Tensor]) -> None:
    """Raise L2PFormatError with a one-line reason when ``sd`` (prefix stripped) is not an L2P model."""
    keys = set(sd.keys())
    layout = detect_layout(keys)
    head = has_head(keys)
    if layout is None or "cap_embedder.1.weight" not in keys:
        what = "an L2P Detailer Head alone" if head else "not a Z-Image/NextDiT diffusion model"
        raise L2PFormatError(f"this file is {what} ({len(keys)} tensors): pick an L2P checkpoint such as "
                             "model-1k-merge.safetensors")
    if not head:
        latent = any(k.startswith(("final_layer.", "all_final_layer.")) for k in keys)
        if latent:
            raise L2PFormatError("this is a latent Z-Image model (it has a final layer and no local_decoder): load "
                                 "it with the stock UNETLoader, or convert it to L2P first")
        raise L2PFormatError(f"the L2P Detailer Head ({HEAD_PREFIX}*) is missing: the file is incomplete or not "
                             "an L2P model; download or export it again")
    variant = detect_head_variant(keys)
    missing = sorted(set(HEAD_VARIANTS[variant].expected_keys()) - head_part(dict.fromkeys(keys)).keys())
    if missing:
        raise L2PFormatError(f"the L2P Detailer Head is incomplete ({len(missing)} local_decoder tensors missing, "
                             f"e.g. {HEAD_PREFIX}{missing[0]}): download or export the checkpoint again")


def infer_patch_size(sd: Mapping[str, torch.Tensor], in_channels: int = 3) -> int:
    """Patch size from the embedder's input width (p*p*in_channels), or from the official key name."""
    for key, tensor in sd.items():
        if key in ("x_embedder.weight",) or (X_EMBEDDER_RE.match(key) and key.endswith("weight")):
            p = round((tensor.shape[1] / in_channels) ** 0.5)
            if p * p * in_channels != tensor.shape[1]:
                what = "a pixel-space L2P model" if in_channels == 3 else f"a {in_channels}-channel latent model"
                raise L2PFormatError(f"the patch embedder takes {tensor.shape[1]} inputs, not p*p*{in_channels}: "
                                     f"this is not {what}")
            return p
    raise L2PFormatError("no patch embedder (x_embedder) found: the file is incomplete; download it again")


def _count_blocks(keys, prefix: str) -> int:
    idx = {int(m.group(1)) for k in keys if (m := re.match(rf"^{prefix}\.(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def infer_config(sd: Mapping[str, torch.Tensor]) -> L2PConfig:
    """Read an L2P model's architecture from tensor shapes; works for the 6B release and tiny test models alike."""
    sd = strip_prefix(sd)
    check_l2p(sd)
    return _l2p_config(sd)


def _l2p_config(sd: Mapping[str, torch.Tensor]) -> L2PConfig:
    """The configuration of a checked, prefix-stripped L2P state dict (either layout)."""
    cfg = trunk_config(sd, in_channels=3, head_variant=detect_head_variant(sd.keys()))
    return replace(cfg, head_width_div=head_width_div(sd))


def trunk_config(sd: Mapping[str, torch.Tensor], in_channels: int, head_variant: str | None) -> L2PConfig:
    """The NextDiT trunk's configuration from shapes (prefix already stripped); the source arch from its keys."""
    from ..arch import detect_arch

    arch = detect_arch(sd.keys())
    keys = list(sd.keys())
    official = detect_layout(keys) == OFFICIAL
    cap = sd["cap_embedder.1.weight"]
    dim, cap_feat_dim = int(cap.shape[0]), int(cap.shape[1])
    qn = "layers.0.attention.norm_q.weight" if official else "layers.0.attention.q_norm.weight"
    if qn not in sd:
        raise L2PFormatError(f"{qn} is missing: the head count cannot be read; the file is incomplete")
    head_dim = int(sd[qn].shape[0])
    if official:
        kv_rows = int(sd["layers.0.attention.to_k.weight"].shape[0])
    else:
        kv_rows = (int(sd["layers.0.attention.qkv.weight"].shape[0]) - dim) // 2
    return L2PConfig(
        dim=dim,
        n_heads=dim // head_dim,
        n_layers=_count_blocks(keys, "layers"),
        n_noise_refiner=_count_blocks(keys, "noise_refiner"),
        n_context_refiner=_count_blocks(keys, "context_refiner"),
        cap_feat_dim=cap_feat_dim,
        patch_size=infer_patch_size(sd, in_channels),
        in_channels=in_channels,
        ffn_hidden_dim=int(sd["layers.0.feed_forward.w1.weight"].shape[0]),
        t_embed_hidden=int(sd["t_embedder.mlp.0.weight"].shape[0]),
        adaln_dim=int(sd["t_embedder.mlp.2.weight"].shape[0]),
        head_variant=head_variant,
        axes_dims=arch.axes_dims(head_dim),
        pad_tokens="x_pad_token" in sd,
        arch=arch.name,
        n_kv_heads=kv_rows // head_dim,
    )
