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
from typing import TYPE_CHECKING

import torch

from ..head import detect_head_variant, head_width_div
from .keys import HEAD_PREFIX, L2PFormatError, has_head, strip_prefix

if TYPE_CHECKING:
    from ..arch import SourceArch

OFFICIAL = "official"
COMFY = "comfy"

# Per-block names that differ between the layouts (comfy name -> official name); q/k/v are handled apart.
_BLOCK_RENAMES = {
    "attention.out.weight": "attention.to_out.0.weight",
    "attention.out.bias": "attention.to_out.0.bias",
    "attention.q_norm.weight": "attention.norm_q.weight",
    "attention.k_norm.weight": "attention.norm_k.weight",
}
_BLOCK_NAME = r"(?:layers|noise_refiner|context_refiner)\.\d+"
_BLOCK_RE = re.compile(rf"^({_BLOCK_NAME})\.(.+)$")
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
    cfg = _checked_config(sd)
    return _comfy_names(sd), cfg


def _comfy_names(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checked, prefix-stripped L2P state dict under ComfyUI names."""
    if detect_layout(sd.keys()) == OFFICIAL:
        sd = official_to_comfy(sd)
    return {k: v for k, v in sd.items() if not k.startswith(_DROPPED_COMFY)}


def check_l2p(sd: Mapping[str, torch.Tensor]) -> None:
    """Raise L2PFormatError with a one-line reason when ``sd`` (prefix stripped) is not an L2P model.

    This checks what kind of file it is; ``infer_config`` / ``to_comfy_with_config`` also check every tensor
    (``check_tensors``)."""
    keys = set(sd.keys())
    layout = detect_layout(keys)
    head = has_head(keys)
    if layout is not None and head and "cap_embedder.1.weight" not in keys:
        raise L2PFormatError("incomplete file: 1 tensor of cap_embedder missing (first: cap_embedder.1.weight); "
                             "download or export it again")
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
    """Read an L2P model's architecture from tensor shapes; works for the 6B release and tiny test models alike.

    Strict: every tensor of that architecture must be there with its shape and a float dtype, and nothing else
    (``check_tensors``); meta tensors are enough, so a file is checked before any weight is read or built."""
    return _checked_config(strip_prefix(sd))


def _checked_config(sd: Mapping[str, torch.Tensor]) -> L2PConfig:
    """The configuration of a prefix-stripped L2P state dict, after checking its kind and every tensor."""
    check_l2p(sd)
    cfg = _l2p_config(sd)
    check_tensors(sd, cfg)
    return cfg


def source_arch(sd: Mapping[str, torch.Tensor]) -> SourceArch:
    """A latent source's adapter with its own latent patch, read from its embedder's width (released Z-Image: 2;
    the replication's 8x8-token world: 1), so the pixel patch that matches one latent token follows the file."""
    from ..arch import detect_arch

    sd = strip_prefix(sd)
    arch = detect_arch(sd.keys())
    patch = infer_patch_size(sd, arch.latent_channels)
    return arch if patch == arch.latent_patch else replace(arch, latent_patch=patch)


def source_config(sd: Mapping[str, torch.Tensor], final_layer: bool = True) -> tuple[SourceArch, L2PConfig]:
    """A latent source's adapter and configuration (``head_variant`` None) from its shapes, every tensor checked
    like an L2P file's (``check_tensors``: the trunk and the latent final layer; ``norm_final`` is ignored).

    ``final_layer=False`` (the converter, which drops it): a source without any final-layer tensor is accepted;
    one with part of it is still incomplete."""
    sd = strip_prefix(sd)
    arch = source_arch(sd)
    cfg = trunk_config(sd, in_channels=arch.latent_channels, head_variant=None)
    optional = () if final_layer else _FINAL_LAYER
    check_tensors(sd, cfg, optional=optional)
    return arch, cfg


def _l2p_config(sd: Mapping[str, torch.Tensor]) -> L2PConfig:
    """The configuration of a checked, prefix-stripped L2P state dict (either layout)."""
    cfg = trunk_config(sd, in_channels=3, head_variant=detect_head_variant(sd.keys()))
    return replace(cfg, head_width_div=head_width_div(sd))


def trunk_config(sd: Mapping[str, torch.Tensor], in_channels: int, head_variant: str | None) -> L2PConfig:
    """The NextDiT trunk's configuration from shapes (prefix already stripped); the source arch from its keys.

    Each width is read from the first tensor that carries it (``layers.0`` first, else any block), so a file
    missing one of them still gets a configuration and ``check_tensors`` can name what is missing."""
    from ..arch import detect_arch

    arch = detect_arch(sd.keys())
    keys = list(sd.keys())
    official = detect_layout(keys) == OFFICIAL
    cap = sd["cap_embedder.1.weight"]
    dim, cap_feat_dim = int(cap.shape[0]), int(cap.shape[1])
    q_norm, k_norm = ("norm_q", "norm_k") if official else ("q_norm", "k_norm")
    head_dim = _width(sd, "the head size", [(f"attention.{q_norm}.weight", 0), (f"attention.{k_norm}.weight", 0)])
    if official:
        kv_rows = _width(sd, "the key/value width", [("attention.to_k.weight", 0), ("attention.to_v.weight", 0)])
    else:
        kv_rows = (_width(sd, "the key/value width", [("attention.qkv.weight", 0)]) - dim) // 2
    ffn = _width(sd, "the feed-forward width", [("feed_forward.w1.weight", 0), ("feed_forward.w3.weight", 0),
                                               ("feed_forward.w2.weight", 1)])
    t_hidden = _width(sd, "the timestep width", [("t_embedder.mlp.0.weight", 0), ("t_embedder.mlp.0.bias", 0),
                                                ("t_embedder.mlp.2.weight", 1)], block=False)
    adaln = _width(sd, "the modulation width", [("t_embedder.mlp.2.weight", 0), ("t_embedder.mlp.2.bias", 0)],
                   block=False)
    if head_dim < 1 or dim % head_dim:
        raise L2PFormatError(f"wrong shape: the attention norms give a head size of {head_dim}, which does not divide "
                             f"the width {dim}: the file mixes two models or is corrupt; download or export it again")
    # A released width has at least its released depth: a file missing its last blocks is incomplete (strict
    # loading names them), not a shallower model that would load and draw garbage.
    layers, refiners = arch.released_depth(dim, cap_feat_dim) or (0, 0)
    return L2PConfig(
        dim=dim,
        n_heads=dim // head_dim,
        n_layers=max(_count_blocks(keys, "layers"), layers),
        n_noise_refiner=max(_count_blocks(keys, "noise_refiner"), refiners),
        n_context_refiner=max(_count_blocks(keys, "context_refiner"), refiners),
        cap_feat_dim=cap_feat_dim,
        patch_size=infer_patch_size(sd, in_channels),
        in_channels=in_channels,
        ffn_hidden_dim=ffn,
        t_embed_hidden=t_hidden,
        adaln_dim=adaln,
        head_variant=head_variant,
        axes_dims=arch.axes_dims(head_dim),
        pad_tokens="x_pad_token" in sd or "cap_pad_token" in sd,
        arch=arch.name,
        n_kv_heads=max(kv_rows // head_dim, 1),
    )


def _width(sd: Mapping[str, torch.Tensor], what: str, sources: list[tuple[str, int]], block: bool = True) -> int:
    """One width of the architecture: dimension ``dim`` of the first tensor named by ``sources``; with ``block``
    the names are within a main or refiner block (``layers.0`` first, else any block)."""
    for name, dim in sources:
        if not block:
            found = [name] if name in sd else []
        elif f"layers.0.{name}" in sd:
            found = [f"layers.0.{name}"]
        else:
            found = [k for k in sd if re.match(rf"^{_BLOCK_NAME}\.{re.escape(name)}$", k)]
        if found:
            return int(sd[found[0]].shape[dim])
    example = f"layers.0.{sources[0][0]}" if block else sources[0][0]
    raise L2PFormatError(f"incomplete file: no tensor gives {what} ({example} is missing); download or export it "
                         "again")


# ------------------------------------------------------------------------------------------ strict loading
# ComfyUI's quantised-weight companions (scaled fp8, mixed precision): accepted next to an expected ``.weight``
# in the ComfyUI layout, where core's own loader reads them.
QUANT_SUFFIXES = (".scale_weight", ".scale_input", ".weight_scale", ".weight_scale_2", ".input_scale", ".comfy_quant")
_QUANT_KEYS = ("scaled_fp8",)
_FINAL_LAYER = ("final_layer.", "all_final_layer.")  # a latent source's final layer, both layouts
_FREQ_DIM = 256  # the timestep embedder's sinusoid width (ComfyUI's and diffusers' default)
_MAX_GROUPS = 4  # blocks named in a message


def expected_tensors(cfg: L2PConfig, layout: str = COMFY) -> dict[str, tuple[int, ...]]:
    """Every tensor of the model ``cfg`` describes, name -> shape, in ``layout``, in module order.

    The L2P model (``head_variant`` set: the trunk plus ``local_decoder.*``, no final layer) or its latent source
    (``head_variant`` None: the trunk plus the final layer), as ComfyUI's NextDiT (with the pack's head) and
    diffusers' Z-Image build them; computed from the configuration alone (the head on the meta device), so it
    needs neither ComfyUI nor diffusers. Noise and context refiners are counted alike (NextDiT has as many).
    """
    from ..arch import ARCHITECTURES
    from ..head import build_head

    arch = ARCHITECTURES[cfg.arch]
    dim, hd, ffn, adaln = cfg.dim, cfg.head_dim, cfg.ffn_hidden_dim, cfg.adaln_dim
    kv = cfg.kv_heads * hd
    patch_in = cfg.patch_size * cfg.patch_size * cfg.in_channels
    modulation = "adaLN_modulation.0" if arch.z_image_modulation else "adaLN_modulation.1"

    def block(prefix: str, modulated: bool) -> dict[str, tuple[int, ...]]:
        out = {"attention.qkv.weight": (dim + 2 * kv, dim), "attention.out.weight": (dim, dim),
               "attention.q_norm.weight": (hd,), "attention.k_norm.weight": (hd,),
               "feed_forward.w1.weight": (ffn, dim), "feed_forward.w2.weight": (dim, ffn),
               "feed_forward.w3.weight": (ffn, dim), "attention_norm1.weight": (dim,), "ffn_norm1.weight": (dim,),
               "attention_norm2.weight": (dim,), "ffn_norm2.weight": (dim,)}
        if modulated:
            out.update({f"{modulation}.weight": (4 * dim, adaln), f"{modulation}.bias": (4 * dim,)})
        return {f"{prefix}.{k}": v for k, v in out.items()}

    n_refiner = max(cfg.n_noise_refiner, cfg.n_context_refiner)
    shapes: dict[str, tuple[int, ...]] = {"x_embedder.weight": (dim, patch_in), "x_embedder.bias": (dim,)}
    for i in range(n_refiner):
        shapes.update(block(f"noise_refiner.{i}", True))
    for i in range(n_refiner):
        shapes.update(block(f"context_refiner.{i}", False))
    shapes.update({"t_embedder.mlp.0.weight": (cfg.t_embed_hidden, _FREQ_DIM),
                   "t_embedder.mlp.0.bias": (cfg.t_embed_hidden,),
                   "t_embedder.mlp.2.weight": (adaln, cfg.t_embed_hidden), "t_embedder.mlp.2.bias": (adaln,),
                   "cap_embedder.0.weight": (cfg.cap_feat_dim,), "cap_embedder.1.weight": (dim, cfg.cap_feat_dim),
                   "cap_embedder.1.bias": (dim,)})
    for i in range(cfg.n_layers):
        shapes.update(block(f"layers.{i}", True))
    if cfg.head_variant is None:
        shapes.update({"final_layer.linear.weight": (patch_in, dim), "final_layer.linear.bias": (patch_in,),
                       "final_layer.adaLN_modulation.1.weight": (dim, adaln),
                       "final_layer.adaLN_modulation.1.bias": (dim,)})
    else:
        head = build_head(cfg.head_variant, dim, in_channels=cfg.in_channels, device="meta",
                          width_div=cfg.head_width_div)
        shapes.update({HEAD_PREFIX + k: tuple(v.shape) for k, v in head.state_dict().items()})
    if cfg.pad_tokens:
        shapes.update({"x_pad_token": (1, dim), "cap_pad_token": (1, dim)})
    return shapes if layout == COMFY else _official_shapes(shapes, cfg.patch_size, dim)


def _official_shapes(shapes: Mapping[str, tuple[int, ...]], patch_size: int, dim: int) -> dict[str, tuple[int, ...]]:
    """``expected_tensors`` under the official names: q/k/v apart (k and v at the key/value width)."""
    out: dict[str, tuple[int, ...]] = {}
    for key, shape in shapes.items():
        m = _BLOCK_RE.match(key)
        if key.startswith(("x_embedder.", "final_layer.")):
            group, rest = key.split(".", 1)
            out[f"all_{group}.{patch_size}-1.{rest}"] = shape
        elif m and m.group(2) == "attention.qkv.weight":
            kv = (shape[0] - dim) // 2
            out.update({f"{m.group(1)}.attention.to_q.weight": (dim, dim),
                        f"{m.group(1)}.attention.to_k.weight": (kv, dim),
                        f"{m.group(1)}.attention.to_v.weight": (kv, dim)})
        elif m:
            out[f"{m.group(1)}.{_BLOCK_RENAMES.get(m.group(2), m.group(2))}"] = shape
        else:
            out[key] = shape
    return out


def check_tensors(sd: Mapping[str, torch.Tensor], cfg: L2PConfig, optional: tuple[str, ...] = ()) -> None:
    """Raise L2PFormatError unless ``sd`` (prefix stripped, either layout; meta tensors are enough) holds exactly
    the tensors of ``cfg`` (``expected_tensors``), each of its shape and stored as a float (fp8 included).

    One line naming the first offending tensor, how many there are (missing ones grouped by block) and what
    to do; checked in this order: missing, not float, wrong shape, unexpected. ``norm_final.*`` (an unused
    norm of older ComfyUI NextDiTs) is ignored; in the ComfyUI layout so are core's quantisation companions
    of an expected weight (``*.scale_weight``, ``*.weight_scale``, ``scaled_fp8``, ...). A part named by
    ``optional`` (name prefixes) may be absent as a whole.
    """
    layout = detect_layout(sd.keys()) or COMFY
    expected = expected_tensors(cfg, layout)
    if optional and not any(k.startswith(optional) for k in sd):
        expected = {k: v for k, v in expected.items() if not k.startswith(optional)}
    present = {k: v for k, v in sd.items() if not _ignored(k, expected, layout)}
    missing = [k for k in expected if k not in present]
    if missing:
        raise L2PFormatError(f"incomplete file: {_grouped(missing, 'missing')} (first: {missing[0]}); download or "
                             "export it again")
    what = _describe(cfg)
    not_float = [k for k in expected if not present[k].dtype.is_floating_point]
    if not_float:
        dtype = str(present[not_float[0]].dtype).replace("torch.", "")
        raise L2PFormatError(f"not a float checkpoint: {not_float[0]} is stored as {dtype} "
                             f"({_grouped(not_float, 'not floating point')}); the pack loads fp32, bf16, fp16 and "
                             "fp8 weights, not integer-quantised ones: use the original float checkpoint")
    wrong = [k for k in expected if tuple(present[k].shape) != expected[k]]
    if wrong:
        got, want = list(present[wrong[0]].shape), list(expected[wrong[0]])
        raise L2PFormatError(f"wrong shape: {wrong[0]} is {got}, expected {want} for {what} "
                             f"({_grouped(wrong, 'off')}); the file mixes two models or is corrupt: download or "
                             "export it again")
    unexpected = [k for k in present if k not in expected]
    if unexpected:
        raise L2PFormatError(f"unexpected tensors: {_grouped(unexpected, 'not part of ' + what)} (first: "
                             f"{unexpected[0]}); the file mixes models or was edited: download or export it again")


def _ignored(key: str, expected: Mapping[str, tuple[int, ...]], layout: str) -> bool:
    if key.startswith(_DROPPED_COMFY):
        return True
    if layout != COMFY:
        return False
    if key in _QUANT_KEYS:
        return True
    return any(key.endswith(s) and key[:-len(s)] + ".weight" in expected for s in QUANT_SUFFIXES)


def _describe(cfg: L2PConfig) -> str:
    """``a z-image L2P model (dim 3840, 30 layers, 1k head)``: what the shapes said the file is."""
    kind = f"{cfg.head_variant} head" if cfg.head_variant else "latent final layer"
    what = "L2P" if cfg.head_variant else "latent"
    return f"a {cfg.arch} {what} model (dim {cfg.dim}, {cfg.n_layers} layers, {kind})"


def _group(key: str) -> str:
    """The block a tensor belongs to: ``layers.1``, ``noise_refiner.0``, ``local_decoder``, ``t_embedder``, ..."""
    m = _BLOCK_RE.match(key)
    if m:
        return m.group(1)
    m = re.match(r"^(all_(?:x_embedder|final_layer)\.\d+-\d+)\.", key)
    return m.group(1) if m else key.split(".", 1)[0]


def _grouped(keys: list[str], state: str) -> str:
    """``12 tensors of layers.1 missing`` or ``25 tensors missing: 12 of layers.1, 12 of layers.2, 1 of x``."""
    groups: dict[str, int] = {}
    for key in keys:
        groups[_group(key)] = groups.get(_group(key), 0) + 1
    n = f"{len(keys)} tensor{'s' if len(keys) != 1 else ''}"
    if len(groups) == 1:
        group = next(iter(groups))
        return f"{n} {state}" if group in keys else f"{n} of {group} {state}"  # x_pad_token is its own group
    parts = [f"{c} of {g}" for g, c in list(groups.items())[:_MAX_GROUPS]]
    more = len(groups) - _MAX_GROUPS
    if more > 0:
        parts.append(f"{more} more block{'s' if more != 1 else ''}")
    return f"{n} {state}: {', '.join(parts)}"
