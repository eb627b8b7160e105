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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch

from .head import HEAD_VARIANTS, detect_head_variant

OFFICIAL = "official"
COMFY = "comfy"
PREFIXES = ("model.diffusion_model.", "diffusion_model.")

# Per-block names that differ between the layouts (comfy name -> official name); q/k/v are handled apart.
_BLOCK_RENAMES = {
    "attention.out.weight": "attention.to_out.0.weight",
    "attention.out.bias": "attention.to_out.0.bias",
    "attention.q_norm.weight": "attention.norm_q.weight",
    "attention.k_norm.weight": "attention.norm_k.weight",
}
_BLOCK_RE = re.compile(r"^((?:layers|noise_refiner|context_refiner)\.\d+)\.(.+)$")
_X_EMBEDDER_RE = re.compile(r"^all_x_embedder\.(\d+)-(\d+)\.(weight|bias)$")
# Left-overs of ComfyUI's NextDiT that an L2P model does not have (an unused norm, the latent head).
_DROPPED_COMFY = ("norm_final.",)


class L2PFormatError(ValueError):
    """A file that is not a loadable L2P checkpoint; the message is one line saying what it is and what to do."""


@dataclass(frozen=True)
class L2PConfig:
    """Everything needed to build an L2P model, all read from tensor shapes."""

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
    head_variant: str
    axes_dims: tuple[int, ...] = field(default=(32, 48, 48))
    pad_tokens: bool = True

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def as_dict(self) -> dict:
        return asdict(self)


def strip_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a ComfyUI checkpoint prefix (``model.diffusion_model.``) when every diffusion key carries it."""
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return dict(sd)


def detect_layout(keys) -> str | None:
    """Return OFFICIAL, COMFY or None (neither: not a Z-Image/NextDiT diffusion model)."""
    keys = list(keys)
    if any(".attention.to_q." in k for k in keys) or any(_X_EMBEDDER_RE.match(k) for k in keys):
        return OFFICIAL
    if any(".attention.qkv." in k for k in keys) or "x_embedder.weight" in keys:
        return COMFY
    return None


def official_to_comfy(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official (split q/k/v) names -> ComfyUI NextDiT names; q, k, v are concatenated along dim 0."""
    inverse = {v: k for k, v in _BLOCK_RENAMES.items()}
    out: dict[str, torch.Tensor] = {}
    qkv_parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in sd.items():
        m = _X_EMBEDDER_RE.match(key)
        if m:
            out[f"x_embedder.{m.group(3)}"] = tensor
            continue
        m = _BLOCK_RE.match(key)
        if m:
            block, rest = m.groups()
            qkv = re.match(r"attention\.to_([qkv])\.(weight|bias)$", rest)
            if qkv:
                qkv_parts.setdefault(f"{block}.attention.qkv.{qkv.group(2)}", {})[qkv.group(1)] = tensor
                continue
            out[f"{block}.{inverse.get(rest, rest)}"] = tensor
            continue
        out[key] = tensor
    for key, parts in qkv_parts.items():
        if set(parts) != {"q", "k", "v"}:
            raise L2PFormatError(f"{key.rsplit('.qkv', 1)[0]} has only {sorted(parts)} of q/k/v: the file is "
                                 "incomplete; download or export it again")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def comfy_to_official(sd: Mapping[str, torch.Tensor], patch_size: int | None = None) -> dict[str, torch.Tensor]:
    """ComfyUI NextDiT names -> official names; the fused qkv is split in three equal parts."""
    if patch_size is None:
        patch_size = infer_patch_size(sd)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in sd.items():
        if key.startswith(_DROPPED_COMFY):
            continue
        if key in ("x_embedder.weight", "x_embedder.bias"):
            out[f"all_x_embedder.{patch_size}-1.{key.rsplit('.', 1)[1]}"] = tensor
            continue
        m = _BLOCK_RE.match(key)
        if m:
            block, rest = m.groups()
            qkv = re.match(r"attention\.qkv\.(weight|bias)$", rest)
            if qkv:
                for name, part in zip("qkv", tensor.chunk(3, dim=0), strict=True):
                    out[f"{block}.attention.to_{name}.{qkv.group(1)}"] = part
                continue
            out[f"{block}.{_BLOCK_RENAMES.get(rest, rest)}"] = tensor
            continue
        out[key] = tensor
    return out


