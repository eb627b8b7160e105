"""Key-name basics shared by the layout maps and the architecture adapters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

V = TypeVar("V")
PREFIXES = ("model.diffusion_model.", "diffusion_model.")


class L2PFormatError(ValueError):
    """A file that is not a loadable L2P checkpoint; the message is one line saying what it is and what to do."""


def strip_prefix(sd: Mapping[str, V]) -> dict[str, V]:
    """Drop a ComfyUI checkpoint prefix (``model.diffusion_model.``) when every diffusion key carries it."""
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return dict(sd)
