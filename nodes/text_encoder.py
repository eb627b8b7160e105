"""A Qwen3-architecture text encoder of any size as a native CLIP (for small models trained with this pack).

Z-Image's own Qwen3-4B loads with the stock CLIPLoader; ComfyUI hard-codes that size. Small models that we
train (the tiny test and demo worlds) use the same architecture, tokenizer and chat template at other
widths, so their configuration is read from tensor shapes, like the L2P loader does.
"""

from __future__ import annotations

import folder_paths
import torch
from comfy_api.latest import io

from .comfy_core import CLIP, model_management, qwen3_clip_target
from .files import load_safetensors


def qwen3_config_from_shapes(sd: dict[str, torch.Tensor]) -> dict:
    """Qwen3 widths and depth from a transformers-layout state dict (``model.layers.N...``)."""
    try:
        emb = sd["model.embed_tokens.weight"]
        head_dim = sd["model.layers.0.self_attn.q_norm.weight"].shape[0]
        q = sd["model.layers.0.self_attn.q_proj.weight"].shape[0]
        kv = sd["model.layers.0.self_attn.k_proj.weight"].shape[0]
        inter = sd["model.layers.0.mlp.gate_proj.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"not a Qwen3 text encoder (missing {e.args[0]}): pick a Qwen3-architecture "
                         "safetensors file") from None
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("model.layers."))
    if layers < 3:
        raise ValueError(f"the text encoder has {layers} layers; Z-Image conditioning reads the second-to-last "
                         "hidden state, so at least 3 are needed")
    return {"vocab_size": emb.shape[0], "hidden_size": emb.shape[1], "intermediate_size": inter,
            "num_hidden_layers": layers, "num_attention_heads": q // head_dim, "num_key_value_heads": kv // head_dim,
            "head_dim": head_dim}


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
