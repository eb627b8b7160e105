"""Import ComfyUI's modules and this pack inside the test process (CPU only), for unit-level tests."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

from harness.comfyui_home import REPO, comfyui_home

PACK_NAME = "comfyui_l2p_pack"


def import_comfy() -> pathlib.Path:
    home = comfyui_home()
    if str(home) not in sys.path:
        sys.path.insert(0, str(home))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before anything imports comfy.model_management, or it probes CUDA
    return home


def import_pack() -> types.ModuleType:
    """The pack as ComfyUI imports it: a package whose nodes use relative imports."""
    import_comfy()
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module
