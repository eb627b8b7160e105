"""A Qwen3-architecture text encoder of any size as a native CLIP (for small models trained with this pack).

Z-Image's own Qwen3-4B loads with the stock CLIPLoader; ComfyUI hard-codes that size. Small models that we
train (the tiny test and demo worlds) use the same architecture, tokenizer and chat template at other
widths, so their configuration is read from tensor shapes, like the L2P loader does.
"""

from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management
import comfy.sd
import comfy.supported_models_base
import comfy.text_encoders.llama as llama
import comfy.text_encoders.z_image as z_image
import folder_paths
import torch
from comfy import sd1_clip
from comfy_api.latest import io

from .files import load_safetensors


@dataclass
class Qwen3AnyConfig(llama.Qwen3_4BConfig):
    head_dim: int = 128  # a field here (a class constant in ComfyUI's 4B config)


class Qwen3Any(llama.BaseLlama, torch.nn.Module):
    def __init__(self, config_dict, dtype, device, operations):
        super().__init__()
        config = Qwen3AnyConfig(**config_dict)
        self.num_layers = config.num_hidden_layers
        self.model = llama.Llama2_(config, device=device, dtype=dtype, ops=operations)
        self.dtype = dtype


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


def clip_target_for(config: dict) -> comfy.supported_models_base.ClipTarget:
    class Qwen3AnyModel(sd1_clip.SDClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006 (ComfyUI's signature)
            super().__init__(device=device, layer="hidden", layer_idx=-2, textmodel_json_config=config, dtype=dtype,
                             special_tokens={"pad": 151643}, layer_norm_hidden_state=False, model_class=Qwen3Any,
                             enable_attention_masks=True, return_attention_masks=True, model_options=model_options)

    class Qwen3AnyTE(sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006
            super().__init__(device=device, dtype=dtype, name="qwen3_4b", clip_model=Qwen3AnyModel,
                             model_options=model_options)

    return comfy.supported_models_base.ClipTarget(z_image.ZImageTokenizer, Qwen3AnyTE)


def load_qwen3_any(sd: dict[str, torch.Tensor]) -> comfy.sd.CLIP:
    config = qwen3_config_from_shapes(sd)
    params = sum(t.numel() for t in sd.values())
    clip = comfy.sd.CLIP(target=clip_target_for(config), parameters=params,
                         model_options={"dtype": comfy.model_management.text_encoder_dtype()})
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
