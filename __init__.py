"""ComfyUI-L2P: L2P (Latent-to-Pixel, arXiv 2605.12013) pixel-space models as native ComfyUI models.

Importable outside ComfyUI: the node glue loads only when ComfyUI's API is importable, so the method in
``l2p/`` and the trainer in ``training/`` stay usable with plain torch.
"""

WEB_DIRECTORY = "./js"

try:
    import comfy_api.latest  # noqa: F401
except ImportError:  # plain Python (training, tests, tools): no nodes to register
    pass
else:
    from .nodes import comfy_entrypoint  # noqa: F401

__all__ = ["WEB_DIRECTORY"]
