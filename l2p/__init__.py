"""The L2P method in plain torch (no ComfyUI import): Detailer Heads, checkpoint layouts, configuration."""

import os
import re


def pack_version() -> str:
    """The pack's version from pyproject.toml (the one place it is written); "unknown" outside a checkout."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")
    try:
        with open(path, encoding="utf-8") as f:
            m = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.MULTILINE)
    except OSError:
        return "unknown"
    return m.group(1) if m else "unknown"


# The ComfyUI releases the pack is tested on (0.3.75 and 0.33.0 run by CI, 0.38.1 read seam by seam).
TESTED_COMFYUI = "0.3.75 to 0.38.1"
