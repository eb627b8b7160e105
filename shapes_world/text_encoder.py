"""The shapes world's text encoder: a tiny Qwen3 (Z-Image's text-encoder architecture) over a word vocabulary.

Z-Image conditions on Qwen3-4B hidden states; the world's source model is trained jointly with a Qwen3 of
the same architecture at toy width, so the replication keeps the real data flow (prompt -> token ids ->
decoder-only transformer -> per-token features -> the DiT's caption embedder). Qwen's 151k-token BPE
vocabulary would dwarf the model, so the world uses a word-level vocabulary, stored in the file's metadata
with the widths: a file is self-describing and loads with safetensors only.

The features are the final hidden states (after the last RMSNorm) of ``<bos> word word ...``; an empty
prompt is just ``<bos>`` (the unconditional branch of classifier-free guidance).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

SPECIALS = ("<pad>", "<bos>", "<unk>")
PAD, BOS, UNK = range(len(SPECIALS))
FORMAT = "l2p.shapes_world.text_encoder"


@dataclass(frozen=True)
class EncoderConfig:
    width: int = 64  # = the DiT's cap_feat_dim
    layers: int = 2
    heads: int = 2
    kv_heads: int = 1
    head_dim: int = 32
    ffn: int = 128


class WordTokenizer:
    """Lower-case words -> ids; ``<bos>`` first; unknown words map to ``<unk>`` (never an error)."""

    def __init__(self, words: Sequence[str]):
        self.words = list(SPECIALS) + sorted(set(words) - set(SPECIALS))
        self.ids = {w: i for i, w in enumerate(self.words)}

    def __call__(self, text: str) -> list[int]:
        return [BOS] + [self.ids.get(w, UNK) for w in re.findall(r"[a-z]+", text.lower())]

    def __len__(self) -> int:
        return len(self.words)


class ShapesTextEncoder(nn.Module):
    def __init__(self, words: Sequence[str], config: EncoderConfig = EncoderConfig()):
        super().__init__()
        from transformers import Qwen3Config, Qwen3Model

        self.tokenizer = WordTokenizer(words)
        self.config = config
        self.model = Qwen3Model(Qwen3Config(
            vocab_size=len(self.tokenizer), hidden_size=config.width, intermediate_size=config.ffn,
            num_hidden_layers=config.layers, num_attention_heads=config.heads,
            num_key_value_heads=config.kv_heads, head_dim=config.head_dim, pad_token_id=PAD,
            bos_token_id=BOS, eos_token_id=BOS))

    def forward(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """One ``[tokens, width]`` feature tensor per text (no padding: lengths differ)."""
        ids = [self.tokenizer(t) for t in texts]
        longest = max(len(i) for i in ids)
        device = self.model.embed_tokens.weight.device
        batch = torch.tensor([i + [PAD] * (longest - len(i)) for i in ids], device=device)
        mask = (torch.arange(longest, device=device)[None] < torch.tensor([len(i) for i in ids],
                                                                           device=device)[:, None]).long()
        hidden = self.model(input_ids=batch, attention_mask=mask).last_hidden_state
        return [hidden[k, :len(i)] for k, i in enumerate(ids)]

    def file_metadata(self) -> dict[str, str]:
        """What a file needs besides the tensors (``model.state_dict()``) to rebuild this encoder."""
        return {"format": FORMAT, "config": json.dumps(asdict(self.config)),
                "words": json.dumps(self.tokenizer.words[len(SPECIALS):])}


def text_encoder_from_state(sd: dict[str, torch.Tensor], metadata: dict[str, str]) -> ShapesTextEncoder:
    """Rebuild from tensors + metadata; a file of another kind gets a one-line error."""
    if metadata.get("format") != FORMAT:
        raise ValueError("not a shapes-world demo text encoder (no l2p.shapes_world metadata): pick the "
                         "l2p-shapes-te file, or use the L2P Text Encoder Loader for Qwen3 files")
    encoder = ShapesTextEncoder(json.loads(metadata["words"]), EncoderConfig(**json.loads(metadata["config"])))
    missing, unexpected = encoder.model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"text encoder file does not match its own config ({(missing or unexpected)[0]}): "
                         "export it again")
    return encoder.train(False)


def load_text_encoder(path: str) -> ShapesTextEncoder:
    import safetensors
    import safetensors.torch

    with safetensors.safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
    return text_encoder_from_state(safetensors.torch.load_file(path), metadata)
