"""What the frontend shows next to the size and shift widgets, computed by the functions the nodes use.

Three steps, each bounded:

* ``parse_query``: every query parameter of ``GET /l2p/hints`` checked against the nodes' own limits
  (``l2p.sizes``: sides from ``MIN_SIDE`` to ComfyUI's MAX_RESOLUTION, batch 1 to ``MAX_BATCH``, a finite
  shift from ``SHIFT_MIN`` to ``SHIFT_MAX``, the listed presets, fits and modes) before any work; every bad
  value gets its own message naming the parameter (``HintQueryError.errors``).
* ``model_facts``: patch, head, architecture and default shift of an L2P file, read from its header only.
* ``size_hint``: one dictionary per request: the final size and token grid (``l2p.sizes``), the shift the
  wired graph samples at (``l2p.schedule``; which node sets it is ``shift_from``), the model it assumes, and
  the Detailer Head's activation memory, untiled and with the tile ``auto`` would pick on a device with the
  given free memory (``l2p.head_tiling``). A size the node would reject comes back as a message, not an
  exception. Every number in it is finite, so the answer is strict JSON.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .arch import ZIMAGE, detect_arch
from .format.keys import strip_prefix
from .format.layouts import infer_patch_size
from .format.tensor_io import open_source
from .head import detect_head_variant
from .head_tiling import auto_tile_size, head_memory_bytes
from .schedule import auto_shift, native_pixels
from .sizes import CUSTOM, FITS, MAX_BATCH, MIN_SIDE, PRESETS, SHIFT_MAX, SHIFT_MIN, plan_size

GIB = 2**30
MAX_QUERY_CHARS = 2048  # the whole query string; the frontend sends ~200
MAX_VALUE_CHARS = 512  # one value (a checkpoint name in sub-folders is the longest)
MODES = ("auto", "manual")
# What sets the shift the sampler uses, as the frontend finds it by walking the graph from the sampler's
# model input (js/l2p_wiring.js): one of the shift nodes, the model's own default (a sampler is wired and no
# shift node is on its model path), or nothing known (no sampler wired: the model's default is assumed).
SHIFT_NODES = ("L2PNoiseShift", "ModelSamplingAuraFlow", "ModelSamplingSD3")
SHIFT_FROM = (*SHIFT_NODES, "model", "assumed")
PARAMS = ("width", "height", "batch", "preset", "fit", "ckpt_name", "shift_from", "mode", "shift")
_INT = re.compile(r"[+-]?[0-9]{1,12}", re.ASCII)


class HintQueryError(ValueError):
    """Bad query parameters: ``errors`` maps each bad parameter to its one-line message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(errors.values()))


@dataclass(frozen=True)
class HintQuery:
    width: int = 1024
    height: int = 1024
    batch: int = 1
    preset: str = CUSTOM
    fit: str = "reject"
    ckpt_name: str = ""
    shift_from: str = "assumed"
    mode: str = "auto"
    shift: float = 3.0


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _int(name: str, value: str, lo: int, hi: int, what: str) -> int:
    number = int(value) if _INT.fullmatch(value.strip()) else None
    if number is None or not lo <= number <= hi:
        raise ValueError(f"{name} must be a whole number {what} from {lo} to {hi}, got {_shown(value)}")
    return number


def _shift(value: str) -> float:
    try:
        number = float(value) if len(value) <= 32 else math.nan
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and SHIFT_MIN <= number <= SHIFT_MAX):
        raise ValueError(f"shift must be a finite number from {SHIFT_MIN:g} to {SHIFT_MAX:g} (the range of "
                         f"L2PNoiseShift), got {_shown(value)}")
    return number


def _choice(name: str, value: str, options: Iterable[str]) -> str:
    options = tuple(options)
    if value not in options:
        listed = ", ".join(repr(o) for o in options) if len(options) <= 8 else f"the {len(options)} the node lists"
        raise ValueError(f"{name} must be one of {listed}, got {_shown(value)}")
    return value


def check_ckpt_name(value: str) -> str:
    """A relative file name inside a model folder: no absolute path, drive, parent step, NUL or backslash
    (membership in the listed files is checked by the caller)."""
    parts = value.split("/")
    if (value.startswith("/") or "\\" in value or ":" in value or "\0" in value or ".." in parts
            or not value.lower().endswith(".safetensors")):
        raise ValueError(f"ckpt_name must be a .safetensors file listed in models/l2p or models/diffusion_models "
                         f"(a relative name inside them), got {_shown(value)}")
    return value