def to_comfy_layout(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any supported layout (with or without prefix) -> ComfyUI names, after checking it is an L2P model."""
    sd = strip_prefix(sd)
    check_l2p(sd)
    if detect_layout(sd.keys()) == OFFICIAL:
        sd = official_to_comfy(sd)
    return {k: v for k, v in sd.items() if not k.startswith(_DROPPED_COMFY)}


def check_l2p(sd: Mapping[str, torch.Tensor]) -> None:
    """Raise L2PFormatError with a one-line reason when ``sd`` (prefix stripped) is not an L2P model."""
    keys = set(sd.keys())
    layout = detect_layout(keys)
    has_head = any(k.startswith("local_decoder.") for k in keys)
    if layout is None or "cap_embedder.1.weight" not in keys:
        what = "an L2P Detailer Head alone" if has_head else "not a Z-Image/NextDiT diffusion model"
        raise L2PFormatError(f"this file is {what} ({len(keys)} tensors): pick an L2P checkpoint such as "
                             "model-1k-merge.safetensors")
    if not has_head:
        latent = any(k.startswith(("final_layer.", "all_final_layer.")) for k in keys)
        if latent:
            raise L2PFormatError("this is a latent Z-Image model (it has a final layer and no local_decoder): load "
                                 "it with the stock UNETLoader, or convert it to L2P first")
        raise L2PFormatError("the L2P Detailer Head (local_decoder.*) is missing: the file is incomplete or not "
                             "an L2P model; download or export it again")
    variant = detect_head_variant(keys)
    missing = sorted(set(HEAD_VARIANTS[variant].expected_keys()) - {k[len("local_decoder."):] for k in keys
                                                                    if k.startswith("local_decoder.")})
    if missing:
        raise L2PFormatError(f"the L2P Detailer Head is incomplete ({len(missing)} local_decoder tensors missing, "
                             f"e.g. local_decoder.{missing[0]}): download or export the checkpoint again")


def infer_patch_size(sd: Mapping[str, torch.Tensor], in_channels: int = 3) -> int:
    """Patch size from the embedder's input width (p*p*in_channels), or from the official key name."""
    for key, tensor in sd.items():
        if key in ("x_embedder.weight",) or (_X_EMBEDDER_RE.match(key) and key.endswith("weight")):
            p = round((tensor.shape[1] / in_channels) ** 0.5)
            if p * p * in_channels != tensor.shape[1]:
                raise L2PFormatError(f"the patch embedder takes {tensor.shape[1]} inputs, not p*p*{in_channels}: "
                                     "this is not a pixel-space (3-channel) L2P model")
            return p
    raise L2PFormatError("no patch embedder (x_embedder) found: the file is incomplete; download it again")


def _count_blocks(keys, prefix: str) -> int:
    idx = {int(m.group(1)) for k in keys if (m := re.match(rf"^{prefix}\.(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def axes_dims_for(head_dim: int) -> tuple[int, int, int]:
    """3-axis RoPE split of a head: Z-Image uses (32, 48, 48) for 128, i.e. 1/4, 3/8, 3/8 of the head."""
    if head_dim % 16:
        raise L2PFormatError(f"head size {head_dim} is not a multiple of 16: the RoPE axes (1/4, 3/8, 3/8 of the "
                             "head, each even) cannot be derived; this architecture is not supported")
    return (head_dim // 4, head_dim * 3 // 8, head_dim * 3 // 8)


def infer_config(sd: Mapping[str, torch.Tensor]) -> L2PConfig:
    """Read the architecture from tensor shapes; works for the 6B release and for tiny test models alike."""
    sd = strip_prefix(sd)
    check_l2p(sd)
    keys = list(sd.keys())
    official = detect_layout(keys) == OFFICIAL
    cap = sd["cap_embedder.1.weight"]
    dim, cap_feat_dim = int(cap.shape[0]), int(cap.shape[1])
    qn = "layers.0.attention.norm_q.weight" if official else "layers.0.attention.q_norm.weight"
    if qn not in sd:
        raise L2PFormatError(f"{qn} is missing: the head count cannot be read; the file is incomplete")
    head_dim = int(sd[qn].shape[0])
    t_hidden = int(sd["t_embedder.mlp.0.weight"].shape[0])
    adaln = int(sd["t_embedder.mlp.2.weight"].shape[0])
    return L2PConfig(
        dim=dim,
        n_heads=dim // head_dim,
        n_layers=_count_blocks(keys, "layers"),
        n_noise_refiner=_count_blocks(keys, "noise_refiner"),
        n_context_refiner=_count_blocks(keys, "context_refiner"),
        cap_feat_dim=cap_feat_dim,
        patch_size=infer_patch_size(sd),
        in_channels=3,
        ffn_hidden_dim=int(sd["layers.0.feed_forward.w1.weight"].shape[0]),
        t_embed_hidden=t_hidden,
        adaln_dim=adaln,
        head_variant=detect_head_variant(keys),
        axes_dims=axes_dims_for(head_dim),
        pad_tokens="x_pad_token" in sd,
    )
