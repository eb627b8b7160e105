"""Latent source DiT -> L2P pixel model, as a streamed plan: ``python -m l2p.convert --source ... --out ...``.

Every source tensor whose name and shape still fit is copied unchanged; the latent patch embedder and the
final layer are dropped; a pixel patch embedder (``p*p*3`` inputs) and a Detailer Head are added
(l2p-technical.md §1.6). Inits of the new embedder: ``official`` (PyTorch default, seeded, as the authors
did) or ``vae_lsq`` / ``vae_orth`` (fitted through the source's VAE, see ``init_fit``); the head starts at its
seeded default init. ``distill`` goes further: it starts from ``vae_orth``, then trains the new interface and
the head against the source, all else frozen (``l2p.distill``), and so holds the whole model in memory.

The conversion is a list of planned tensors made one at a time from a lazy source, so a 6B model converts
with about one tensor in memory besides the new parts (``tensor_io``). The checkpoint's metadata records
the architecture, patch size, init, trainable-set policy, source hash and pack version.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .arch import SourceArch, detect_arch
from .distill import DISTILL_INIT, DistillConfig, DistillReport
from .format.export import OWN, Export, export_metadata, layout_plan, plan_export
from .format.keys import HEAD_PREFIX, L2PFormatError, has_head, strip_prefix, with_head_prefix
from .format.layouts import COMFY, OFFICIAL, detect_layout, infer_patch_size, source_arch, source_config
from .format.tensor_io import DictSource, PlannedTensor, TensorSource, open_source, tensors_hash
from .head import HEAD_VARIANTS, build_head, detect_head_variant, head_for_patch, head_width_div
from .init_fit import FIT_INITS, clean_share, fit_pixel_embedder
from .policies import report

INITS = ("official", *FIT_INITS, DISTILL_INIT)
LAYOUTS = (OFFICIAL, COMFY)


@dataclass(frozen=True)
class Conversion(Export):
    arch: SourceArch
    layout: str


def plan_conversion(source: TensorSource, patch_size: int = 16, init: str = "official", seed: int = 0,
                    head_variant: str = "1k", layout: str | None = None, policy: str = "official",
                    fit_pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
                    source_hash: str | None = None, head_width_div: int = 1) -> Conversion:
    """The L2P checkpoint for ``source`` as a write plan plus its metadata (nothing heavy is loaded yet).

    ``head_width_div`` > 1 gives a narrower Detailer Head than the official one (tiny replication models).
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: use one of {', '.join(INITS)}")
    if init == DISTILL_INIT:
        raise ValueError("init distill trains the new parts: run it through l2p.distill.distilled_conversion "
                         "(python -m l2p.convert --init distill, or L2P Convert)")
    if init in FIT_INITS and fit_pairs is None:
        raise ValueError(f"init {init} needs the source's VAE (fit images encoded by it): connect a VAE, or use "
                         "the official init")
    if patch_size < 1:
        raise ValueError(f"patch size {patch_size} must be a positive number of pixels, e.g. 16")
    names = strip_prefix({k: k for k in source.meta})  # stripped name -> name in the source
    meta = {k: source.meta[v] for k, v in names.items()}
    if has_head(meta):
        raise L2PFormatError(f"the source is already an L2P model (it has {HEAD_PREFIX}*): load it with "
                             "L2PModelLoader instead of converting it")
    # Every tensor of the source's architecture (names, shapes, float dtypes); its final layer may be absent.
    arch, _ = source_config(meta, final_layer=False)
    layout = layout or (OFFICIAL if arch.official_layout else COMFY)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: use official or comfy")
    if layout == OFFICIAL and not arch.official_layout:
        raise L2PFormatError(f"the official L2P layout exists only for Z-Image: save {arch.label} conversions in "
                             "the comfy layout")
    body = [k for k in meta if not k.startswith(arch.patch_embedder + arch.final_layer)]
    dim, dtype = int(meta["cap_embedder.1.weight"].shape[0]), meta["cap_embedder.1.weight"].dtype

    def get(name: str) -> torch.Tensor:
        return source.get(names[name])

    plan = layout_plan({k: meta[k] for k in body}, layout, patch_size, get)
    new = _new_tensors(arch, meta, get, dim, patch_size, init, seed, head_variant, fit_pairs, head_width_div)
    embed = f"all_x_embedder.{patch_size}-1." if layout == OFFICIAL else "x_embedder."
    for name, t in new.items():
        out_name = embed + name.split(".", 1)[1] if name.startswith("embedder.") else name
        t = t.to(dtype).contiguous()
        plan.append(PlannedTensor(out_name, torch.empty(t.shape, dtype=t.dtype, device="meta"), lambda t=t: t))
    n_layers = len(arch.blocks(meta.keys()))
    rep = report({p.name: p.meta.shape for p in plan}, policy, n_layers)
    metadata = export_metadata(layout, {
        "arch": arch.name, "patch_size": patch_size, "head_variant": head_variant, "init": init, "seed": seed,
        "policy": policy, "policy_report": rep, "layout": OWN, "pack_version": OWN,
        "source_hash": source_hash or tensors_hash(source),
    })
    return Conversion(plan, metadata, arch, layout)


