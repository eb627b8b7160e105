"""Demo-only nodes (category ``L2P/demo``) for the shapes world that the README's demo and ``bench/`` run.

The world's models are trained on a CPU in minutes, so two of its parts are smaller than anything ComfyUI's
stock loaders know: a Qwen3 text encoder over a word vocabulary (``shapes_world.text_encoder``) and a narrow
AutoencoderKL (the latent source's VAE; the L2P model needs none). These nodes load them; nothing else in
the pack depends on them.
"""

from __future__ import annotations

import functools
import os

import folder_paths
import torch
from comfy_api.latest import io

from ..shapes_world.text_encoder import ShapesTextEncoder, text_encoder_from_state
from .comfy_core import VAE
from .files import load_safetensors

DEMO = "L2P/demo"


@functools.lru_cache(maxsize=2)
def _encoder(path: str, mtime: float) -> ShapesTextEncoder:
    sd, metadata = load_safetensors(path)
    return text_encoder_from_state(sd, metadata)


class L2PDemoTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2PDemoTextEncode",
            display_name="L2P Demo Text Encode (shapes world)",
            category=DEMO,
            description="Demo only: encodes a prompt with the shapes world's tiny word-level Qwen3 text encoder "
                        "(the one the demo model was trained with). Real Z-Image models use the stock "
                        "CLIPLoader (type lumina2) and CLIPTextEncode.",
            inputs=[
                io.Combo.Input("text_encoder", options=folder_paths.get_filename_list("text_encoders"),
                               tooltip="The shapes-world text encoder file in models/text_encoders "
                                       "(l2p-shapes-te.safetensors ships with the pack's demo)."),
                io.String.Input("text", multiline=True, default="a photo of a red circle on a striped background",
                                tooltip="A shapes-world prompt, e.g. 'two blue squares on a plain background' or "
                                        "'a red circle to the left of a green triangle on a dotted background'. "
                                        "Unknown words are encoded as <unk>; empty = unconditional."),
            ],
            outputs=[io.Conditioning.Output(tooltip="The prompt's features for KSampler (positive or negative).")],
        )

    @classmethod
    def execute(cls, text_encoder: str, text: str) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("text_encoders", text_encoder)
        encoder = _encoder(path, os.path.getmtime(path))
        with torch.no_grad():
            feats = encoder([text])[0]
        return io.NodeOutput([[feats[None].float(), {}]])


def ddconfig_from_shapes(sd: dict[str, torch.Tensor]) -> tuple[dict, int]:
    """ComfyUI's AutoencoderKL config of a diffusers-layout AutoencoderKL of any width (read from shapes)."""
    try:
        blocks = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.down_blocks.")})
        widths = [sd[f"encoder.down_blocks.{b}.resnets.0.conv2.weight"].shape[0] for b in blocks]
        res_blocks = len({k.split(".")[4] for k in sd if k.startswith("encoder.down_blocks.0.resnets.")})
        z = sd["decoder.conv_in.weight"].shape[1]
        embed = sd["post_quant_conv.weight"].shape[1]
    except (KeyError, IndexError):
        raise ValueError("not a diffusers AutoencoderKL file (no encoder.down_blocks / decoder.conv_in): pick the "
                         "shapes world's VAE, or use the stock VAE Loader") from None
    if any(w % 32 for w in widths):
        raise ValueError(f"VAE widths {widths} are not multiples of 32: ComfyUI's AutoencoderKL uses 32 norm "
                         "groups; train the VAE with norm_num_groups=32")
    if "encoder.mid_block.attentions.0.to_q.weight" not in sd:
        raise ValueError("this VAE has no mid-block attention, which ComfyUI's AutoencoderKL always has: train it "
                         "with mid_block_add_attention=True")
    ddconfig = {"double_z": True, "z_channels": z, "resolution": 256, "in_channels": 3, "out_ch": 3,
                "ch": widths[0], "ch_mult": [w // widths[0] for w in widths], "num_res_blocks": res_blocks,
                "attn_resolutions": [], "dropout": 0.0}
    return ddconfig, embed


class L2PDemoVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2PDemoVAELoader",
            display_name="L2P Demo VAE Loader (shapes world)",
            category=DEMO,
            description="Demo only: loads the shapes world's narrow AutoencoderKL (diffusers layout, widths read "
                        "from the tensors), the latent source model's VAE. L2P models need no VAE: they decode "
                        "with the stock VAE Loader's pixel_space.",
            inputs=[
                io.Combo.Input("vae_name", options=folder_paths.get_filename_list("vae"),
                               tooltip="The shapes world's VAE (.safetensors, diffusers AutoencoderKL) in "
                                       "models/vae."),
            ],
            outputs=[io.Vae.Output(tooltip="The VAE for VAE Decode / VAE Encode.")],
        )

    @classmethod
    def execute(cls, vae_name: str) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("vae", vae_name)
        sd, _ = load_safetensors(path)
        ddconfig, embed = ddconfig_from_shapes(sd)
        vae = VAE(sd=sd, config={"params": {"ddconfig": ddconfig, "embed_dim": embed}})
        vae.latent_channels = ddconfig["z_channels"]
        vae.downscale_ratio = vae.upscale_ratio = 2 ** (len(ddconfig["ch_mult"]) - 1)
        return io.NodeOutput(vae)
