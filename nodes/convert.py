"""Conversion nodes: L2PSourceModelLoader, L2PConvert and L2PSaveCheckpoint (library: l2p/convert.py)."""

from __future__ import annotations

import os

import folder_paths
import torch
from comfy_api.latest import io

from ..l2p.arch import ARCHITECTURES, detect_arch, supported_list
from ..l2p.convert import INITS, distill_summary, plan_conversion
from ..l2p.distill import DISTILL_INIT, DistillConfig, distilled_conversion, tensor_batches
from ..l2p.format.export import OWN, plan_export
from ..l2p.format.keys import L2PFormatError
from ..l2p.format.layouts import COMFY, OFFICIAL, source_arch
from ..l2p.format.tensor_io import DictSource, open_source
from ..l2p.head import head_for_patch
from ..l2p.init_fit import fit_images, patch_pairs
from ..l2p.policies import POLICIES
from .comfy_core import (
    METADATA,
    ProgressBar,
    is_l2p,
    is_lumina2,
    load_l2p_state_dict,
    load_source_state_dict,
    model_management,
    patched_state_dict,
)
from .files import L2P_FOLDER, new_checkpoint_path, source_names, source_path
from .loader import WEIGHT_DTYPES

FIT_IMAGES = 32
DISTILL_SIZE, DISTILL_BATCH = 256, 2


def _policy(policy: str, custom_blocks: str) -> str:
    return f"custom:{custom_blocks}" if policy == "custom" else policy


class L2PSourceModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2PSourceModelLoader",
            display_name="L2P Source Model Loader",
            category="L2P/convert",
            description="Loads the latent DiT to convert (Z-Image Turbo or base, Lumina-Image 2.0) from a single "
                        "file or a diffusers folder in models/diffusion_models. The MODEL samples with the stock "
                        "nodes (latent + VAE) and feeds L2P Convert.",
            inputs=[
                io.Combo.Input("source", options=source_names(),
                               tooltip="A .safetensors file (ComfyUI or diffusers names) or a diffusers folder "
                                       "(shown with a trailing /: config.json + sharded weights, or a pipeline "
                                       "folder with transformer/) in models/diffusion_models."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default",
                               tooltip="Storage dtype of the weights; default lets ComfyUI pick for your device."),
            ],
            outputs=[io.Model.Output(tooltip="The latent source model."),
                     io.String.Output(display_name="architecture",
                                      tooltip="What was detected: architecture, sizes, parameters.")],
        )

    @classmethod
    def execute(cls, source: str, weight_dtype: str = "default") -> io.NodeOutput:
        try:
            src = open_source(source_path(source))
            sd = {k: src.get(k) for k in src.meta}
            model, arch, cfg = load_source_state_dict(sd, dtype=WEIGHT_DTYPES[weight_dtype])
        except L2PFormatError as e:
            raise ValueError(f"{source}: {e}") from None
        params = sum(t.numel() for t in sd.values())
        text = (f"{arch.label}: dim {cfg.dim}, {cfg.n_layers} blocks, {cfg.n_heads} heads, latent patch "
                f"{cfg.patch_size} over {cfg.in_channels} channels, {params / 1e9:.3g}B parameters, default shift "
                f"{arch.default_shift:g}, text encoder {arch.text_encoder}")
        return io.NodeOutput(model, text)


