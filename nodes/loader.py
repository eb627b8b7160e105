"""L2PModelLoader: an L2P checkpoint (official or ComfyUI layout) -> native MODEL."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..l2p.format.keys import L2PFormatError
from .comfy_core import load_l2p_file
from .files import checkpoint_names, checkpoint_path

WEIGHT_DTYPES: dict[str, torch.dtype | None] = {
    "default": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "fp8_e4m3fn": torch.float8_e4m3fn,
}


class L2PModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2PModelLoader",
            display_name="L2P Model Loader",
            category="L2P/loaders",
            description="Loads an L2P pixel-space checkpoint (official model-1k-merge layout or ComfyUI-packed) as a "
                        "native MODEL for the stock samplers. Decode with VAELoader 'pixel_space' + VAEDecode.",
            inputs=[
                io.Combo.Input("ckpt_name", options=checkpoint_names(),
                               tooltip="An L2P .safetensors file from models/l2p or models/diffusion_models. The "
                                       "architecture is read from the tensors, not the file name."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default",
                               tooltip="Storage dtype of the weights. default: ComfyUI picks for your device "
                                       "(bf16 on most GPUs, fp32 on CPU); fp8_e4m3fn halves memory again and "
                                       "computes in bf16/fp16."),
            ],
            outputs=[io.Model.Output(tooltip="The L2P model; latents are pixels in [-1, 1] with 3 channels.")],
        )

    @classmethod
    def execute(cls, ckpt_name: str, weight_dtype: str = "default") -> io.NodeOutput:
        try:
            model = load_l2p_file(checkpoint_path(ckpt_name), dtype=WEIGHT_DTYPES[weight_dtype])
        except L2PFormatError as e:
            raise ValueError(f"{ckpt_name}: {e}") from None
        return io.NodeOutput(model)
