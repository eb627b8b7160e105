"""Find the ComfyUI this pack runs against (tests, demo, setup).

Order: $COMFYUI_PATH; the ComfyUI whose custom_nodes/ holds this pack; otherwise the ComfyUI 0.3.75
source copy that scripts/setup.sh installs under $L2P_CACHE (default ~/.cache/comfyui-l2p).
"""

from __future__ import annotations

import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def comfyui_home(check: bool = True) -> pathlib.Path:
    env = os.environ.get("COMFYUI_PATH")
    if env:
        home = pathlib.Path(env).expanduser().resolve()
    elif REPO.parent.name == "custom_nodes" and (REPO.parent.parent / "main.py").is_file():
        home = REPO.parent.parent
    else:
        cache = pathlib.Path(os.environ.get("L2P_CACHE", pathlib.Path.home() / ".cache" / "comfyui-l2p"))
        home = cache.expanduser().resolve() / "comfyui-0.3.75"
    if check and not (home / "main.py").is_file():
        raise FileNotFoundError(f"no ComfyUI at {home}: run scripts/setup.sh or set COMFYUI_PATH")
    return home


if __name__ == "__main__":
    print(comfyui_home(check="--no-check" not in sys.argv[1:]))
