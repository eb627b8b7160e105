"""A Qwen3-architecture text encoder of any size as a native CLIP (for small models trained with this pack).

Z-Image's own Qwen3-4B loads with the stock CLIPLoader; ComfyUI hard-codes that size. Small models that we
train (the tiny test and demo worlds) use the same architecture, tokenizer and chat template at other
widths, so their configuration is read from tensor shapes, like the L2P loader does.
"""

from __future__ import annotations

import folder_paths
import torch
from comfy_api.latest import io

from ..l2p.text_encoding import qwen3_config_from_shapes
from .comfy_core import CLIP, model_management, qwen3_clip_target
from .files import load_safetensors


def load_qwen3_any(sd: dict[str, torch.Tensor]) -> CLIP:
    config = qwen3_config_from_shapes(sd)
    params = sum(t.numel() for t in sd.values())
    clip = CLIP(target=qwen3_clip_target(config), parameters=params,
                model_options={"dtype": model_management.text_encoder_dtype()})
    missing, unexpected = clip.load_sd(sd)
    missing = [k for k in missing if "lm_head" not in k]
    if missing:
        raise ValueError(f"text encoder file lacks {len(missing)} tensors (e.g. {missing[0]}): export it again")
    return clip


class L2PTextEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2PTextEncoderLoader",
            display_name="L2P Text Encoder Loader (any-size Qwen3)",
            category="L2P/loaders",
            description="Loads a Qwen3-architecture text encoder of any size (configuration read from tensor "
                        "shapes) with Z-Image's tokenizer and template. For Z-Image's Qwen3-4B use the stock "
                        "CLIPLoader (type lumina2).",
            inputs=[
                io.Combo.Input("text_encoder_name", options=folder_paths.get_filename_list("text_encoders"),
                               tooltip="A .safetensors Qwen3 text encoder from models/text_encoders."),
            ],
            outputs=[io.Clip.Output(tooltip="The text encoder for CLIPTextEncode (Z-Image template).")],
        )

    @classmethod
    def execute(cls, text_encoder_name: str) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("text_encoders", text_encoder_name)
        sd, _ = load_safetensors(path)
        return io.NodeOutput(load_qwen3_any(sd))
