"""L2PLoraFromLatent: a LoRA made for the latent source model, applied to the L2P model converted from it."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..l2p.lora_transfer import select
from ..l2p.policies import POLICIES
from .comfy_core import METADATA, is_l2p, lora_keys_of, with_lora
from .files import load_safetensors

FROM_CHECKPOINT = "from checkpoint"
KEEP_CHOICES = {"frozen blocks only": "frozen", "every trunk block": "all"}


class L2PLoraFromLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2PLoraFromLatent",
            display_name="L2P LoRA from Latent Model",
            category="L2P/loaders",
            description="Applies a LoRA trained for the latent source (e.g. a Z-Image LoRA) to an L2P model made "
                        "from it: by default only to the trunk blocks the L2P model's policy left frozen (they "
                        "are still the source's weights); reports what it kept and dropped. L2P LoRAs load with "
                        "the stock LoraLoaderModelOnly.",
            inputs=[
                io.Model.Input("model", tooltip="An L2P model (L2P Model Loader or UNETLoader)."),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="A LoRA of the latent source model, from models/loras."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="LoRA strength, as in LoraLoaderModelOnly."),
                io.Combo.Input("blocks", options=list(KEEP_CHOICES), default="frozen blocks only",
                               tooltip="frozen blocks only: skip blocks the L2P training changed (their weights "
                                       "are no longer the source's). every trunk block: apply wherever a weight "
                                       "matches."),
                io.Combo.Input("policy", options=[FROM_CHECKPOINT, *POLICIES], default=FROM_CHECKPOINT,
                               tooltip="Which blocks the L2P model trained: from its file's l2p.policy, or set "
                                       "here for files that do not record it."),
            ],
            outputs=[io.Model.Output(tooltip="The L2P model with the LoRA applied."),
                     io.String.Output(display_name="report", tooltip="What was kept and dropped, and why.")],
        )

    @classmethod
    def execute(cls, model, lora_name: str, strength: float, blocks: str, policy: str) -> io.NodeOutput:
        if not is_l2p(model):
            raise ValueError("this is not an L2P model: L2P LoRA from Latent Model takes the output of L2P Model "
                             "Loader; for a latent model use the stock LoraLoaderModelOnly")
        if policy == FROM_CHECKPOINT:
            policy = (model.get_attachment(METADATA) or {}).get("l2p.policy", "")
            if not policy:
                raise ValueError("this L2P model's file records no l2p.policy: set policy to the one it was trained "
                                 "with (official for the released models)")
        lora, _ = load_safetensors(folder_paths.get_full_path_or_raise("loras", lora_name))
        n_layers = len(model.model.diffusion_model.layers)
        chosen = select(lora.keys(), lora_keys_of(model), policy, n_layers, KEEP_CHOICES[blocks])
        report = chosen.report(policy)
        if not chosen.kept:
            raise ValueError(f"{lora_name}: nothing to apply ({report}); check it is a LoRA of this model's source")
        patched = with_lora(model, {k: lora[k] for k in chosen.kept}, strength)
        return io.NodeOutput(patched, report, ui={"text": [report]})
