"""The seam to ComfyUI: every use of ComfyUI's internals by this pack lives in this module.

An L2P checkpoint becomes a native MODEL on core's own ``NextDiT`` trunk, loaded through core's own
diffusion-model loader. Nothing of core is copied; the pack hooks these seams, which are the same in
0.3.75, 0.33.0 and 0.38.1 (``../shared/research/comfyui-versions.md``). Tested range: ``l2p.TESTED_COMFYUI``.

Model (``comfy.ldm.lumina.model``):
  S1 ``NextDiT.patchify_and_embed(x, ...)`` receives the pixels padded to the patch size, with
     ``transformer_options`` as a keyword (kept for the head; padded further to the head's multiple).
  S2 ``NextDiT.final_layer(tokens, adaln, **kw)`` is applied once to the unified tokens (made an identity).
  S3 ``NextDiT.unpatchify(tokens, img_size, cap_size, ...)`` makes the image; core then crops to the input
     size and negates (the head's output is returned there). S1-S3 are checked on every call
     (``CoreChanged``, one line naming the seam).
  S4 ``NextDiT(**unet_config)`` keyword names; attributes ``patch_size``, ``dim``, ``in_channels``,
     ``t_embedder``; ``norm_final`` optional (removed after 0.3.75); ``mmdit.TimestepEmbedder``.
Model classes: S5 ``model_base.BaseModel.__init__(config, model_type, device=, unet_model=)``, ``Lumina2``'s
  conditioning (``extra_conds``), ``ModelType.FLOW``, ``current_patcher``; S6 ``supported_models.ZImage`` /
  ``Lumina2`` (text encoder, shift) and the detection list ``supported_models.models``, whose entries'
  classmethod ``matches(unet_config, state_dict=None, ...)`` the pack's entries extend (other arguments passed on);
  S7 ``latent_formats.ChromaRadiance`` (pixels; the stock ``pixel_space`` VAE).
Loading and saving: S8 ``sd.load_diffusion_model_state_dict(sd, model_options=, metadata=[, disable_dynamic=])``,
  which calls the detected entry's ``get_model(sd, prefix)`` and then, through ``load_model_weights``, its
  ``process_unet_state_dict(sd)`` within the call (the pack's loader hands them the configuration it read
  once for that load), and ``ModelPatcher.cached_patcher_init``; every tensor of the file is checked before
  the network is built (``infer_config``; the stock path in ``get_model``, and before core's own conversion of
  official names, ``model_detection.convert_diffusers_mmdit``, which is wrapped), and ``process_unet_state_dict``
  checks that core's network has no tensor the file did not fill (``check_network``); S9 saving with
  ``ModelPatcher.model_state_dict_for_saving`` where it exists (dynamic VRAM), else
  ``load_models_gpu(force_patch_weights=True)`` + ``state_dict()``;
  S10 free memory from ``ModelPatcher.get_free_memory`` where it exists, else ``model_management``'s
  (``get_total_memory``, ``is_device_cpu`` for the size check before sampling).
Sampling guards: S11 ``comfy.sample.fix_empty_latent_channels(model, latent[, downscale_ratio_spacial, ...])``,
  which the stock samplers call before making noise, is wrapped once (when an L2P model is built): for L2P models
  it refuses a latent that is not 3-channel pixels (core would shrink the image 8x) and a size whose memory
  estimate cannot fit; S12 ``transformer_options`` keys ``sigmas`` (this call's sigma), ``sample_sigmas`` (the
  schedule, for the step number) and ``cond_or_uncond`` (how many conditionings share the call's batch), read
  by ``NextDiTL2P.forward``'s checks (conditioning, size, a non-finite output) when present.
LoRA: S13 ``lora.model_lora_keys_unet(model, key_map)`` (values: a key, or ``(key, (dim, offset, size))``)
  and ``lora.load_lora(lora, to_load[, log_missing])``, both wrapped (``install_lora_keys``).
Memory: S14 ``ldm.modules.attention.optimized_attention`` (the function core chose; its ``__name__`` says how it
  spends memory: ``attention_sub_quad`` / ``attention_split`` chunk to the free memory, ``attention_basic`` holds
  every score); S15 ``BaseModel.memory_required(input_shape, cond_shapes)`` (overridden: the per-part estimate;
  ``cond_shapes["c_crossattn"]`` sizes give the caption length), which core's samplers call to load and batch.
Step caching: S16 ``NextDiT.forward`` runs ``_forward`` through the ``WrappersMP.DIFFUSION_MODEL`` wrappers
  (``patcher_extension.get_all_wrappers``), which may answer a call without it (the stock EasyCache reuses a
  step's output change); ``_forward`` is only noted as entered (the S1-S3 checks apply to calls that entered
  it). EasyCache adds the cached change to its input in place; where no dtype cast copied it, that input is the
  tensor ``BaseModel.apply_model`` then passes to ``calculate_denoised`` (fp32, e.g. on CPU), which turned every
  cached step into noise: with such wrappers present the forward hands them a copy of the image.
Other internals the nodes use, re-exported here: ``model_management`` (devices, dtypes, interrupts),
  ``utils.ProgressBar``, ``model_sampling`` flow classes, ``sd.CLIP`` / ``sd.VAE``, ``sd1_clip``,
  ``text_encoders.llama`` / ``z_image``, ``supported_models_base.ClipTarget``; the install's folder, from
  ``comfy.model_management.__file__`` (for the tokenizer files core ships in ``comfy/text_encoders/qwen25_tokenizer``).
Features are detected by attribute or signature, never by version string. When core ships L2P itself
(a detection entry whose required keys name ``local_decoder``), loading defers to it for the files it
recognises (``core_l2p_configs``).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import math
import os
import weakref
from dataclasses import dataclass

import comfy.latent_formats
import comfy.ldm.common_dit
import comfy.lora
import comfy.model_base
import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.patcher_extension
import comfy.sample
import comfy.sd
import comfy.supported_models
import comfy.supported_models_base
import comfy.text_encoders.llama as llama
import comfy.text_encoders.z_image as z_image
import comfy.utils
import torch
from comfy import sd1_clip
from comfy.ldm.lumina.model import NextDiT
from comfy.ldm.modules.diffusionmodules.mmdit import TimestepEmbedder

from ..l2p import TESTED_COMFYUI
from ..l2p.arch import ARCHITECTURES, LUMINA2, SourceArch, detect_arch
from ..l2p.format.keys import HEAD_PREFIX, L2PFormatError, has_head, strip_prefix
from ..l2p.format.layouts import (
    OFFICIAL,
    QUANT_SUFFIXES,
    L2PConfig,
    detect_layout,
    infer_config,
    official_to_comfy,
    source_config,
    to_comfy_layout,
    to_comfy_with_config,
)
from ..l2p.format.lora import lora_key_map, unmatched
from ..l2p.format.tensor_io import read_safetensors
from ..l2p.head import build_head, head_multiple
from ..l2p.head_tiling import (
    SAMPLER_COPIES,
    SamplingMemory,
    auto_tile_size,
    fitting_size,
    run_head_tiled,
    sampling_memory,
)

HEAD_TILE = "l2p_head_tile"  # transformer_options key set by L2PHeadTiling
METADATA = "l2p_metadata"  # ModelPatcher attachment: the l2p.* metadata a checkpoint is saved with
# Core's one-factor-per-area estimate; L2P models override memory_required (S15) with the per-part estimate, so
# this only keeps a sane value for code that reads the attribute (README "Memory estimate").
MEMORY_USAGE_FACTOR = 0.07
# Caption tokens assumed by the size check before sampling, when the conditioning is not known yet.
PLAN_CAP_TOKENS = 512
# The configuration the pack's loader read for the load in progress (set around core's loader call, S8), so
# the file is checked and its configuration inferred once per load; None for loads core starts itself.
_LOADING: contextvars.ContextVar[L2PConfig | None] = contextvars.ContextVar("l2p_loading_config", default=None)

# Re-exported for the nodes, so that this module is the only one that imports ComfyUI internals.
ClipTarget = comfy.supported_models_base.ClipTarget
ProgressBar = comfy.utils.ProgressBar
model_management = comfy.model_management
CLIP = comfy.sd.CLIP
VAE = comfy.sd.VAE


def comfyui_version() -> str:
    try:
        from comfyui_version import __version__
    except ImportError:
        return "unknown"
    return __version__


class CoreChanged(RuntimeError):
    """A seam this pack relies on is not what it was: one line naming it, the version and the tested range."""

    def __init__(self, seam: str):
        super().__init__(f"ComfyUI-L2P: this ComfyUI ({comfyui_version()}) changed a part the pack relies on: {seam}; "
                         f"the pack is tested on ComfyUI {TESTED_COMFYUI}: update ComfyUI-L2P or report it")


class L2PInputError(ValueError):
    """What an L2P model was given cannot be sampled (conditioning, latent, a size this device cannot hold):
    one line, shown by ComfyUI as the node's error."""

    def __init__(self, message: str):
        super().__init__(f"ComfyUI-L2P: {message}")


