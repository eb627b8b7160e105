"""An L2P checkpoint as a native ComfyUI MODEL: ComfyUI's own NextDiT trunk plus the Detailer Head.

The trunk is ComfyUI's ``NextDiT`` (its attention backends, memory management, offloading, fp8 and LoRA
patching keep working); only the last step differs: instead of the final layer, the exactly Ht*Wt image
tokens become a [B, dim, Ht, Wt] feature map that the Detailer Head turns into ``x0 - noise`` at full
resolution. The model returns its negation, which is ComfyUI's flow (CONST) convention, so stock
samplers, ModelSamplingAuraFlow and VAEDecode(pixel_space) work unchanged.
"""

from __future__ import annotations

import logging
import math

import comfy.latent_formats
import comfy.ldm.common_dit
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils
import torch
from comfy.ldm.lumina.model import NextDiT
from comfy.ldm.modules.diffusionmodules.mmdit import TimestepEmbedder

from ..l2p.arch import ARCHITECTURES, LUMINA2, SourceArch, detect_arch
from ..l2p.head import build_head, head_multiple
from ..l2p.head_tiling import auto_tile_size, run_head_tiled
from ..l2p.layouts import (
    OFFICIAL,
    L2PConfig,
    L2PFormatError,
    detect_layout,
    infer_config,
    official_to_comfy,
    strip_prefix,
    to_comfy_layout,
    trunk_config,
)

HEAD_TILE = "l2p_head_tile"  # transformer_options key set by L2PHeadTiling
METADATA = "l2p_metadata"  # ModelPatcher attachment: the l2p.* metadata a checkpoint is saved with
# Calibrated on CPU at 512/1024/2048 with the real widths (bench/calibrate_memory.py, README "Memory").
MEMORY_USAGE_FACTOR = 0.07


class L2PPixels(comfy.latent_formats.ChromaRadiance):
    """Pixels in [-1, 1], 3 channels, identity in/out: the same contract as ChromaRadiance's format."""


class NextDiTFromShapes(NextDiT):
    """ComfyUI's NextDiT with the widths it derives from ``dim`` (feed-forward, timestep MLP) taken from the
    checkpoint's shapes instead, so models of any size load, not only the released ones (dim 3840 / 2304)."""

    def __init__(self, *, ffn_hidden_dim: int, t_embed_hidden: int, adaln_dim: int, device=None, dtype=None,
                 operations=None, **kwargs):
        kwargs.pop("multiple_of", None)
        kwargs.pop("ffn_dim_multiplier", None)
        # FeedForward rounds int(dim) up to a multiple of `multiple_of`: with multiple_of = hidden it is exact.
        super().__init__(multiple_of=ffn_hidden_dim, ffn_dim_multiplier=None, device=device, dtype=dtype,
                         operations=operations, **kwargs)
        self.t_embedder = TimestepEmbedder(t_embed_hidden, output_size=adaln_dim, dtype=dtype, device=device,
                                           operations=operations)


