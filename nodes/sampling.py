"""L2PEmptyImage: the full-resolution empty 'latent' (pixels) with sides checked against the patch size."""

from __future__ import annotations

import math

import comfy.model_management
import torch
from comfy_api.latest import io

import nodes as comfy_nodes

from ..l2p.head import head_multiple

DEFAULT_MULTIPLE = 16


def side_multiple(model) -> int:
    """Sides must be multiples of both the patch size and the head's pooling factor."""
    if model is None:
        return DEFAULT_MULTIPLE
    dit = model.model.diffusion_model
    patch = getattr(dit, "patch_size", 1)
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    return math.lcm(int(patch), head_multiple(getattr(dit, "head_variant", "1k")))


def check_sides(width: int, height: int, multiple: int) -> None:
    for name, side in (("width", width), ("height", height)):
        if side % multiple:
            lo, hi = side // multiple * multiple, (side // multiple + 1) * multiple
            raise ValueError(f"{name} {side} is not a multiple of {multiple} (the model's patch size): "
                             f"use {lo or hi} or {hi}")


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
                io.Int.Input("width", default=1024, min=16, max=comfy_nodes.MAX_RESOLUTION, step=16,
                             tooltip="Image width in pixels; a multiple of the model's patch size (16 at 1K)."),
                io.Int.Input("height", default=1024, min=16, max=comfy_nodes.MAX_RESOLUTION, step=16,
                             tooltip="Image height in pixels; a multiple of the model's patch size (16 at 1K)."),
                io.Int.Input("batch_size", default=1, min=1, max=4096, tooltip="Images per batch."),
                io.Model.Input("model", optional=True,
                               tooltip="Optional: the L2P model, to check the sides against its patch size "
                                       "(16 is assumed without it)."),
            ],
            outputs=[io.Latent.Output(tooltip="Zeros [batch, 3, height, width]: pixels in [-1, 1], for KSampler.")],
        )

    @classmethod
    def execute(cls, width: int, height: int, batch_size: int = 1, model=None) -> io.NodeOutput:
        check_sides(width, height, side_multiple(model))
        latent = torch.zeros((batch_size, 3, height, width), device=comfy.model_management.intermediate_device())
        return io.NodeOutput({"samples": latent})
