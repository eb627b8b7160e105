"""The L2P export: a checkpoint's tensors in a chosen layout plus its ``l2p.*`` metadata, written atomically.

Every writer of an L2P checkpoint builds it here: the converter (``l2p.convert``, a latent source or a
re-head), ComfyUI's L2P Save Checkpoint and the trainer's export. So every file records its layout and the
pack version the same way, and the layout recorded is always the layout written. No value keeps a machine's
absolute paths (``without_absolute_paths``): a file travels, and its metadata should not tell where it was made.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .. import pack_version
from .layouts import layout_keys
from .tensor_io import PlannedTensor, Progress, write_safetensors

METADATA_PREFIX = "l2p."
COMMON = ("layout", "pack_version")  # every export sets these itself


class _Own:
    def __repr__(self) -> str:
        return "OWN"


OWN = _Own()  # a ``fields`` value: this export's own value of a COMMON key, written at that place

# An absolute path where a path can start (not inside a word, a relative path or a URL): /x, ~/x, C:\x, C:/x,
# \\server\share (also with TOML/JSON-doubled backslashes). Quoted, it runs to the closing quote (spaces
# included); bare, to a space, a quote or a separator.
_START = r"(?:/(?=[^\s/])|~[/\\]|[A-Za-z]:[/\\]|\\{2,}(?=\w))"
_ABS_PATH = re.compile(rf"""(?<="){_START}[^"\n]*|(?<='){_START}[^'\n]*|(?<![\w.~:/\\-]){_START}[^\s"'`<>|,;]*""")


def without_absolute_paths(text: str) -> str:
    """``text`` with every absolute path replaced by its last part, the file or folder name
    (``model = "/home/me/l2p/one.safetensors"`` -> ``model = "one.safetensors"``)."""
    def name(m: re.Match) -> str:
        parts = [p for p in re.split(r"[/\\]+", m.group(0).rstrip()) if p and p != "~" and not p.endswith(":")]
        return parts[-1] if parts else ""

    return _ABS_PATH.sub(name, text)


def export_metadata(layout: str, fields: Mapping[str, object],
                    inherited: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``l2p.*`` metadata: ``inherited``'s ``l2p.*`` entries (what the source or loaded model carried), then
    ``fields`` (names without ``l2p.``, in the order given, values as text). The COMMON keys are always this
    export's: where ``fields`` places them (value ``OWN``), else where ``inherited`` had them, else last.
    Absolute paths in any value are cut to their file names (``without_absolute_paths``)."""
    own = {"layout": layout, "pack_version": pack_version()}
    out = {k: without_absolute_paths(v) for k, v in (inherited or {}).items() if k.startswith(METADATA_PREFIX)}
    for name, value in fields.items():
        out[METADATA_PREFIX + name] = own[name] if value is OWN else without_absolute_paths(str(value))
    for name in COMMON:
        out[METADATA_PREFIX + name] = own[name]
    return out


def layout_plan(tensors: Mapping[str, torch.Tensor], layout: str, patch_size: int,
                get: Callable[[str], torch.Tensor] | None = None) -> list[PlannedTensor]:
    """``tensors`` (either layout; real or meta) as a write plan in ``layout``: output shapes from meta tensors
    now, data made one tensor at a time at write time from ``get`` (default: ``tensors`` themselves)."""
    get = get or tensors.__getitem__
    return [PlannedTensor(m.name, m.make(lambda k: tensors[k].to("meta")), lambda m=m: m.make(get))
            for m in layout_keys(tensors.keys(), layout, patch_size)]


@dataclass(frozen=True)
class Export:
    """An L2P checkpoint ready to write: its tensors as a streamed plan and its metadata."""

    plan: list[PlannedTensor]
    metadata: dict[str, str]

    def write(self, path: str, progress: Progress | None = None, overwrite: bool = True) -> None:
        write_safetensors(path, self.plan, self.metadata, progress=progress, overwrite=overwrite)


def plan_export(tensors: Mapping[str, torch.Tensor], layout: str, patch_size: int, fields: Mapping[str, object],
                inherited: Mapping[str, str] | None = None) -> Export:
    """A whole model (``tensors``, either layout) as an L2P checkpoint in ``layout``; see ``export_metadata``."""
    return Export(layout_plan(tensors, layout, patch_size), export_metadata(layout, fields, inherited))