def parse_query(pairs: Iterable[tuple[str, str]], max_side: int, query_chars: int = 0) -> HintQuery:
    """The checked parameters of ``GET /l2p/hints`` (absent ones take the node defaults); raises
    ``HintQueryError`` naming every bad one. ``pairs`` is the decoded query in order, duplicates included."""
    errors: dict[str, str] = {}
    if query_chars > MAX_QUERY_CHARS:
        raise HintQueryError({"query": f"query must be at most {MAX_QUERY_CHARS} characters, got {query_chars}"})
    given: dict[str, str] = {}
    for key, value in pairs:
        if len(errors) >= len(PARAMS) + 4:
            errors["query"] = "too many bad parameters"
            break
        if key not in PARAMS:
            errors[key[:40]] = f"unknown parameter {_shown(key)}: the route takes {', '.join(PARAMS)}"
        elif key in given:
            errors[key] = f"{key} is given more than once"
        elif len(value) > MAX_VALUE_CHARS:
            errors[key] = f"{key} must be at most {MAX_VALUE_CHARS} characters, got {len(value)}"
        else:
            given[key] = value
    checks = {
        "width": lambda v: _int("width", v, MIN_SIDE, max_side, "of pixels"),
        "height": lambda v: _int("height", v, MIN_SIDE, max_side, "of pixels"),
        "batch": lambda v: _int("batch", v, 1, MAX_BATCH, "of images"),
        "preset": lambda v: CUSTOM if v == "" else _choice("preset", v, (CUSTOM, *PRESETS)),
        "fit": lambda v: _choice("fit", v, FITS),
        "ckpt_name": lambda v: v and check_ckpt_name(v),
        "shift_from": lambda v: _choice("shift_from", v, SHIFT_FROM),
        "mode": lambda v: _choice("mode", v, MODES),
        "shift": _shift,
    }
    values = {}
    for key, value in given.items():
        if key not in errors:
            try:
                values[key] = checks[key](value)
            except ValueError as e:
                errors[key] = str(e)
    if errors:
        raise HintQueryError(errors)
    return HintQuery(**values)


@dataclass(frozen=True)
class ModelFacts:
    """What the hints need of a model: read from an L2P file's header, or assumed (``known`` False)."""

    patch_size: int = 16
    head_variant: str = "1k"
    arch: str = ZIMAGE.label.split(" (")[0]
    default_shift: float = ZIMAGE.default_shift
    known: bool = False
    note: str = "no L2P checkpoint wired"


def model_facts(path: str, name: str) -> ModelFacts:
    """Patch, head and architecture of an L2P file from its header (tensor names and shapes; no tensor is
    read). A file that is not an L2P checkpoint gives the assumed 1K model, with the reason."""
    try:
        keys = strip_prefix(open_source(path).meta)
        patch, head = infer_patch_size(keys), detect_head_variant(keys.keys())
        arch = detect_arch(keys.keys())
    except (OSError, ValueError) as e:
        reason = str(e).replace(path, name)[:160]  # the server's folders stay out of the answer
        return ModelFacts(note=f"{name} is not readable as an L2P checkpoint ({reason})")
    return ModelFacts(patch, head, arch.label.split(" (")[0], arch.default_shift, True, name)


def _describe_shift(q: HintQuery, width: int, height: int, model: ModelFacts) -> tuple[float, str]:
    """The shift the sampler uses and the words saying where it comes from."""
    native = int(native_pixels(model.patch_size) ** 0.5)
    native_text = f"native {native}x{native}"
    if q.shift_from == "L2PNoiseShift" and q.mode == "auto":
        value = auto_shift(q.shift, width, height, model.patch_size)
        return value, f"L2PNoiseShift auto: {q.shift:g} x sqrt({width}x{height} / {native}x{native})"
    if q.shift_from == "L2PNoiseShift":
        return q.shift, f"L2PNoiseShift manual; {native_text}"
    if q.shift_from in SHIFT_NODES:
        return q.shift, f"set by {q.shift_from}; {native_text}"
    if q.shift_from == "model":
        return model.default_shift, "the model's default: no shift node between loader and sampler"
    return model.default_shift, "assumed: no sampler wired"


def size_hint(q: HintQuery, model: ModelFacts = ModelFacts(), free_bytes: int = 16 * GIB,
              dtype_bytes: int = 2) -> dict:
    """The hint for a checked query on ``model``: ``{"ok": True, "text": ..., figures...}``, or
    ``{"ok": False, "message": ...}`` for a size the node would reject."""
    width, height = PRESETS.get(q.preset, (q.width, q.height))
    patch, head = model.patch_size, model.head_variant
    try:
        plan = plan_size(width, height, patch, head, fit=q.fit)
    except ValueError as e:
        return {"ok": False, "message": str(e)}
    tw, th = plan.tokens
    shift, why = _describe_shift(q, plan.width, plan.height, model)
    head_bytes = head_memory_bytes(head, plan.height, plan.width, q.batch, dtype_bytes)
    free_bytes = max(0, int(free_bytes))
    tile = auto_tile_size(head, plan.height, plan.width, q.batch, free_bytes, dtype_bytes)
    native = int(native_pixels(patch) ** 0.5)
    if model.known:
        about = f"model {model.note}: {model.arch} L2P, native {native}x{native}, default shift {model.default_shift:g}"
    else:
        about = (f"model: assuming a {head.upper()} {model.arch} L2P model (patch {patch}, native {native}x{native}, "
                 f"shift {model.default_shift:g}): {model.note}")
    lines = [f"{plan.width}x{plan.height} -> {tw}x{th} = {tw * th} tokens (patch {patch}, head {head})",
             f"shift {shift:.3g} ({why})",
             about,
             f"head memory {head_bytes / GIB:.2f} GiB untiled (bf16, batch {q.batch})"
             + (f"; auto tile {tile} px with {free_bytes / GIB:.0f} GiB free" if tile else "")]
    return {"ok": True, "text": "\n".join(lines), "width": plan.width, "height": plan.height, "tokens": [tw, th],
            "patch_size": patch, "head_variant": head, "native": [native, native], "shift": shift,
            "shift_from": q.shift_from, "model_known": model.known, "head_bytes": head_bytes, "tile": tile}
