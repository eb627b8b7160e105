"""Sampling nodes: L2PEmptyImage (sizes, presets, token grid) and L2PNoiseShift (manual or resolution-aware)."""

from __future__ import annotations

import torch
from comfy_api.latest import io

import nodes as comfy_nodes

from ..l2p.schedule import auto_shift, native_pixels
from ..l2p.sizes import CUSTOM, FITS, MAX_BATCH, MIN_SIDE, PRESETS, SHIFT_MAX, SHIFT_MIN, plan_size
from .comfy_core import HEAD_TILE, FlowSampling, check_empty_image, model_management

DEFAULT_PATCH, DEFAULT_HEAD = 16, "1k"


def model_geometry(model) -> tuple[int, str]:
    """(patch size, head variant) of an L2P MODEL; the 1K defaults without one."""
    if model is None:
        return DEFAULT_PATCH, DEFAULT_HEAD
    dit = model.model.diffusion_model
    patch = getattr(dit, "patch_size", DEFAULT_PATCH)
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    return int(patch), getattr(dit, "head_variant", DEFAULT_HEAD)


class L2PEmptyImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2PEmptyImage",
            display_name="L2P Empty Image",
            category="L2P/sampling",
            description="An empty full-resolution pixel latent (3 channels, zeros) for L2P models; the DiT sees "
                        "(width/patch) x (height/patch) tokens.",
            inputs=[
                io.Int.Input("width", default=1024, min=MIN_SIDE, max=comfy_nodes.MAX_RESOLUTION, step=16,
                             tooltip="Image width in pixels (preset custom): a multiple of the model's patch size "
                                     "(16 at 1K, 64 at 4K, 128 at 8K, 320 at 10K)."),
                io.Int.Input("height", default=1024, min=MIN_SIDE, max=comfy_nodes.MAX_RESOLUTION, step=16,
                             tooltip="Image height in pixels (preset custom)."),
                io.Int.Input("batch_size", default=1, min=1, max=MAX_BATCH, tooltip="Images per batch."),
                io.Model.Input("model", optional=True,
                               tooltip="Optional: the L2P model, to check the sides against its patch size and "
                                       "head (1K rules without it)."),
                io.Combo.Input("preset", options=[CUSTOM, *PRESETS], default=CUSTOM, optional=True,
                               tooltip="A common size; custom uses width and height."),
                io.Combo.Input("fit", options=list(FITS), default="reject", optional=True,
                               tooltip="A side that is not a valid multiple: reject with the nearest valid sizes, or "
                                       "snap it (up, as the official pipeline does, or to the nearest)."),
            ],
            outputs=[io.Latent.Output(tooltip="Zeros [batch, 3, height, width]: pixels in [-1, 1], for KSampler."),
                     io.String.Output(display_name="info", tooltip="Final size and the DiT's token grid.")],
        )

    @classmethod
    def execute(cls, width: int, height: int, batch_size: int = 1, model=None, preset: str = CUSTOM,
                fit: str = "reject") -> io.NodeOutput:
        if preset != CUSTOM:
            width, height = PRESETS[preset]
        plan = plan_size(width, height, *model_geometry(model), fit=fit)
        check_empty_image(model, batch_size, plan.height, plan.width)  # a size that cannot fit: one line, now
        latent = torch.zeros((batch_size, 3, plan.height, plan.width),
                             device=model_management.intermediate_device())
        return io.NodeOutput({"samples": latent}, plan.describe())


def effective_shift(mode: str, shift: float, width: int, height: int, patch_size: int) -> float:
    return auto_shift(shift, width, height, patch_size) if mode == "auto" else shift


class L2PNoiseShift(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2PNoiseShift",
            display_name="L2P Noise Shift",
            category="L2P/sampling",
            description="Sets the flow noise shift on a copy of the model (like ModelSamplingAuraFlow). auto scales "
                        "the shift with the image's pixel count: shift x sqrt(pixels / native pixels), where native "
                        "is the model's 64x64-token size (1024² at patch 16, 4096² at patch 64).",
            inputs=[
                io.Model.Input("model", tooltip="An L2P model (or any flow model with multiplier 1)."),
                io.Combo.Input("mode", options=["auto", "manual"], default="auto",
                               tooltip="auto: resolution-aware from the latent's size; manual: shift as given."),
                io.Float.Input("shift", default=3.0, min=SHIFT_MIN, max=SHIFT_MAX, step=0.01,
                               tooltip="manual: the shift. auto: the shift at the model's native size (3 for "
                                       "Z-Image-based L2P)."),
                io.Latent.Input("latent", optional=True,
                                tooltip="The latent you sample (from L2P Empty Image): auto reads its size."),
            ],
            outputs=[io.Model.Output(tooltip="The model with the shift applied (the input is not changed)."),
                     io.String.Output(display_name="info", tooltip="The shift used and why.")],
        )

    @classmethod
    def execute(cls, model, mode: str = "auto", shift: float = 3.0, latent=None) -> io.NodeOutput:
        patch, _ = model_geometry(model)
        if mode == "auto":
            if latent is None:
                raise ValueError("mode auto needs the latent input (connect L2P Empty Image) to read the size, or "
                                 "use mode manual")
            height, width = latent["samples"].shape[-2:]
        else:
            width = height = int(native_pixels(patch) ** 0.5)
        value = effective_shift(mode, shift, int(width), int(height), patch)
        m = model.clone()
        sampling = FlowSampling(model.model.model_config)
        sampling.set_parameters(shift=value, multiplier=1.0)
        m.add_object_patch("model_sampling", sampling)
        native = int(native_pixels(patch) ** 0.5)
        info = (f"shift {value:.3g} ({mode}" + (f": {shift:g} x sqrt({width}x{height} / {native}x{native})"
                                                 if mode == "auto" else "") + ")")
        return io.NodeOutput(m, info)


class L2PHeadTiling(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2PHeadTiling",
            display_name="L2P Head Tiling",
            category="L2P/sampling",
            description="How the Detailer Head runs at full resolution: in exact tiles (each with a halo as wide as "
                        "the head's receptive field, so the result equals the untiled head) to bound memory at "
                        "4K-10K. auto picks the largest tile that fits the device's free memory.",
            inputs=[
                io.Model.Input("model", tooltip="An L2P model."),
                io.Combo.Input("mode", options=["auto", "off", "fixed"], default="auto",
                               tooltip="auto: from free memory (untiled when it fits); off: never tile; fixed: "
                                       "tile_size."),
                io.Int.Input("tile_size", default=1024, min=16, max=16384, step=16,
                             tooltip="fixed mode: tile side in pixels (rounded up to the head's grid: 16 at 1K, "
                                     "64 at 4K, 128 at 8K, 320 at 10K)."),
            ],
            outputs=[io.Model.Output(tooltip="The model with the tiling setting (the input is not changed).")],
        )

    @classmethod
    def execute(cls, model, mode: str = "auto", tile_size: int = 1024) -> io.NodeOutput:
        m = model.clone()
        options = m.model_options.setdefault("transformer_options", {})
        options[HEAD_TILE] = {"auto": "auto", "off": 0, "fixed": tile_size}[mode]
        return io.NodeOutput(m)
