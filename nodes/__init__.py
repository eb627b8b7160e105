"""ComfyUI glue: one file per feature; this module only collects the nodes and registers model folders."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .comfy_core import register_with_stock_loader
from .convert import L2PConvert, L2PSaveCheckpoint, L2PSourceModelLoader
from .dataset import L2PDatasetWriter, L2PPromptBank
from .demo_world import L2PDemoTextEncode, L2PDemoVAELoader
from .files import register_l2p_folder
from .loader import L2PModelLoader
from .lora import L2PLoraFromLatent
from .routes import register_routes
from .sampling import L2PEmptyImage, L2PHeadTiling, L2PNoiseShift
from .text_encoder import L2PTextEncoderLoader
from .train import L2PTrain

NODES: list[type[io.ComfyNode]] = [L2PModelLoader, L2PEmptyImage, L2PTextEncoderLoader, L2PSourceModelLoader,
                                   L2PConvert, L2PSaveCheckpoint, L2PNoiseShift, L2PPromptBank,
                                   L2PDatasetWriter, L2PHeadTiling, L2PTrain, L2PDemoTextEncode,
                                   L2PDemoVAELoader, L2PLoraFromLatent]


class L2PExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> L2PExtension:
    register_l2p_folder()
    register_with_stock_loader()
    register_routes()
    return L2PExtension()