def _new_tensors(arch: SourceArch, meta: Mapping[str, torch.Tensor], get, dim: int, patch_size: int, init: str,
                 seed: int, head_variant: str, fit_pairs, head_width_div: int = 1) -> dict[str, torch.Tensor]:
    """``embedder.weight/bias`` and the head (``local_decoder.*``) in float32, seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        embedder = nn.Linear(patch_size * patch_size * 3, dim)
        head = build_head(head_variant, dim, width_div=head_width_div)
    weight, bias = embedder.weight.detach(), embedder.bias.detach()
    if init in FIT_INITS:
        latent = [k for k in meta if k.startswith(arch.patch_embedder)]
        w_lat = get(next(k for k in latent if k.endswith("weight")))
        b_lat = get(next(k for k in latent if k.endswith("bias")))
        weight, bias = fit_pixel_embedder(w_lat, b_lat, *fit_pairs, method=init, share=clean_share(arch.default_shift))
    out = {"embedder.weight": weight, "embedder.bias": bias}
    out.update(with_head_prefix({k: v.detach() for k, v in head.state_dict().items()}))
    return out


def latent_to_l2p(source: Mapping[str, torch.Tensor] | TensorSource, **kwargs) -> dict[str, torch.Tensor]:
    """The converted state dict in memory (tests, the ComfyUI node); see ``plan_conversion`` for options."""
    src = DictSource(source) if isinstance(source, Mapping) else source
    kwargs.setdefault("source_hash", "in-memory")
    return {p.name: p.make() for p in plan_conversion(src, **kwargs).plan}


def _tqdm_progress(items, total):
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, total=total, unit="tensor", desc="converting", file=sys.stderr)


def _vae_encoder(vae_path: str, arch: SourceArch, device: str):
    """The source's VAE (a diffusers folder or a ComfyUI / ldm .safetensors file) as images -> model latents."""
    from .vae_io import latent_encoder, load_vae

    vae, scale, shift = load_vae(vae_path, arch.latent_scale, arch.latent_shift)
    return latent_encoder(vae.to(device), scale, shift)


def _fit_pairs(encode, arch: SourceArch, patch_size: int, n_images: int, seed: int):
    """Procedural fit images and their latents, as (pixel patches, latent patches) for the vae_* fits."""
    from .init_fit import fit_images, patch_pairs

    size = max(patch_size, 256 // patch_size * patch_size)
    return patch_pairs(fit_images(n_images, size, seed), lambda x: encode(x).cpu(), patch_size, arch.latent_patch,
                       arch.vae_downscale)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m l2p.convert", description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True, help="latent DiT: a .safetensors file (ComfyUI or diffusers names) or "
                                                    "a diffusers folder (config.json + shards, or a pipeline folder); "
                                                    "or an L2P model to re-head (--head)")
    ap.add_argument("--out", required=True, help="the L2P .safetensors file to write")
    ap.add_argument("--patch", type=int, default=None, help="pixel patch size (default: 16, or the --head's patch; "
                                                            "a re-head always takes the --head's patch)")
    ap.add_argument("--head", choices=list(HEAD_VARIANTS), default=None,
                    help="Detailer Head variant: 1k (patch 16), 4k (64), 8k (128), 10k (160). Given an L2P source, "
                         "re-heads it (patch embedder resized, head inherited where names and shapes fit)")
    ap.add_argument("--init", choices=INITS, default=None, help="pixel embedder init (default: official; not for a "
                                                                "re-head, which resizes the source's embedder)")
    ap.add_argument("--layout", choices=LAYOUTS, default=None, help="official (Z-Image default) or comfy")
    ap.add_argument("--policy", default=None, help="trainable-set policy stored in the metadata: paper, official or "
                                                   "custom:<ranges> (default: official; a re-head keeps the source's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head-width-div", type=int, default=None,
                    help="build the Detailer Head this many times narrower (default: 1 = official for a latent "
                         "source, the source head's width for a re-head; tiny CPU models use 4)")
    ap.add_argument("--vae", help="the source's VAE for the vae_* and distill inits: a diffusers AutoencoderKL folder "
                                  "or a ComfyUI VAE .safetensors file (default: <source>/vae)")
    ap.add_argument("--fit-images", type=int, default=64, help="procedural images encoded for the vae_* fit")
    dist = ap.add_argument_group("init distill (l2p.distill)")
    dist.add_argument("--distill-images", help="a folder of images to distill on, ideally the source's own "
                                               "generations; a dataset folder's cached captions "
                                               "(NNNNN.cond.safetensors) are used when every image has one "
                                               "(default: procedural images)")
    dist.add_argument("--distill-size", type=int, default=256, help="image side, a multiple of the patch (crop+resize)")
    dist.add_argument("--distill-batch", type=int, default=2)
    dist.add_argument("--distill-steps", type=int, default=DistillConfig.align_steps,
                      help="steps aligning the embedder and the blocks below the first frozen one")
    dist.add_argument("--distill-head-steps", type=int, default=DistillConfig.head_steps,
                      help="steps training the Detailer Head on the frozen trunk")
    dist.add_argument("--distill-lr", type=float, default=DistillConfig.lr, help="learning rate of both stages")
    dist.add_argument("--device", default=None, help="where to distill (default: cuda when available, else cpu)")
    ap.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    ap.add_argument("--print-metadata", action="store_true", help="also print the file's l2p.* metadata as JSON")
    args = ap.parse_args(argv)
    if os.path.exists(args.out) and not args.overwrite:
        print(f"error: {args.out} exists: pick another --out or pass --overwrite", file=sys.stderr)
        return 2
    try:
        source = open_source(args.source)
        source_name = {"source_name": os.path.basename(os.path.normpath(args.source))}  # never the path itself
        if any(f".{HEAD_PREFIX}" in f".{k}" for k in source.meta):  # an L2P source, under any prefix
            exp, summary = _rehead(source, args, source_name)
        else:
            exp, summary = _convert(source, args, source_name)
        exp.write(args.out, progress=_tqdm_progress)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_summary(args.out, exp, summary))
    if args.print_metadata:
        print(json.dumps(exp.metadata, indent=1))
    return 0


