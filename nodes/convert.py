"""Conversion nodes: L2PSourceModelLoader, L2PConvert and L2PSaveCheckpoint (library: l2p/convert.py)."""

from __future__ import annotations

import os

import folder_paths
import torch
from comfy_api.latest import io

from ..l2p.arch import ARCHITECTURES, detect_arch, supported_list
from ..l2p.convert import INITS, plan_conversion
from ..l2p.format.export import OWN, plan_export
from ..l2p.format.keys import L2PFormatError
from ..l2p.format.layouts import COMFY, OFFICIAL
from ..l2p.format.tensor_io import DictSource, open_source
from ..l2p.init_fit import FIT_INITS, fit_images, patch_pairs
from ..l2p.policies import POLICIES
from .comfy_core import (
    METADATA,
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
                             tooltip="Pixel patch size: 16 for 1K (the DiT sees (W/16) x (H/16) tokens)."),
                io.Combo.Input("init", options=list(INITS), default="official",
                               tooltip="official: new embedder at default random init, as the authors did. "
                                       "vae_lsq / vae_orth: embedder fitted so a pixel patch embeds like its "
                                       "VAE latent (needs the source's VAE); vae_orth also keeps noise statistics."),
                io.Combo.Input("policy", options=[*POLICIES, "custom"], default="official",
                               tooltip="Trainable set stored with the model for fine-tuning. official: embedders, "
                                       "refiners, first 5 and last 5 blocks, head. paper: input projection, first "
                                       "and last block, head. custom: head, embedder and the blocks below."),
                io.String.Input("custom_blocks", default="0-1,-2--1",
                                tooltip="For policy custom: main blocks to train, e.g. 0-4,25-29 (negative = "
                                        "from the end)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Seed of the new layers' initialisation (the same seed gives the same model)."),
                io.Vae.Input("vae", optional=True, tooltip="The source's VAE, for the vae_* inits."),
                io.Image.Input("fit_images", optional=True,
                               tooltip="Optional images for the vae_* fit (cropped to multiples of the patch "
                                       "size); built-in procedural images are used without them."),
            ],
            outputs=[io.Model.Output(tooltip="The L2P pixel model (latents are pixels in [-1, 1])."),
                     io.String.Output(display_name="report", tooltip="Architecture, init and trainable-set counts.")],
        )

    @classmethod
    def execute(cls, model, patch_size: int = 16, init: str = "official", policy: str = "official",
                custom_blocks: str = "", seed: int = 0, vae=None, fit_images=None) -> io.NodeOutput:
        base = model.model
        if is_l2p(model):
            raise ValueError("this MODEL is already an L2P pixel model: save it with L2P Save Checkpoint or sample "
                             "it; L2P Convert takes a latent model")
        if not is_lumina2(model):
            raise ValueError(f"L2P Convert cannot convert a {type(base).__name__} model: supported sources are "
                             f"{supported_list()}")
        sd = patched_state_dict(model)
        arch = detect_arch(sd.keys())
        fit_pairs = None
        if init in FIT_INITS:
            if vae is None:
                raise ValueError(f"init {init} needs the source's VAE: connect the vae input, or pick init official")
            fit_pairs = _fit_pairs(base, vae, fit_images, arch, patch_size)
        conv = plan_conversion(DictSource(sd), patch_size=patch_size, init=init, seed=seed, layout=COMFY,
                               policy=_policy(policy, custom_blocks), fit_pairs=fit_pairs)
        out_sd = {p.name: p.make() for p in conv.plan}
        dtype = base.get_dtype()
        # In memory, nothing for dynamic VRAM to reload from: a plain ModelPatcher.
        pixel = load_l2p_state_dict(out_sd, dtype=dtype if dtype in (torch.float32, torch.bfloat16,
                                                                     torch.float16) else None, disable_dynamic=True)
        pixel.set_attachments(METADATA, conv.metadata)
        report = f"{arch.label} -> L2P patch {patch_size}, init {init}; {conv.metadata['l2p.policy_report']}"
        return io.NodeOutput(pixel, report)


def _fit_pairs(base, vae, images, arch, patch_size: int):
    """Pixel patches and their latents (in the model's latent space) for the vae_* fits."""
    if images is None:
        pixels = fit_images(FIT_IMAGES, max(patch_size, 256 // patch_size * patch_size))
    else:
        h, w = (s // patch_size * patch_size for s in images.shape[1:3])
        if not h or not w:
            raise ValueError(f"fit_images are smaller than one {patch_size}-pixel patch: use larger images")
        pixels = images[:, :h, :w, :3].movedim(-1, 1).float() * 2 - 1

    def encode(x: torch.Tensor) -> torch.Tensor:
        latents = vae.encode(((x + 1) / 2).movedim(1, -1))
        return base.process_latent_in(latents.to(model_management.intermediate_device())).cpu()

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
