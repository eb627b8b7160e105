"""Find the ComfyUI this pack runs against (tests, demo, setup), and the virtual environment that goes with it.

Order: $COMFYUI_PATH; the ComfyUI whose custom_nodes/ holds this pack; otherwise the ComfyUI 0.3.75
source copy that scripts/setup.sh installs under $L2P_CACHE (default ~/.cache/comfyui-l2p).
Each core gets its own venv (requirements and frontend differ): ``.venv`` for the default one,
``.venv-<folder name>`` for a COMFYUI_PATH. Standard library only: the shell scripts run this file directly,
before any venv exists.

    python harness/comfyui_home.py            the ComfyUI folder (fails if it has no main.py)
    python harness/comfyui_home.py --no-check the folder, whether or not it exists yet
    python harness/comfyui_home.py --venv     the venv for that ComfyUI ($L2P_VENV wins)
    python harness/comfyui_home.py --current  where setup.sh unpacks the current core (0.33.0) for tests
"""

from __future__ import annotations

import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CORE = "comfyui-0.3.75"
CURRENT_CORE = "comfyui-0.33.0"  # unpacked by setup.sh from ../shared/comfyui/ComfyUI-0.33.0.tar.gz


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("L2P_CACHE", pathlib.Path.home() / ".cache" / "comfyui-l2p")).expanduser()


def comfyui_home(check: bool = True) -> pathlib.Path:
    env = os.environ.get("COMFYUI_PATH")
    if env:
        home = pathlib.Path(env).expanduser().resolve()
    elif REPO.parent.name == "custom_nodes" and (REPO.parent.parent / "main.py").is_file():
        home = REPO.parent.parent
    else:
        home = cache_dir().resolve() / DEFAULT_CORE
    if check and not (home / "main.py").is_file():
        raise FileNotFoundError(f"no ComfyUI at {home}: run scripts/setup.sh or set COMFYUI_PATH")
    return home


def venv_dir() -> pathlib.Path:
    if os.environ.get("L2P_VENV"):
        return pathlib.Path(os.environ["L2P_VENV"]).expanduser()
    if os.environ.get("COMFYUI_PATH"):
        return REPO / f".venv-{comfyui_home(check=False).name}"
    return REPO / ".venv"


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--venv" in args:
        print(venv_dir())
    elif "--current" in args:
        print(cache_dir().resolve() / CURRENT_CORE)
    else:
        print(comfyui_home(check="--no-check" not in args))