class NextDiTL2P(NextDiTFromShapes):
    """NextDiT with the final layer replaced by the L2P Detailer Head."""

    def __init__(self, *, head_variant: str = "1k", head_width_div: int = 1, device=None, dtype=None, operations=None,
                 **kwargs):
        super().__init__(device=device, dtype=dtype, operations=operations, **kwargs)
        del self.final_layer
        del self.norm_final
        self.head_variant = head_variant
        self.pad_multiple = math.lcm(self.patch_size, head_multiple(head_variant))
        self.local_decoder = build_head(head_variant, self.dim, in_channels=self.in_channels, ops=operations,
                                        device=device, dtype=dtype, width_div=head_width_div)

    def image_features(self, tokens: torch.Tensor, cap_len: int, h_tokens: int, w_tokens: int) -> torch.Tensor:
        """The real image tokens (not the padding) as a [B, dim, Ht, Wt] map, height-major."""
        img = tokens[:, cap_len:cap_len + h_tokens * w_tokens]
        return img.reshape(tokens.shape[0], h_tokens, w_tokens, tokens.shape[-1]).permute(0, 3, 1, 2)

    def _forward(self, x, timesteps, context, num_tokens, attention_mask=None, **kwargs):
        t = 1.0 - timesteps
        _, _, h, w = x.shape
        x = comfy.ldm.common_dit.pad_to_patch_size(x, (self.pad_multiple, self.pad_multiple))
        t = self.t_embedder(t * self.time_scale, dtype=x.dtype)
        cap_feats = self.cap_embedder(context)
        transformer_options = kwargs.get("transformer_options", {})
        tokens, mask, img_size, cap_size, freqs_cis = self.patchify_and_embed(
            x, cap_feats, attention_mask, t, num_tokens, transformer_options=transformer_options)
        freqs_cis = freqs_cis.to(tokens.device)
        for layer in self.layers:
            tokens = layer(tokens, mask, freqs_cis, t, transformer_options=transformer_options)
        H, W = img_size[0]
        features = self.image_features(tokens, cap_size[0], H // self.patch_size, W // self.patch_size)
        tile = self.head_tile(x, transformer_options.get(HEAD_TILE, "auto"))
        out = run_head_tiled(self.local_decoder, x, features, tile) if tile else self.local_decoder(x, features)
        return -out[:, :, :h, :w]

    def head_tile(self, x: torch.Tensor, setting) -> int:
        """The head's tile side: a fixed number, 0 (untiled), or "auto" from the device's free memory."""
        if setting != "auto":
            return int(setting)
        free = comfy.model_management.get_free_memory(x.device)
        return auto_tile_size(self.head_variant, x.shape[-2], x.shape[-1], x.shape[0], int(free), x.element_size(),
                              feature_dim=self.dim)


class L2PModel(comfy.model_base.Lumina2):
    """Lumina2's conditioning (c_crossattn, num_tokens, attention mask) and flow sampling, L2P's network."""

    def __init__(self, model_config, model_type=comfy.model_base.ModelType.FLOW, device=None):
        comfy.model_base.BaseModel.__init__(self, model_config, model_type, device=device, unet_model=NextDiTL2P)


def unet_config_for(cfg: L2PConfig) -> dict:
    """NextDiT constructor arguments for a configuration read from shapes plus its architecture's constants."""
    if cfg.n_noise_refiner != cfg.n_context_refiner:
        raise ValueError(f"{cfg.n_noise_refiner} noise refiners but {cfg.n_context_refiner} context refiners: "
                         "ComfyUI's NextDiT needs equal counts; this checkpoint is not supported")
    arch = ARCHITECTURES[cfg.arch]
    config = {
        "image_model": "lumina2",
        "patch_size": cfg.patch_size,
        "in_channels": cfg.in_channels,
        "dim": cfg.dim,
        "n_layers": cfg.n_layers,
        "n_refiner_layers": cfg.n_noise_refiner,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.kv_heads,
        "qk_norm": True,
        "cap_feat_dim": cfg.cap_feat_dim,
        "axes_dims": list(cfg.axes_dims),
        "axes_lens": [1536, 512, 512] if arch.z_image_modulation else [300, 512, 512],
        "rope_theta": arch.rope_theta,
        "z_image_modulation": arch.z_image_modulation,
        "time_scale": arch.time_scale,
        "pad_tokens_multiple": 32 if cfg.pad_tokens and arch.z_image_modulation else None,
        "ffn_hidden_dim": cfg.ffn_hidden_dim,
        "t_embed_hidden": cfg.t_embed_hidden,
        "adaln_dim": cfg.adaln_dim,
    }
    if cfg.head_variant is not None:
        config["head_variant"] = cfg.head_variant
        config["head_width_div"] = cfg.head_width_div
    return config


class ZImageL2P(comfy.supported_models.ZImage):
    """Supported-model entry: Z-Image's text encoder and shift 3, L2P's pixel format and network."""

    unet_config = {"image_model": "lumina2"}
    required_keys = {"local_decoder.out_conv.weight"}
    latent_format = L2PPixels
    memory_usage_factor = MEMORY_USAGE_FACTOR
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]

    def get_model(self, state_dict, prefix="", device=None):
        sd = strip_prefix({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})
        self.unet_config.update(unet_config_for(infer_config(sd)))
        return L2PModel(self, device=device)

    def process_unet_state_dict(self, state_dict):
        return to_comfy_layout(state_dict)


class Lumina2L2P(ZImageL2P):
    """An L2P model converted from Lumina-Image 2.0: its Gemma-2 text encoder and shift 6."""

    required_keys = {"local_decoder.out_conv.weight", LUMINA2.marker}
    sampling_settings = comfy.supported_models.Lumina2.sampling_settings
    clip_target = comfy.supported_models.Lumina2.clip_target