class L2PConvert(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2PConvert",
            display_name="L2P Convert (latent -> pixel)",
            category="L2P/convert",
            description="Turns a latent Z-Image / Lumina-Image 2.0 MODEL into an L2P pixel MODEL: shared weights "
                        "are kept, the latent patch embedder and final layer are replaced by a pixel patch "
                        "embedder and a Detailer Head. The result samples at once with KSampler (untrained "
                        "parts are noise until fine-tuned) and saves with L2P Save Checkpoint.",
            inputs=[
                io.Model.Input("model", tooltip="A latent source from L2P Source Model Loader or any stock loader."),
                io.Int.Input("patch_size", default=16, min=8, max=256, step=8,
                             tooltip="Pixel patch size: 16 for 1K (the DiT sees (W/16) x (H/16) tokens). A size with "
                                     "a Detailer Head of its own (8, 16, 64, 128, 160) gets that head; others the 1K "
                                     "head, its token map resized."),
                io.Combo.Input("init", options=list(INITS), default="official",
                               tooltip="official: new embedder at default random init, as the authors did. "
                                       "vae_lsq / vae_orth: embedder fitted so a pixel patch embeds like its "
                                       "VAE latent (needs the source's VAE); vae_orth also keeps noise statistics. "
                                       "distill (Z-Image, patch 16): vae_orth, then the embedder and the trainable "
                                       "blocks below the first frozen one learn the source's tokens and the head "
                                       "learns to decode the frozen trunk (needs the VAE; minutes to hours)."),
                io.Combo.Input("policy", options=[*POLICIES, "custom"], default="official",
                               tooltip="Trainable set stored with the model for fine-tuning. official: embedders, "
                                       "refiners, first 5 and last 5 blocks, head. paper: input projection, noise "
                                       "refiners, first and last block, head. custom: head, embedder and the "
                                       "blocks below."),
                io.String.Input("custom_blocks", default="0-1,-2--1",
                                tooltip="For policy custom: main blocks to train, e.g. 0-4,25-29 (negative = "
                                        "from the end)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                             tooltip="Seed of the new layers' initialisation (the same seed gives the same model)."),
                io.Vae.Input("vae", optional=True, tooltip="The source's VAE, for the vae_* inits."),
                io.Image.Input("fit_images", optional=True,
                               tooltip="Optional images for the vae_* fit (cropped to multiples of the patch "
                                       "size) and for distill (ideally the source's own generations, centre-"
                                       "cropped to 256 px); built-in procedural images are used without them."),
                io.Int.Input("distill_steps", default=DistillConfig.align_steps, min=1, max=100000, optional=True,
                             tooltip="For init distill: steps of each stage (token alignment, then the head), "
                                     f"{DISTILL_BATCH} images a step. Cancel stops the run."),
            ],
            outputs=[io.Model.Output(tooltip="The L2P pixel model (latents are pixels in [-1, 1])."),
                     io.String.Output(display_name="report", tooltip="Architecture, init and trainable-set counts.")],
        )

    @classmethod
    def execute(cls, model, patch_size: int = 16, init: str = "official", policy: str = "official",
                custom_blocks: str = "", seed: int = 0, vae=None, fit_images=None,
                distill_steps: int = DistillConfig.align_steps) -> io.NodeOutput:
        base = model.model
        if is_l2p(model):
            raise ValueError("this MODEL is already an L2P pixel model: save it with L2P Save Checkpoint or sample "
                             "it; L2P Convert takes a latent model")
        if not is_lumina2(model):
            raise ValueError(f"L2P Convert cannot convert a {type(base).__name__} model: supported sources are "
                             f"{supported_list()}")
        sd = patched_state_dict(model)
        arch = source_arch(sd)  # with the source's own latent patch
        fit_pairs = None
        if init != "official":
            if vae is None:
                raise ValueError(f"init {init} needs the source's VAE: connect the vae input, or pick init official")
            fit_pairs = _fit_pairs(base, vae, fit_images, arch, patch_size)
        policy = _policy(policy, custom_blocks)
        if init == DISTILL_INIT:
            out_sd, metadata, summary = _distill(base, vae, fit_images, sd, fit_pairs, patch_size, seed, policy,
                                                 distill_steps)
        else:
            conv = plan_conversion(DictSource(sd), patch_size=patch_size, init=init, seed=seed, layout=COMFY,
                                   policy=policy, fit_pairs=fit_pairs, head_variant=head_for_patch(patch_size))
            out_sd, metadata, summary = {p.name: p.make() for p in conv.plan}, conv.metadata, f"init {init}"
        dtype = base.get_dtype()
        # In memory, nothing for dynamic VRAM to reload from: a plain ModelPatcher.
        pixel = load_l2p_state_dict(out_sd, dtype=dtype if dtype in (torch.float32, torch.bfloat16,
                                                                     torch.float16) else None, disable_dynamic=True)
        pixel.set_attachments(METADATA, metadata)
        report = f"{arch.label} -> L2P patch {patch_size}, {summary}; {metadata['l2p.policy_report']}"
        return io.NodeOutput(pixel, report)


def _distill(base, vae, images, sd: dict, fit_pairs, patch_size: int, seed: int, policy: str, steps: int):
    """``init distill`` (``l2p.distill``) on the compute device, with a progress bar and cancel."""
    if images is None:
        pixels = None
    else:
        side = min(images.shape[1:3]) // patch_size * patch_size
        if not side:
            raise ValueError(f"fit_images are smaller than one {patch_size}-pixel patch: use larger images")
        top, left = (images.shape[1] - side) // 2, (images.shape[2] - side) // 2
        pixels = images[:, top:top + side, left:left + side, :3].movedim(-1, 1).float() * 2 - 1
    device = model_management.get_torch_device()
    cap_dim = int(sd["cap_embedder.1.weight"].shape[1])
    cfg = DistillConfig(align_steps=steps, head_steps=steps, seed=seed)
    pbar = ProgressBar(2 * steps)

    def progress(stage: str, step: int, total: int, loss: float) -> None:
        model_management.throw_exception_if_processing_interrupted()
        pbar.update(1)

    out, metadata, rep = distilled_conversion(
        DictSource(sd), _latent_encoder(base, vae), tensor_batches(pixels, DISTILL_SIZE, DISTILL_BATCH, cap_dim, seed,
                                                                    device),
        fit_pairs, patch_size=patch_size, seed=seed, policy=policy, head_variant=head_for_patch(patch_size), cfg=cfg,
        device=device, progress=progress)
    return out, metadata, distill_summary(rep)


def _latent_encoder(base, vae):
    """Images [B, 3, H, W] in [-1, 1] -> the model's latents, through ComfyUI's VAE and the model's latent format."""

    def encode(x: torch.Tensor) -> torch.Tensor:
        latents = vae.encode(((x.float().cpu() + 1) / 2).movedim(1, -1))
        return base.process_latent_in(latents.to(model_management.intermediate_device())).to(x.device)

    return encode


def _fit_pairs(base, vae, images, arch, patch_size: int):
    """Pixel patches and their latents (in the model's latent space) for the vae_* fits."""
    if images is None:
        pixels = fit_images(FIT_IMAGES, max(patch_size, 256 // patch_size * patch_size))
    else:
        h, w = (s // patch_size * patch_size for s in images.shape[1:3])
        if not h or not w:
            raise ValueError(f"fit_images are smaller than one {patch_size}-pixel patch: use larger images")
        pixels = images[:, :h, :w, :3].movedim(-1, 1).float() * 2 - 1

    encode = _latent_encoder(base, vae)
    if vae.latent_channels != arch.latent_channels:
        raise ValueError(f"the VAE has {vae.latent_channels} latent channels, the model {arch.latent_channels}: "
                         "connect the source model's own VAE")
    return patch_pairs(pixels, encode, patch_size, arch.latent_patch, arch.vae_downscale)


class L2PSaveCheckpoint(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2PSaveCheckpoint",
            display_name="L2P Save Checkpoint",
            category="L2P/convert",
            description="Saves an L2P pixel MODEL to models/l2p as safetensors (official or ComfyUI layout) with "
                        "its metadata (architecture, patch, init, policy, source hash, pack version). Never "
                        "overwrites: a new numbered file each time, written atomically.",
            inputs=[
                io.Model.Input("model", tooltip="An L2P pixel model (from L2P Convert or L2P Model Loader)."),
                io.String.Input("filename_prefix", default="l2p-converted",
                                tooltip="File name inside models/l2p (sub-folders allowed); _00001 etc. is added."),
                io.Combo.Input("layout", options=[OFFICIAL, COMFY], default=OFFICIAL,
                               tooltip="official: the released L2P key names (split q/k/v; Z-Image only). comfy: "
                                       "ComfyUI's packed NextDiT names."),
            ],
            outputs=[io.String.Output(display_name="ckpt_name", tooltip="The saved file, as listed.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, filename_prefix: str = "l2p-converted", layout: str = OFFICIAL) -> io.NodeOutput:
        if not is_l2p(model):
            raise ValueError(f"L2P Save Checkpoint saves L2P pixel models; this is a {type(model.model).__name__}: "
                             "convert it with L2P Convert first")
        sd = patched_state_dict(model)
        arch = ARCHITECTURES[detect_arch(sd.keys()).name]
        if layout == OFFICIAL and not arch.official_layout:
            raise ValueError(f"the official layout exists only for Z-Image: save this {arch.label} model with "
                             "layout comfy")
        exp = plan_export(sd, layout, int(model.model.diffusion_model.patch_size),  # sd is on the CPU already
                          {"layout": OWN, "arch": arch.name, "pack_version": OWN},
                          inherited=model.get_attachment(METADATA))
        path = new_checkpoint_path(filename_prefix)
        exp.write(path, overwrite=False)
        name = os.path.relpath(path, os.path.join(folder_paths.models_dir, L2P_FOLDER)).replace(os.sep, "/")
        return io.NodeOutput(name, ui={"text": [name]})
