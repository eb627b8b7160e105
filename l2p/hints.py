"""What the frontend shows next to the size and shift widgets, computed by the functions the nodes use.

One dictionary per request: the final size and token grid (``l2p.sizes``), the effective shift
(``l2p.schedule``) and the Detailer Head's activation memory, untiled and with the tile ``auto`` would pick
on a device with the given free memory (``l2p.head_tiling``). Errors come back as text, not exceptions.
"""

from __future__ import annotations

from .head_tiling import auto_tile_size, head_memory_bytes
from .schedule import auto_shift, native_pixels
from .sizes import CUSTOM, PRESETS, plan_size

GIB = 2**30


def size_hint(width: int, height: int, batch: int = 1, preset: str = CUSTOM, fit: str = "reject",
              patch_size: int = 16, head_variant: str = "1k", shift: float = 3.0, mode: str = "auto",
              free_bytes: int = 16 * GIB, dtype_bytes: int = 2) -> dict:
    if preset in PRESETS:
        width, height = PRESETS[preset]
    try:
        plan = plan_size(width, height, patch_size, head_variant, fit=fit)
    except ValueError as e:
        return {"ok": False, "text": str(e)}
    tw, th = plan.tokens
    effective = auto_shift(shift, plan.width, plan.height, patch_size) if mode == "auto" else shift
    head_bytes = head_memory_bytes(head_variant, plan.height, plan.width, batch, dtype_bytes)
    tile = auto_tile_size(head_variant, plan.height, plan.width, batch, free_bytes, dtype_bytes)
    native = int(native_pixels(patch_size) ** 0.5)
    lines = [f"{plan.width}x{plan.height} -> {tw}x{th} = {tw * th} tokens (patch {patch_size}, head {head_variant})",
             f"shift {effective:.3g} ({mode}; native {native}x{native})",
             f"head memory {head_bytes / GIB:.2f} GiB untiled (bf16, batch {batch})"
             + (f"; auto tile {tile} px with {free_bytes / GIB:.0f} GiB free" if tile else "")]
    return {"ok": True, "text": "\n".join(lines), "width": plan.width, "height": plan.height, "tokens": [tw, th],
            "patch_size": patch_size, "head_variant": head_variant, "shift": effective, "head_bytes": head_bytes,
            "tile": tile}
