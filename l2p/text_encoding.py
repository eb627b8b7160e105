"""Z-Image's text conditioning outside ComfyUI: a caption -> ``[tokens, width]`` features, as CLIPTextEncode gives.

ComfyUI encodes a Z-Image prompt like this (``comfy/text_encoders/z_image.py`` with ``sd1_clip``, 0.3.75 to
0.38): the caption goes into Qwen's chat template, is tokenized with the Qwen2.5 BPE tokenizer that ComfyUI
ships (``comfy/text_encoders/qwen25_tokenizer``) without start, end or padding tokens and without prompt
weights (``\\(`` and ``\\)`` lose their backslash, as in every ComfyUI prompt); the features are the Qwen3
network's second-to-last hidden state (the output of its last-but-one block, no final norm). The official
pipeline does the same. A trainer that caches its own conditioning therefore needs exactly this, or a model
trained on it would meet other features in ComfyUI (tests/test_text_cache.py compares both through a real
server).

The network is transformers' ``Qwen3Model`` with its sizes read from the file's shapes (the real Qwen3-4B or
any Qwen3-architecture file) and ComfyUI's Qwen3 constants (RoPE theta 1e6, RMS eps 1e-6). Captions are
encoded in batches padded on the right: with causal attention a token never sees the padding after it, so
each caption's features equal its unbatched encoding.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence

import torch

ZIMAGE_TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
HIDDEN_LAYER = -2  # the second-to-last hidden state (hidden_states[-2]: the output of the last-but-one block)
PAD_TOKEN = 151643  # <|endoftext|>: pads a batch on the right (never part of a caption's features)
ROPE_THETA = 1_000_000.0  # ComfyUI's Qwen3 (and Qwen3-4B's own) constants that shapes do not carry
RMS_EPS = 1e-6
TOKENIZER_FOLDER = os.path.join("comfy", "text_encoders", "qwen25_tokenizer")  # inside a ComfyUI install
_EMBEDDING = "embedding:"  # ComfyUI tokenizes the text before and after a textual-inversion name apart


class TextEncoderError(ValueError):
    """A text encoder or tokenizer that cannot be used: one line saying what to give instead."""


def qwen3_config_from_shapes(sd: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Qwen3 widths and depth from a transformers-layout state dict (``model.layers.N...``; meta is enough)."""
    try:
        emb = sd["model.embed_tokens.weight"]
        head_dim = sd["model.layers.0.self_attn.q_norm.weight"].shape[0]
        q = sd["model.layers.0.self_attn.q_proj.weight"].shape[0]
        kv = sd["model.layers.0.self_attn.k_proj.weight"].shape[0]
        inter = sd["model.layers.0.mlp.gate_proj.weight"].shape[0]
    except KeyError as e:
        raise TextEncoderError(f"not a Qwen3 text encoder (missing {e.args[0]}): pick a Qwen3-architecture "
                               "safetensors file such as qwen_3_4b.safetensors") from None
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("model.layers."))
    if layers < 3:
        raise TextEncoderError(f"the text encoder has {layers} layers; Z-Image conditioning reads the second-to-last "
                               "hidden state, so at least 3 are needed")
    return {"vocab_size": int(emb.shape[0]), "hidden_size": int(emb.shape[1]), "intermediate_size": int(inter),
            "num_hidden_layers": layers, "num_attention_heads": int(q // head_dim),
            "num_key_value_heads": int(kv // head_dim), "head_dim": int(head_dim)}


def prompt_segments(caption: str) -> list[str]:
    """The pieces ComfyUI tokenizes one after the other for a Z-Image caption: the templated text with prompt
    escapes undone, cut before each ``embedding:`` that follows whitespace (core's split since 0.3.76)."""
    text = ZIMAGE_TEMPLATE.format(caption).replace("\\)", ")").replace("\\(", "(")
    parts = re.split(rf"(?<=\s){re.escape(_EMBEDDING)}", text)
    return [p for p in [parts[0]] + [_EMBEDDING + p for p in parts[1:]] if p]


def find_tokenizer(explicit: str = "", comfyui: str = "") -> str:
    """The folder of Qwen's tokenizer files: ``explicit``, else ComfyUI's own copy in ``comfyui`` (or
    ``$COMFYUI_PATH``, or the ComfyUI this pack is installed in: ``<ComfyUI>/custom_nodes/<pack>``)."""
    if explicit:
        if not os.path.isfile(os.path.join(explicit, "vocab.json")) and not os.path.isfile(
                os.path.join(explicit, "tokenizer.json")):
            raise TextEncoderError(f"tokenizer {explicit} holds no vocab.json or tokenizer.json: give ComfyUI's "
                                   f"{TOKENIZER_FOLDER} folder or a Qwen3 model folder")
        return explicit
    pack = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    homes = [comfyui, os.environ.get("COMFYUI_PATH", ""), os.path.dirname(os.path.dirname(pack))]
    for home in homes:
        folder = os.path.join(home, TOKENIZER_FOLDER)
        if home and os.path.isfile(os.path.join(folder, "vocab.json")):
            return folder
    raise TextEncoderError(f"no Qwen tokenizer found: set tokenizer to the {TOKENIZER_FOLDER} folder of a ComfyUI "
                           "install (or set COMFYUI_PATH)")


class Qwen3TextEncoder:
    """A Qwen3 text encoder file and its tokenizer, encoding captions as ComfyUI's CLIPTextEncode does."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], tokenizer_dir: str, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3Model

        from .format.layouts import QUANT_SUFFIXES

        scaled = [k for k in state_dict if k.endswith(QUANT_SUFFIXES) or k == "scaled_fp8"]
        if scaled:  # fp8 with per-tensor scales: a plain cast would give other features, silently
            raise TextEncoderError(f"this text encoder is quantised with scales ({scaled[0]}): give the bf16 or "
                                   "fp32 file (qwen_3_4b.safetensors), the conditioning must match ComfyUI's")
        sizes = qwen3_config_from_shapes(state_dict)
        config = Qwen3Config(**sizes, rope_theta=ROPE_THETA, rms_norm_eps=RMS_EPS, max_position_embeddings=40960,
                             attention_bias=False, tie_word_embeddings=False)
        with torch.device("meta"):
            model = Qwen3Model(config)
        weights = {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
        expected = set(model.state_dict().keys())
        missing = sorted(expected - weights.keys())
        if missing:
            raise TextEncoderError(f"the text encoder lacks {len(missing)} tensors (first: model.{missing[0]}): "
                                   "download it again")
        model.load_state_dict({k: weights[k].to(device, dtype) for k in expected}, strict=True, assign=True)
        model.rotary_emb = type(model.rotary_emb)(config).to(device)  # its buffers are not in the file
        self.model = model.train(False).requires_grad_(False)
        self.tokenizer = Qwen2Tokenizer.from_pretrained(tokenizer_dir)
        self.device, self.width = torch.device(device), sizes["hidden_size"]

    @classmethod
    def from_file(cls, path: str, tokenizer_dir: str, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> Qwen3TextEncoder:
        from .format.tensor_io import read_safetensors

        sd, _ = read_safetensors(path)
        return cls(sd, tokenizer_dir, device, dtype)

    def token_ids(self, caption: str) -> list[int]:
        return [t for part in prompt_segments(caption) for t in self.tokenizer(part)["input_ids"]]

    @torch.no_grad()
    def encode(self, captions: Sequence[str], batch_size: int = 8) -> Iterator[torch.Tensor]:
        """Each caption's features ``[tokens, width]`` (float32, on the CPU), in order."""
        for start in range(0, len(captions), batch_size):
            ids = [self.token_ids(c) for c in captions[start:start + batch_size]]
            longest = max(len(i) for i in ids)
            batch = torch.full((len(ids), longest), PAD_TOKEN, dtype=torch.long)
            mask = torch.zeros_like(batch)
            for row, i in enumerate(ids):
                batch[row, :len(i)], mask[row, :len(i)] = torch.tensor(i), 1
            out = self.model(input_ids=batch.to(self.device), attention_mask=mask.to(self.device),
                             output_hidden_states=True)
            hidden = out.hidden_states[HIDDEN_LAYER].float().cpu()
            for row, i in enumerate(ids):
                yield hidden[row, :len(i)].clone()

    def close(self) -> None:
        """Free the network (before the diffusion model is loaded)."""
        self.model = None  # type: ignore[assignment]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

