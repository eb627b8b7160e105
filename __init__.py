"""ComfyUI-L2P: L2P (Latent-to-Pixel, arXiv 2605.12013) pixel-space models as native ComfyUI models.

Importable outside ComfyUI: the node glue loads only when ComfyUI's API is importable, so the method in
``l2p/`` and the trainer in ``training/`` stay usable with plain torch.
"""

import logging

WEB_DIRECTORY = "./js"

try:
    import comfy_api.latest  # noqa: F401
except ImportError:  # plain Python (training, tests, tools): no nodes to register
    pass
else:
    try:
        from .nodes import comfy_entrypoint  # noqa: F401
    except (ImportError, AttributeError) as e:  # a core without a part nodes/comfy_core.py relies on
        from .l2p import TESTED_COMFYUI

        logging.error("ComfyUI-L2P: this ComfyUI lacks a part the pack relies on (%s); the pack is tested on "
                      "ComfyUI %s; its nodes are not loaded: update ComfyUI-L2P or report it", e, TESTED_COMFYUI)

__all__ = ["WEB_DIRECTORY"]
