"""Key-name basics shared by the layout maps, the architecture adapters and the Detailer Head.

Imports nothing from the rest of ``l2p``, so every module (``l2p.head`` included) can use it without a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

V = TypeVar("V")
PREFIXES = ("model.diffusion_model.", "diffusion_model.")
HEAD_PREFIX = "local_decoder."  # the Detailer Head's tensors, in both layouts
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # the image files a training or distill folder is read for
# A dataset item's cached text features: ``NNNNN.cond.safetensors`` beside ``NNNNN.png``, one [tokens, width] tensor
CONDITIONING_SUFFIX, CONDITIONING_KEY = ".cond.safetensors", "cap_feats"


class L2PFormatError(ValueError):
    """A file that is not a loadable L2P checkpoint; the message is one line saying what it is and what to do."""


def strip_prefix(sd: Mapping[str, V]) -> dict[str, V]:
    """Drop a ComfyUI checkpoint prefix (``model.diffusion_model.``) when every diffusion key carries it."""
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return dict(sd)


def has_head(keys: Iterable[str]) -> bool:
    """Whether prefix-stripped ``keys`` include Detailer Head tensors."""
    return any(k.startswith(HEAD_PREFIX) for k in keys)


def head_part(sd: Mapping[str, V]) -> dict[str, V]:
    """The Detailer Head's entries of a prefix-stripped state dict, named as in the head module."""
    return {k[len(HEAD_PREFIX):]: v for k, v in sd.items() if k.startswith(HEAD_PREFIX)}


def with_head_prefix(head_sd: Mapping[str, V]) -> dict[str, V]:
    """A head module's state dict under the checkpoint's ``local_decoder.`` names (inverse of ``head_part``)."""
    return {HEAD_PREFIX + k: v for k, v in head_sd.items()}