L2P_CONFIGS = (Lumina2L2P, ZImageL2P)  # most specific first


class LatentSource(comfy.model_base.Lumina2):
    """A latent Z-Image / Lumina 2 source of any size (widths from shapes), for sampling and conversion."""

    def __init__(self, model_config, model_type=comfy.model_base.ModelType.FLOW, device=None):
        comfy.model_base.BaseModel.__init__(self, model_config, model_type, device=device,
                                            unet_model=NextDiTFromShapes)


def source_config_class(arch: SourceArch) -> type:
    """The stock supported-model class of a source arch (text encoder, shift, latent format)."""
    base = comfy.supported_models.Lumina2 if arch is LUMINA2 else comfy.supported_models.ZImage

    class SourceConfig(base):
        def get_model(self, state_dict, prefix="", device=None):
            return LatentSource(self, device=device)

    return SourceConfig


def core_knows_l2p() -> bool:
    """True when the running ComfyUI recognises L2P checkpoints itself (then the pack adds no second path)."""
    for cls in comfy.supported_models.models:
        if cls in L2P_CONFIGS:
            continue
        if "L2P" in cls.__name__ or any("local_decoder" in k for k in getattr(cls, "required_keys", ())):
            return True
    return False


def register_with_stock_loader() -> bool:
    """Let the stock UNETLoader detect L2P files (instead of loading them as latent Z-Image, silently wrong)."""
    if core_knows_l2p():
        logging.info("ComfyUI-L2P: this ComfyUI recognises L2P checkpoints itself; using its path")
        return False
    for cls in reversed(L2P_CONFIGS):
        if cls not in comfy.supported_models.models:
            comfy.supported_models.models.insert(0, cls)
    return True


def load_l2p_state_dict(sd: dict, dtype: torch.dtype | None = None, metadata: dict | None = None):
    """A state dict of either layout -> ModelPatcher, through ComfyUI's own diffusion-model loader."""
    if core_knows_l2p():
        model = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": dtype} if dtype else {},
                                                         metadata=metadata)
        if model is None:
            raise ValueError("this ComfyUI could not detect the model type: update ComfyUI or the checkpoint")
        return model
    sd = to_comfy_layout(sd)  # checks the file is L2P, then converts the keys once
    register_with_stock_loader()
    model = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": dtype} if dtype else {},
                                                     metadata=metadata)
    if model is None or not isinstance(model.model, L2PModel):
        raise ValueError("ComfyUI did not pick the L2P model class for this file: another custom node overrides "
                         "Z-Image detection; report this with your node list")
    return model


def load_source_state_dict(sd: dict, dtype: torch.dtype | None = None):
    """A latent Z-Image / Lumina 2 DiT (ComfyUI or diffusers names, any size) -> (ModelPatcher, arch, config).

    ComfyUI's own detection only knows the released sizes (by ``dim``); this reads every width from the
    shapes, so the same path serves a 6B Z-Image and the tiny models the tests build.
    """
    sd = strip_prefix(sd)
    if any(k.startswith("local_decoder.") for k in sd):
        raise L2PFormatError("this is already an L2P pixel model (it has local_decoder.*): load it with "
                             "L2PModelLoader")
    arch = detect_arch(sd.keys())
    if detect_layout(sd.keys()) == OFFICIAL:
        sd = official_to_comfy(sd)
    cfg = trunk_config(sd, in_channels=arch.latent_channels, head_variant=None)
    model_config = source_config_class(arch)(unet_config_for(cfg))
    return patcher_for(model_config, sd, dtype), arch, cfg


def patcher_for(model_config, sd: dict, dtype: torch.dtype | None):
    """What comfy.sd.load_diffusion_model_state_dict does once the model config is known."""
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    if dtype is None:
        dtype = comfy.model_management.unet_dtype(model_params=comfy.utils.calculate_parameters(sd),
                                                  supported_dtypes=list(model_config.supported_inference_dtypes),
                                                  weight_dtype=comfy.utils.weight_dtype(sd))
    manual_cast = comfy.model_management.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model(sd, "").to(offload_device)
    model.load_model_weights(sd, "")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