def _convert(source: TensorSource, args: argparse.Namespace, source_name: dict[str, str]) -> tuple[Export, dict]:
    """A latent source -> an L2P model (``plan_conversion``), with the source's file name in the metadata."""
    head = args.head or head_for_patch(args.patch)
    patch = args.patch or HEAD_VARIANTS[head].cls.patch_size
    init = args.init or "official"
    width_div = 1 if args.head_width_div is None else args.head_width_div
    fit_pairs, arch = None, source_arch(source.meta)
    if init != "official":
        vae_path = args.vae or os.path.join(args.source, "vae")
        if not os.path.exists(vae_path):
            raise ValueError(f"--init {init} needs the source's VAE: pass --vae (a diffusers AutoencoderKL folder or a "
                             "ComfyUI VAE .safetensors file)")
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        encode = _vae_encoder(vae_path, arch, device)
        fit_pairs = _fit_pairs(encode, arch, patch, args.fit_images, args.seed)
    if init == DISTILL_INIT:
        return _distill(source, args, source_name, encode, fit_pairs, head, patch, width_div, device)
    conv = plan_conversion(source, patch_size=patch, init=init, seed=args.seed, layout=args.layout,
                           policy=args.policy or "official", fit_pairs=fit_pairs, head_variant=head,
                           head_width_div=width_div)
    exp = Export(conv.plan, export_metadata(conv.layout, source_name, conv.metadata))
    return exp, {"arch": conv.arch, "head": head, "width_div": width_div, "patch": patch, "layout": conv.layout,
                 "rows": [("init", f"{init} pixel embedder; the Detailer Head at its seeded default init")]}


def _distill(source: TensorSource, args: argparse.Namespace, source_name: dict[str, str], encode, fit_pairs,
             head: str, patch: int, width_div: int, device: str) -> tuple[Export, dict]:
    """``--init distill``: the vae_orth conversion trained against the source (``l2p.distill``), then planned."""
    from .distill import distilled_conversion, image_batches

    arch = detect_arch(source.meta.keys())
    layout = args.layout or (OFFICIAL if arch.official_layout else COMFY)
    cap_dim = next(source.meta[k].shape[1] for k in source.meta if k.endswith("cap_embedder.1.weight"))
    batches = image_batches(args.distill_images, args.distill_size, args.distill_batch, int(cap_dim), args.seed,
                            device)
    cfg = DistillConfig(align_steps=args.distill_steps, head_steps=args.distill_head_steps, lr=args.distill_lr,
                        head_lr=args.distill_lr, seed=args.seed)
    bars: dict[str, object] = {}

    def progress(stage: str, step: int, steps: int, loss: float) -> None:
        bar = bars.get(stage) or bars.setdefault(stage, _tqdm_bar(steps, f"distill {stage}"))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if step == steps:
                bar.close()

    sd, meta, rep = distilled_conversion(source, encode, batches, fit_pairs, patch_size=patch,
                                         seed=args.seed, policy=args.policy or "official", head_variant=head,
                                         head_width_div=width_div, cfg=cfg, device=device, progress=progress)
    exp = plan_export(sd, layout, patch, {**source_name, "layout": OWN, "pack_version": OWN},
                      inherited=meta)
    return exp, {"arch": arch, "head": head, "width_div": width_div, "patch": patch, "layout": layout,
                 "rows": [("init", distill_summary(rep))]}