class L2PNonFinite(FloatingPointError):
    """A step's output went NaN/inf: one line naming the step and sigma, instead of a black image."""

    def __init__(self, message: str):
        super().__init__(f"ComfyUI-L2P: {message}")


class FlowSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
    """ComfyUI's flow sampling (the class ModelSamplingAuraFlow builds)."""


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


class TokensThrough(torch.nn.Module):
    """Stands in for NextDiT's latent final layer (seam S2): the unified tokens pass through unchanged."""

    def forward(self, x: torch.Tensor, c=None, **kwargs) -> torch.Tensor:
        return x


class NextDiTL2P(NextDiTFromShapes):
    """Core's NextDiT, unchanged, with the Detailer Head where the final layer was.

    No copy of core's ``_forward``: it runs as it is (wrappers, block patches, rope options, reference
    inputs all reach the trunk). Three hooks make it L2P: ``patchify_and_embed`` keeps the padded pixels,
    ``final_layer`` passes the tokens through, ``unpatchify`` turns the image tokens into the head's feature
    map and returns the head's output, which core then crops and negates (flow convention).

    ``forward`` also guards the call, cheaply enough for every step: the latent's channels, the conditioning's
    width, tokens and finiteness, the size against free memory (once per shape), and a non-finite output
    (one reduction), each a one-line error instead of a crash deep in core or a black image.
    """

    def __init__(self, *, head_variant: str = "1k", head_width_div: int = 1, device=None, dtype=None, operations=None,
                 **kwargs):
        super().__init__(device=device, dtype=dtype, operations=operations, **kwargs)
        self.cap_feat_dim = kwargs["cap_feat_dim"]
        self.ffn_hidden_dim = kwargs["ffn_hidden_dim"]
        self.head_dim = self.dim // kwargs["n_heads"]
        self.final_layer = TokensThrough()
        if hasattr(self, "norm_final"):  # an unused norm in older cores (removed in 0.3.76+)
            del self.norm_final
        self.head_variant = head_variant
        self.pad_multiple = math.lcm(self.patch_size, head_multiple(head_variant))
        self.local_decoder = build_head(head_variant, self.dim, in_channels=self.in_channels, ops=operations,
                                        device=device, dtype=dtype, width_div=head_width_div)
        self.free_memory = comfy.model_management.get_free_memory  # L2PModel points it at its patcher's
        self._step: tuple[torch.Tensor, dict] | None = None  # (padded pixels, transformer_options) of this call
        self._decoded = False  # unpatchify ran the head in this call
        self._ran_trunk = False  # core's _forward ran in this call (a step cache's wrapper may skip it)
        self._memory_checked: tuple | None = None  # the call shape whose memory was last found to fit

    def forward(self, x, timesteps, context, num_tokens, attention_mask=None, **kwargs):
        options = kwargs.get("transformer_options") or {}
        self.check_inputs(x, context, options)
        self._step, self._decoded, self._ran_trunk = None, False, False
        if comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, options):
            x = x.clone()  # a wrapper may write into its input, which is core's x for calculate_denoised (S16)
        try:
            out = super().forward(x, timesteps, context, num_tokens, attention_mask, **kwargs)
            # A DIFFUSION_MODEL wrapper may answer without the trunk (EasyCache, LazyCache: a cached step, S16).
            if (self._ran_trunk and not self._decoded) or out.shape[-2:] != x.shape[-2:]:
                raise CoreChanged("NextDiT._forward no longer runs patchify_and_embed -> final_layer -> unpatchify "
                                  "once per call")
        finally:
            self._step = None  # never keep a step's pixels alive (a 10K image is over a GB)
        # One reduction, no full-size temporary: a sane image's float32 sum is finite, NaN/inf make it not.
        if not bool(torch.isfinite(out.sum(dtype=torch.float32))):
            raise L2PNonFinite(f"the model's output went NaN/inf at {step_name(timesteps, options)}, running in "
                               f"{str(out.dtype).removeprefix('torch.')}: stopped instead of saving a black image; "
                               "load the model with weight_dtype bf16 or fp32 if it ran in float16, lower the cfg, "
                               "or check the model file")
        return out

    def check_inputs(self, x: torch.Tensor, context: torch.Tensor | None, options: dict) -> None:
        """One-line errors for what core would crash on or silently render wrong (S12 options)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise L2PInputError(latent_message(x.shape, self.in_channels))
        if context is not None:
            if context.shape[-1] != self.cap_feat_dim:
                raise L2PInputError(f"this conditioning is {context.shape[-1]} wide, the model expects "
                                    f"{self.cap_feat_dim}: wrong text encoder? (use the one this model was "
                                    "converted or trained with)")
            if context.ndim != 3 or context.shape[1] == 0:
                raise L2PInputError(f"this conditioning has no tokens (shape {tuple(context.shape)}): encode a "
                                    "prompt with CLIPTextEncode (an empty prompt still has the template's tokens)")
            if not bool(torch.isfinite(context).all()):
                raise L2PInputError("this conditioning holds NaN/inf values: check the text encoder (its file "
                                    "and weight dtype) and the conditioning nodes between it and the sampler")
        chunks = len(options.get("cond_or_uncond") or ()) or 1  # conditionings batched into this call
        setting = options.get(HEAD_TILE, "auto")
        cap_tokens = context.shape[1] if context is not None else 0
        key = (tuple(x.shape), x.dtype, x.device, cap_tokens, chunks, setting)
        if key != self._memory_checked:
            self.check_memory(x.shape[-2], x.shape[-1], max(1, x.shape[0] // chunks), x.element_size(), cap_tokens,
                              setting, int(self.free_memory(x.device)), x.device, sampler_copies=1)
            self._memory_checked = key

    def memory_estimate(self, height: int, width: int, batch: int, dtype_bytes: int, cap_tokens: int,
                        tile: int | None, sampler_copies: int, free_bytes: int | None = None,
                        attention: str | None = None) -> SamplingMemory:
        return sampling_memory(self.head_variant, height, width, batch, dtype_bytes, patch=self.patch_size,
                               dim=self.dim, ffn_dim=self.ffn_hidden_dim, head_dim=self.head_dim,
                               cap_tokens=cap_tokens, tile=tile, sampler_copies=sampler_copies,
                               attention=attention or attention_backend(), free_bytes=free_bytes)

    def check_memory(self, height: int, width: int, batch: int, dtype_bytes: int, cap_tokens: int, setting,
                     budget: int, device, sampler_copies: int) -> SamplingMemory:
        """Refuse (one line: size, estimate, what would fit) a call whose estimate exceeds ``budget`` bytes.

        ``batch`` is the least the sampler can run at once (one conditioning). With tiling ``auto`` the estimate
        uses the smallest head tile, so only a size that cannot fit at all is refused."""
        def estimate(h: int, w: int, b: int, tile: int | None) -> SamplingMemory:
            return self.memory_estimate(h, w, b, dtype_bytes, cap_tokens, tile, sampler_copies, budget)

        need = estimate(height, width, batch, None if setting == "auto" else int(setting))
        if need.total <= budget:
            return need
        if setting != "auto" and estimate(height, width, batch, None).total <= budget:
            advice = "tile the head (L2P Head Tiling mode auto) and it fits"
        else:
            fit = fitting_size(lambda h, w, b: estimate(h, w, b, None).total, height, width, batch,
                               self.pad_multiple, budget)
            if fit is None:
                advice = "not even the smallest image fits: free memory or use a smaller dtype"
            elif fit[:2] == (height, width):
                advice = f"use batch_size {fit[2]} or less at this size"
            else:
                advice = f"use at most {fit[1]}x{fit[0]}" + (" at batch 1" if batch > 1 else "")
        tiles = f"in {need.tile} px tiles" if need.tile else "untiled"
        raise L2PInputError(f"{width}x{height} (batch {batch}) needs about {gib(need.total)} to sample on {device} "
                            f"(trunk {gib(need.trunk)} for {need.tokens:,} tokens, head {gib(need.head)} {tiles}, "
                            f"images {gib(need.images)}) but {gib(budget)} is free: {advice}")

    def _forward(self, *args, **kwargs):
        self._ran_trunk = True  # core's forward called it (through the wrappers), so it must reach unpatchify
        return super()._forward(*args, **kwargs)

    def patchify_and_embed(self, x, *args, **kwargs):
        # Core padded x to the patch; the head also needs its own multiple (320 for the 10K head).
        x = comfy.ldm.common_dit.pad_to_patch_size(x, (self.pad_multiple, self.pad_multiple))
        self._step = (x, kwargs.get("transformer_options") or {})
        return super().patchify_and_embed(x, *args, **kwargs)

    def unpatchify(self, x, img_size, cap_size, return_tensor=False, **kwargs):
        if self._step is None:
            raise CoreChanged("NextDiT.unpatchify ran without patchify_and_embed")
        pixels, options = self._step
        self._step, self._decoded = None, True
        h, w = img_size[0]
        if x.shape[-1] != self.dim or (h, w) != tuple(pixels.shape[-2:]):
            raise CoreChanged(f"unpatchify got tokens {tuple(x.shape)} for an image of {(h, w)}")
        features = self.image_features(x, cap_size[0], h // self.patch_size, w // self.patch_size)
        tile = self.head_tile(pixels, options.get(HEAD_TILE, "auto"))
        if tile:
            return run_head_tiled(self.local_decoder, pixels, features, tile)
        return self.local_decoder(pixels, features)

    def image_features(self, tokens: torch.Tensor, cap_len: int, h_tokens: int, w_tokens: int) -> torch.Tensor:
        """The real image tokens (not the padding) as a [B, dim, Ht, Wt] map, height-major."""
        img = tokens[:, cap_len:cap_len + h_tokens * w_tokens]
        return img.reshape(tokens.shape[0], h_tokens, w_tokens, tokens.shape[-1]).permute(0, 3, 1, 2)

    def head_tile(self, x: torch.Tensor, setting) -> int:
        """The head's tile side: a fixed number, 0 (untiled), or "auto" from the device's free memory."""
        if setting != "auto":
            return int(setting)
        free = self.free_memory(x.device)
        return auto_tile_size(self.head_variant, x.shape[-2], x.shape[-1], x.shape[0], int(free), x.element_size(),
                              feature_dim=self.dim)


def attention_backend() -> str:
    """How core's attention spends memory (S14): by the name of the function it chose at import
    (``comfy.ldm.modules.attention.optimized_attention``): chunked to the free memory (sub-quadratic, split), the
    whole score matrix (basic), or linear in tokens (flash, xformers, sage, PyTorch SDPA: every other one)."""
    import comfy.ldm.modules.attention as attention

    name = getattr(getattr(attention, "optimized_attention", None), "__name__", "")
    return {"attention_sub_quad": "sub_quad", "attention_split": "split", "attention_basic": "basic"}.get(name,
                                                                                                         "linear")


def call_memory(dit: NextDiTL2P, shape, dtype_bytes: int, cap_tokens: int, free_bytes: int, tile="auto",
                attention: str | None = None) -> SamplingMemory:
    """The estimate of one model call on a ``shape`` ([batch, 3, H, W]) input: the trunk with ``attention``'s score
    memory (core's backend by default) chunked to ``free_bytes``, the head at ``tile`` (``auto``: the tile the
    forward picks with that free memory), the call's input and output."""
    height, width = (-(-int(n) // dit.pad_multiple) * dit.pad_multiple for n in shape[-2:])
    batch = int(shape[0])
    if tile == "auto":
        tile = auto_tile_size(dit.head_variant, height, width, batch, free_bytes, dtype_bytes, feature_dim=dit.dim)
    return dit.memory_estimate(int(shape[-2]), int(shape[-1]), batch, dtype_bytes, cap_tokens, int(tile), 1,
                               free_bytes, attention)


class L2PModel(comfy.model_base.Lumina2):
    """Lumina2's conditioning (c_crossattn, num_tokens, attention mask) and flow sampling, L2P's network."""

    def __init__(self, model_config, model_type=comfy.model_base.ModelType.FLOW, device=None):
        # Lumina2.__init__ hard-codes core's NextDiT: BaseModel's takes the network class (S5).
        comfy.model_base.BaseModel.__init__(self, model_config, model_type, device=device, unet_model=NextDiTL2P)
        model = weakref.ref(self)
        self.diffusion_model.free_memory = lambda device: free_memory(model(), device)
        install_sampling_guards()
        install_lora_keys()

    def memory_required(self, input_shape, cond_shapes={}):  # noqa: B006 (core's signature, S15)
        """What core reserves for one call on ``input_shape`` (all conditionings batched): the pack's per-part
        estimate for core's attention backend, instead of core's one factor per pixel area, which cannot fit a
        peak with a fixed part (it reserved 5.7x the peak at 512 on its non-flash formula)."""
        caps = [int(s[1]) for s in (cond_shapes or {}).get("c_crossattn", ()) if len(s) >= 2]
        device = comfy.model_management.get_torch_device()
        free = int(comfy.model_management.get_free_memory(device))
        return call_memory(self.diffusion_model, input_shape, inference_dtype(self).itemsize,
                           max(caps, default=PLAN_CAP_TOKENS), free).total


def free_memory(model, device) -> int:
    """Free memory for the head's auto tiling: the patcher's view where core has one (dynamic VRAM counts
    what it can offload), else the device's (S10)."""
    patcher = getattr(model, "current_patcher", None)
    if patcher is not None and hasattr(patcher, "get_free_memory"):
        return int(patcher.get_free_memory(device))
    return int(comfy.model_management.get_free_memory(device))


def gib(n: int) -> str:
    return f"{n / 2**30:.{1 if n >= 10 * 2**30 else 2}f} GiB"


def latent_message(shape, channels: int = 3) -> str:
    size = f" at {shape[-1]}x{shape[-2]}" if len(shape) >= 4 else ""
    return (f"this latent has {shape[1] if len(shape) > 1 else '?'} channels{size}, not the L2P model's "
            f"{channels}-channel pixels: connect L2P Empty Image or VAEEncode(pixel_space), not EmptyLatentImage")


def step_name(timesteps: torch.Tensor, options: dict) -> str:
    """``step 3 of 8 (sigma 0.75)`` from the call's sigma and the schedule (S12); the sigma alone without one."""
    sigma = options.get("sigmas", timesteps)
    value = float(sigma.flatten()[0]) if isinstance(sigma, torch.Tensor) else float(sigma)
    schedule = options.get("sample_sigmas")
    if isinstance(schedule, torch.Tensor) and schedule.ndim == 1 and len(schedule) > 1:
        at = torch.isclose(schedule.float().cpu(), torch.tensor(value), rtol=1e-4).nonzero()
        if len(at):
            return f"step {int(at[0]) + 1} of {len(schedule) - 1} (sigma {value:.4g})"
    return f"sigma {value:.4g}"


def inference_dtype(model) -> torch.dtype:
    if hasattr(model, "get_dtype_inference"):
        return model.get_dtype_inference()
    return model.manual_cast_dtype or model.get_dtype()


def check_sampling_memory(patcher, batch: int, height: int, width: int, *, latent_exists: bool) -> None:
    """Before sampling: refuse a size that cannot fit even with the smallest head tile (or with the tiling the
    patcher sets). The budget is the free memory on a CPU (RAM, the weights already in it), the device's total
    on an accelerator (core can offload every other model and stream the weights)."""
    dit = patcher.model.diffusion_model
    if not isinstance(dit, NextDiTL2P):
        return
    device = patcher.load_device
    if comfy.model_management.is_device_cpu(device):
        budget = free_memory(patcher.model, device)
    else:
        budget = int(comfy.model_management.get_total_memory(device))
    setting = patcher.model_options.get("transformer_options", {}).get(HEAD_TILE, "auto")
    dit.check_memory(height, width, batch, inference_dtype(patcher.model).itemsize, PLAN_CAP_TOKENS, setting, budget,
                     device, sampler_copies=SAMPLER_COPIES - int(latent_exists))


def check_empty_image(model, batch: int, height: int, width: int) -> None:
    """L2PEmptyImage's check before it allocates the zeros: with its model, the sampling estimate; without it,
    the float32 copies of the pixels that sampling holds on the intermediate device (all of the sampler's on a
    CPU; the latent and the noise where the model runs on an accelerator)."""
    if model is not None and is_l2p(model):
        check_sampling_memory(model, batch, height, width, latent_exists=False)
        return
    device = comfy.model_management.intermediate_device()
    copies = SAMPLER_COPIES if comfy.model_management.is_device_cpu(comfy.model_management.get_torch_device()) else 2
    pixels, free = 3 * height * width * 4, int(comfy.model_management.get_free_memory(device))
    if batch * pixels * copies > free:
        advice = (f"use batch_size {free // (pixels * copies)} or less" if free >= pixels * copies
                  else "use a smaller size")
        raise L2PInputError(f"{width}x{height} (batch {batch}) is {gib(batch * pixels)} of pixels, and sampling holds "
                            f"{copies} copies of them, but {device} has {gib(free)} free: {advice} (connect the "
                            "model input for the whole estimate)")


def check_latent(patcher, latent, downscale_ratio) -> None:
    """A latent an L2P model cannot sample as it is: not 3 channels, unless it is empty and its node says how
    to scale it to pixels (core then resizes it, S11)."""
    if not isinstance(latent, torch.Tensor) or latent.is_nested or latent.ndim != 4:
        return
    channels = getattr(patcher.model.diffusion_model, "in_channels", 3)
    if latent.shape[1] == channels or (downscale_ratio is not None and not torch.count_nonzero(latent)):
        return
    raise L2PInputError(latent_message(latent.shape, channels))


def install_sampling_guards() -> None:
    """Wrap core's ``fix_empty_latent_channels`` (S11) once: for L2P models, the latent and the size are checked
    before the sampler makes noise; other models pass through untouched."""
    fix = getattr(comfy.sample, "fix_empty_latent_channels", None)
    if fix is None or getattr(fix, "l2p_guard", False):  # a core without S11: the forward's checks still run
        return

    @functools.wraps(fix)
    def guarded(model, latent_image, *args, **kwargs):
        l2p = _is_l2p_patcher(model)
        if l2p:
            check_latent(model, latent_image, args[0] if args else kwargs.get("downscale_ratio_spacial"))
        out = fix(model, latent_image, *args, **kwargs)
        if l2p and isinstance(out, torch.Tensor) and not out.is_nested and out.ndim == 4:
            check_sampling_memory(model, out.shape[0], out.shape[-2], out.shape[-1], latent_exists=True)
        return out

    guarded.l2p_guard = True
    comfy.sample.fix_empty_latent_channels = guarded


def _is_l2p_patcher(model) -> bool:
    try:
        return is_l2p(model)
    except AttributeError:
        return False


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
    required_keys: set[str] = set()
    latent_format = L2PPixels
    memory_usage_factor = MEMORY_USAGE_FACTOR
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]

    @classmethod
    def matches(cls, unet_config, state_dict=None, *args, **kwargs):
        """Any Detailer Head tensor makes a lumina2-shaped file L2P, not one required key: a head missing that
        one tensor is still read as L2P (strict loading names what is missing) instead of as latent Z-Image."""
        if not super().matches(unet_config, state_dict, *args, **kwargs):
            return False
        return state_dict is None or any(HEAD_PREFIX in k for k in state_dict)

    def get_model(self, state_dict, prefix="", device=None):
        cfg = _LOADING.get()
        if cfg is None:  # a load core started (stock UNETLoader): either layout, read from the shapes here and
            # every tensor checked before the network is built (a one-line L2PFormatError is the node's error)
            sd = {k[len(prefix):]: v.to("meta") for k, v in state_dict.items() if k.startswith(prefix)}
            if detect_layout(sd.keys()) == OFFICIAL and any(".attention.qkv." in k for k in sd):
                # Newer cores hand over keys they have half converted (fused qkv, official names elsewhere;
                # guard_core_conversion checked the file before): put the shapes in ComfyUI names first.
                sd = to_comfy_layout(sd)
            cfg = infer_config(sd)
        self.unet_config.update(unet_config_for(cfg))
        model = L2PModel(self, device=device)
        self._l2p_network = weakref.ref(model.diffusion_model)
        return model

    def process_unet_state_dict(self, state_dict):
        # The pack's loader has checked the state dict and put it in ComfyUI names already.
        sd = state_dict if _LOADING.get() is not None else to_comfy_layout(state_dict)
        network = getattr(self, "_l2p_network", lambda: None)()
        if network is not None:
            check_network(network, sd)
        return sd


def check_network(network: torch.nn.Module, sd: dict) -> None:
    """Every tensor core's network (S4) has must come from the checked file, with its shape: core's loader
    (``load_state_dict(strict=False)``) would leave a missing one as allocated, uninitialised (a black or noise
    image). The file was checked against the architecture its shapes describe, so a miss here means core's
    NextDiT is not that architecture any more. ``norm_final`` (unused) and quantisation companions are skipped."""
    missing, wrong = [], []
    for name, tensor in network.state_dict(keep_vars=True).items():
        if name.startswith("norm_final.") or name.endswith(QUANT_SUFFIXES):
            continue
        if name not in sd:
            missing.append(name)
        elif tuple(sd[name].shape) != tuple(tensor.shape):
            wrong.append((name, list(tensor.shape), list(sd[name].shape)))
    if missing:
        raise CoreChanged(f"NextDiT(**unet_config) has {len(missing)} tensors a complete L2P file of its "
                          f"architecture does not carry (first: {missing[0]})")
    if wrong:
        name, built, filed = wrong[0]
        raise CoreChanged(f"NextDiT(**unet_config) builds {name} as {built}, the file's architecture has {filed} "
                          f"({len(wrong)} tensors differ)")


class Lumina2L2P(ZImageL2P):
    """An L2P model converted from Lumina-Image 2.0: its Gemma-2 text encoder and shift 6."""

    @classmethod
    def matches(cls, unet_config, state_dict=None, *args, **kwargs):
        if not super().matches(unet_config, state_dict, *args, **kwargs):
            return False
        try:  # the architecture from its marker in any block, so one missing tensor does not change it
            return state_dict is None or detect_arch(state_dict.keys()) is LUMINA2
        except L2PFormatError:
            return False
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


def core_l2p_configs() -> list[type]:
    """Core's own L2P detection entries (none up to 0.38.1; kijai's open PR #14055 would add one)."""
    return [cls for cls in comfy.supported_models.models if cls not in L2P_CONFIGS and (
        "L2P" in cls.__name__ or any(HEAD_PREFIX in k for k in getattr(cls, "required_keys", ())))]


def core_knows_l2p() -> bool:
    return bool(core_l2p_configs())


def register_with_stock_loader() -> None:
    """Let the stock UNETLoader detect L2P files (instead of loading them as latent Z-Image, silently wrong).

    The pack's entries go right after core's own L2P entries, if any: core's class wins for the files it
    recognises, the pack's still catch what it does not (e.g. the 4K/8K/10K heads), and both come before
    core's latent Z-Image entry.
    """
    models = comfy.supported_models.models
    for cls in L2P_CONFIGS:
        if cls in models:
            models.remove(cls)
    core = core_l2p_configs()
    at = max(models.index(c) for c in core) + 1 if core else 0
    models[at:at] = list(L2P_CONFIGS)
    if core:
        logging.info("ComfyUI-L2P: this ComfyUI has its own L2P support (%s); it loads the files it recognises",
                     ", ".join(c.__name__ for c in core))
    guard_core_conversion()


def guard_core_conversion() -> None:
    """Wrap core's ``model_detection.convert_diffusers_mmdit`` once (S8): the stock loader runs it on files whose
    names it cannot detect (0.33+ on Z-Image's official names, official L2P files included) and fuses q/k/v into
    a tensor it allocates with ``torch.empty``, so a missing part would stay uninitialised. An L2P state dict
    (``local_decoder.*``) is checked first, in its own layout (one-line L2PFormatError); others pass untouched."""
    convert = getattr(comfy.model_detection, "convert_diffusers_mmdit", None)
    if convert is None or getattr(convert, "l2p_guard", False):  # without it, the checks in get_model still run
        return

    @functools.wraps(convert)
    def checked(state_dict, *args, **kwargs):
        if has_head(state_dict):
            infer_config(state_dict)
        return convert(state_dict, *args, **kwargs)

    checked.l2p_guard = True
    comfy.model_detection.convert_diffusers_mmdit = checked


def _load_kwargs(disable_dynamic: bool) -> dict:
    """``disable_dynamic`` only where core's loader has it (S8)."""
    params = inspect.signature(comfy.sd.load_diffusion_model_state_dict).parameters
    return {"disable_dynamic": True} if disable_dynamic and "disable_dynamic" in params else {}


def load_l2p_state_dict(sd: dict, dtype: torch.dtype | None = None, metadata: dict | None = None,
                        disable_dynamic: bool = False):
    """A state dict of either layout -> ModelPatcher, through ComfyUI's own diffusion-model loader (S8)."""
    options = {"model_options": {"dtype": dtype} if dtype else {}, "metadata": metadata,
               **_load_kwargs(disable_dynamic)}
    if core_knows_l2p():  # core's own class first, on the file as it is (checked like every load first)
        infer_config(sd)
        model = comfy.sd.load_diffusion_model_state_dict(dict(sd), **options)
        if model is not None and is_l2p(model):
            return model
    # Checks the file is L2P and holds every tensor of its architecture (names, shapes, float dtypes: one-line
    # L2PFormatError before anything is built), converts the keys and reads the config, once.
    sd, cfg = to_comfy_with_config(sd)
    register_with_stock_loader()
    loading = _LOADING.set(cfg)
    try:
        model = comfy.sd.load_diffusion_model_state_dict(sd, **options)
    finally:
        _LOADING.reset(loading)
    if model is None or not is_l2p(model):
        raise ValueError("ComfyUI did not pick the L2P model class for this file: another custom node overrides "
                         "Z-Image detection; report this with your node list")
    return model


def load_l2p_file(path: str, dtype: torch.dtype | None = None, disable_dynamic: bool = False):
    """An L2P file -> ModelPatcher that core can rebuild (``cached_patcher_init``, used by dynamic VRAM)."""
    sd, metadata = read_safetensors(path)
    model = load_l2p_state_dict(sd, dtype=dtype, metadata=metadata, disable_dynamic=disable_dynamic)
    model.cached_patcher_init = (load_l2p_file, (path, dtype))
    model.set_attachments(METADATA, {k: v for k, v in metadata.items() if k.startswith("l2p.")})
    return model


def is_l2p(patcher) -> bool:
    """An L2P pixel model: the pack's class or core's own (its network has a Detailer Head)."""
    return isinstance(patcher.model, L2PModel) or hasattr(patcher.model.diffusion_model, "local_decoder")


def is_lumina2(patcher) -> bool:
    """A latent Z-Image / Lumina 2 model (core's class or the pack's any-size one)."""
    return isinstance(patcher.model, comfy.model_base.Lumina2) and not is_l2p(patcher)


def patched_state_dict(patcher) -> dict[str, torch.Tensor]:
    """The diffusion model's weights with LoRAs and other patches applied, on the CPU (S9).

    Core's saving API where it exists (it also works under dynamic VRAM, which refuses force-patching);
    otherwise the way ModelSave did it before that API.
    """
    if hasattr(patcher, "model_state_dict_for_saving"):
        comfy.model_management.load_models_gpu([patcher])
        sd = patcher.model_state_dict_for_saving(patcher.model.diffusion_model, "diffusion_model.")
        return {k: v.to("cpu") for k, v in sd.items()}
    comfy.model_management.load_models_gpu([patcher], force_patch_weights=True)
    return {k: v.to("cpu") for k, v in patcher.model.diffusion_model.state_dict().items()}


def load_source_state_dict(sd: dict, dtype: torch.dtype | None = None):
    """A latent Z-Image / Lumina 2 DiT (ComfyUI or diffusers names, any size) -> (ModelPatcher, arch, config).

    ComfyUI's own detection only knows the released sizes (by ``dim``); this reads every width from the
    shapes, so the same path serves a 6B Z-Image and the tiny models the tests build.
    """
    sd = strip_prefix(sd)
    if has_head(sd):
        raise L2PFormatError(f"this is already an L2P pixel model (it has {HEAD_PREFIX}*): load it with "
                             "L2PModelLoader")
    arch, cfg = source_config(sd)  # every tensor of the source's architecture checked before anything is built
    if detect_layout(sd.keys()) == OFFICIAL:
        sd = official_to_comfy(sd)
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


# Any-size Qwen3 text encoder (the pack's small worlds): core's Qwen3-4B classes at other widths.

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


def qwen3_clip_target(config: dict) -> ClipTarget:
    """Z-Image's tokenizer and template over a Qwen3 of the given widths (llama.Llama2_, sd1_clip)."""
    class Qwen3AnyModel(sd1_clip.SDClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006 (ComfyUI's signature)
            super().__init__(device=device, layer="hidden", layer_idx=-2, textmodel_json_config=config, dtype=dtype,
                             special_tokens={"pad": 151643}, layer_norm_hidden_state=False, model_class=Qwen3Any,
                             enable_attention_masks=True, return_attention_masks=True, model_options=model_options)

    class Qwen3AnyTE(sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006
            super().__init__(device=device, dtype=dtype, name="qwen3_4b", clip_model=Qwen3AnyModel,
                             model_options=model_options)

    return ClipTarget(z_image.ZImageTokenizer, Qwen3AnyTE)


def comfyui_install() -> str:
    """The folder of the running ComfyUI's code (where ``comfy/`` lives; not ``--base-directory``), which holds the
    tokenizer files core ships (``comfy/text_encoders/qwen25_tokenizer``)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(comfy.model_management.__file__)))


def install_lora_keys() -> None:
    """Wrap core's ``lora.model_lora_keys_unet(model, key_map)`` and ``lora.load_lora(lora, to_load, ...)`` once
    (S13): for an L2P model the key map gets every naming of ``l2p.format.lora`` (official, diffusers, kohya,
    LyCORIS names, q/k/v as slices of the fused qkv, the x embedder at the model's patch, the Detailer Head;
    computed from the network's own shapes, so they override core's Z-Image guesses), and a LoRA whose tensors
    match no weight of an L2P model is reported in one log line (count and first names) besides core's own."""
    keys_fn, load_fn = getattr(comfy.lora, "model_lora_keys_unet", None), getattr(comfy.lora, "load_lora", None)
    if keys_fn is None or load_fn is None or getattr(keys_fn, "l2p_keys", False):
        return

    @functools.wraps(keys_fn)
    def keys_with_l2p(model, key_map=None, *args, **kwargs):
        key_map = keys_fn(model, {} if key_map is None else key_map, *args, **kwargs)
        if isinstance(model, L2PModel):
            net = model.diffusion_model
            key_map.update(lora_key_map({k: tuple(v.shape) for k, v in net.state_dict().items()}, net.patch_size))
        return key_map

    @functools.wraps(load_fn)
    def load_reporting(lora, to_load, *args, **kwargs):
        if not any(isinstance(v, str) and v.startswith("diffusion_model." + HEAD_PREFIX) for v in to_load.values()):
            return load_fn(lora, to_load, *args, **kwargs)
        left = unmatched(list(lora.keys()), to_load)
        if left:
            logging.warning("ComfyUI-L2P: %d of %d LoRA tensors match no weight of this L2P model and are not "
                            "applied (first: %s)", len(left), len(lora), ", ".join(left[:3]))
        return load_fn(lora, to_load, *args, **kwargs)

    keys_with_l2p.l2p_keys = True
    comfy.lora.model_lora_keys_unet = keys_with_l2p
    comfy.lora.load_lora = load_reporting



def lora_keys_of(patcher) -> dict:
    """The model's LoRA key map as the stock loaders build it (with the L2P names, ``install_lora_keys``)."""
    install_lora_keys()
    return comfy.lora.model_lora_keys_unet(patcher.model, {})


def with_lora(patcher, lora: dict, strength: float):
    """A clone of ``patcher`` with ``lora`` applied at ``strength`` (what LoraLoaderModelOnly does)."""
    patched, _ = comfy.sd.load_lora_for_models(patcher, None, lora, strength, 0)
    return patched