def distill_summary(rep: DistillReport) -> str:
    """One line: what the distillation trained and how its losses moved."""
    a, h = rep.align_loss, rep.head_loss
    return (f"distill: tokens aligned at block {rep.align_block} by {', '.join(rep.aligned)}; relative error "
            f"{a[0]:.3f} -> {a[1]:.3f}; head flow loss {h[0]:.3f} -> {h[1]:.3f}; {rep.images} images")


def _tqdm_bar(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, file=sys.stderr)


def _rehead(source: TensorSource, args: argparse.Namespace, source_name: dict[str, str]) -> tuple[Export, dict]:
    """An L2P source -> another head variant (python -m l2p.convert --source l2p-1k.safetensors --head 4k)."""
    from .hr_convert import inherited_head_tensors, l2p_to_variant

    if args.head is None:
        raise ValueError("the source is already an L2P model: pass --head 4k, 8k or 10k to re-head it, or load it "
                         "with L2PModelLoader")
    patch = HEAD_VARIANTS[args.head].cls.patch_size
    if args.patch is not None and args.patch != patch:
        raise ValueError(f"a re-head to {args.head} takes patch {patch} (the head's): drop --patch {args.patch}")
    if args.init is not None:
        raise ValueError("--init is for latent sources: a re-head resizes the L2P source's patch embedder, drop "
                         f"--init {args.init}")
    sd = {k: source.get(k) for k in source.meta}
    stripped = strip_prefix(sd)
    current = detect_head_variant(sd.keys())
    out = l2p_to_variant(sd, args.head, seed=args.seed, width_div=args.head_width_div)
    inherited = inherited_head_tensors(sd, args.head, width_div=args.head_width_div)
    layout = args.layout or detect_layout(stripped.keys())
    arch = detect_arch(stripped.keys())
    policy = args.policy or source.metadata.get("l2p.policy") or "official"
    rep = report({k: v.shape for k, v in out.items()}, policy, len(arch.blocks(out.keys())))
    exp = plan_export(out, layout, patch, {
        "head_variant": args.head, "patch_size": patch, "init": f"rehead_from_{current}",
        "layout": OWN, "inherited_head": ",".join(inherited), "pack_version": OWN, "seed": args.seed,
        "policy": policy, "policy_report": rep, **source_name, "source_hash": tensors_hash(DictSource(sd)),
    }, inherited=source.metadata)
    head_total = sum(1 for k in out if k.startswith(HEAD_PREFIX))
    return exp, {"arch": arch, "head": args.head, "width_div": head_width_div(out), "patch": patch,
                 "layout": layout, "rows": [("embedder", f"resized from patch {infer_patch_size(stripped)} to {patch}"),
                          ("inherited", f"{len(inherited)} of {head_total} Detailer Head tensors from the {current} "
                                        "head (listed in l2p.inherited_head)")]}


def _summary(path: str, exp: Export, s: dict) -> str:
    """What the CLI prints: where the file went and what it is (the full metadata: --print-metadata)."""
    def count(pred) -> int:
        return sum(p.meta.numel() for p in exp.plan if pred(p.name))

    total, head = count(lambda n: True), count(lambda n: n.startswith(HEAD_PREFIX))
    narrow = f" ({s['width_div']}x narrower than the official head)" if s["width_div"] != 1 else ""
    source = f"{exp.metadata['l2p.source_name']} (sha256 {exp.metadata['l2p.source_hash'][:12]})"
    rows = [("source", source), ("architecture", s["arch"].label), ("patch", str(s["patch"])),
            ("head", f"{s['head']}{narrow}"), ("layout", s["layout"]),
            ("parameters", f"{total:,} ({head:,} in the Detailer Head)"),
            ("trainable", exp.metadata["l2p.policy_report"]), *s["rows"]]
    return "\n".join([f"wrote {path}", *(f"  {k:<14}{v}" for k, v in rows)])


if __name__ == "__main__":
    sys.exit(main())
