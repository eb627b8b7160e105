"""Dataset nodes: L2PPromptBank (a prompt per queued run) and L2PDatasetWriter (png + txt + metadata.jsonl).

Queue N runs with the bank's ``index`` on "increment" and the source model renders one dataset item per
run; the writer skips items already on disk, so queueing the same range again resumes a stopped set.
"""

from __future__ import annotations

import functools
import os

import folder_paths
import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image

from ..dataset.folder import DatasetItem, DatasetWriter, conditioning_file_bytes, png_bytes
from ..dataset.prompts import PromptRecord, generate_bank, read_jsonl
from .files import subpath

BUILTIN = "(built-in taxonomy)"
PROMPT_EXTS = (".jsonl",)


def prompt_files() -> list[str]:
    """The built-in generator plus every .jsonl prompt file in ComfyUI's input folder (sub-folders too)."""
    base = folder_paths.get_input_directory()
    found = []
    for folder, _, files in os.walk(base):
        found += [os.path.relpath(os.path.join(folder, f), base).replace(os.sep, "/") for f in files
                  if f.endswith(PROMPT_EXTS)]
    return [BUILTIN, *sorted(found)]


@functools.lru_cache(maxsize=8)
def _bank(name: str, count: int, seed: int, mtime: float) -> tuple[PromptRecord, ...]:
    if name == BUILTIN:
        return tuple(generate_bank(count, seed=seed))
    return tuple(read_jsonl(subpath(folder_paths.get_input_directory(), name, "prompts", "prompts.jsonl")))


def load_bank(name: str, count: int, seed: int) -> tuple[PromptRecord, ...]:
    if name == BUILTIN:
        return _bank(name, count, seed, 0.0)
    path = subpath(folder_paths.get_input_directory(), name, "prompts", "prompts.jsonl")
    if not os.path.isfile(path):
        raise ValueError(f"prompt file {name} is not in the input folder: refresh (press R) and pick a listed file")
    return _bank(name, 0, 0, os.path.getmtime(path))


class L2PPromptBank(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2PPromptBank",
            display_name="L2P Prompt Bank",
            category="L2P/dataset",
            description="One prompt, seed and category per queued run, from the built-in taxonomy generator or a "
                        "prompts .jsonl file (python -m dataset.prompts writes one). Set index to increment and queue "
                        "N runs to render N dataset images.",
            inputs=[
                io.Combo.Input("prompts", options=prompt_files(), default=BUILTIN,
                               tooltip="The built-in generator (taxonomy of 4 classes, 17 sub-classes, 1000+ "
                                       "categories; rule-based prompts of 200-350 characters) or a .jsonl file in "
                                       "ComfyUI's input folder."),
                io.Int.Input("index", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                             tooltip="Run number: item index of the image (set to increment and queue N runs)."),
                io.Int.Input("images_per_prompt", default=2, min=1, max=64,
                             tooltip="Images per prompt, each with its own seed (the paper: 10k prompts, 20k "
                                     "images, i.e. 2)."),
                io.Int.Input("count", default=10000, min=1, max=10_000_000,
                             tooltip="Built-in generator only: number of prompts in the bank."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1,
                             tooltip="Built-in generator only: the bank's seed (the same seed gives the same "
                                     "prompts)."),
            ],
            outputs=[io.String.Output(display_name="prompt", tooltip="The prompt text for CLIPTextEncode."),
                     io.Int.Output(display_name="seed", tooltip="The image seed for KSampler."),
                     io.String.Output(display_name="category", tooltip="The taxonomy path major/sub/category."),
                     io.Int.Output(display_name="index", tooltip="The item index for L2P Dataset Writer.")],
        )

    @classmethod
    def fingerprint_inputs(cls, prompts: str, **_) -> str:
        """A changed prompt file re-runs the node (its contents are not an input ComfyUI can see)."""
        if prompts == BUILTIN:
            return prompts
        path = os.path.join(folder_paths.get_input_directory(), prompts)
        return f"{prompts}:{os.path.getmtime(path) if os.path.isfile(path) else 0}"

    @classmethod
    def execute(cls, prompts: str = BUILTIN, index: int = 0, images_per_prompt: int = 2, count: int = 10000,
                seed: int = 0) -> io.NodeOutput:
        bank = load_bank(prompts, count, seed)
        which = index // images_per_prompt
        if which >= len(bank):
            raise ValueError(f"index {index} is past the end of the bank ({len(bank)} prompts x {images_per_prompt} "
                             f"images = {len(bank) * images_per_prompt} runs): stop queueing, or use a larger bank")
        record = bank[which]
        return io.NodeOutput(record.prompt, record.seed + index % images_per_prompt, record.category, index)


class L2PDatasetWriter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2PDatasetWriter",
            display_name="L2P Dataset Writer",
            category="L2P/dataset",
            description="Writes NNNNN.png + NNNNN.txt (+ the text conditioning) and a metadata.jsonl line per "
                        "image into a folder of ComfyUI's output directory. Atomic; items already there are "
                        "skipped (a rerun resumes); an item with a different prompt is never overwritten.",
            inputs=[
                io.Image.Input("images", tooltip="The rendered image(s); a batch of B gives items index*B .. +B-1."),
                io.String.Input("prompt", force_input=True, tooltip="The prompt (from L2P Prompt Bank)."),
                io.Int.Input("seed", force_input=True, tooltip="The image seed (from L2P Prompt Bank)."),
                io.Int.Input("index", force_input=True, tooltip="The item index (from L2P Prompt Bank)."),
                io.String.Input("folder", default="l2p_dataset",
                                tooltip="Dataset folder inside ComfyUI's output directory."),
                io.String.Input("category", force_input=True, optional=True,
                                tooltip="The taxonomy path, stored in metadata.jsonl."),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="Optional: the prompt's conditioning, saved as NNNNN.cond.safetensors "
                                              "so training need not load the text encoder."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images: torch.Tensor, prompt: str, seed: int, index: int, folder: str = "l2p_dataset",
                category: str = "", conditioning=None) -> io.NodeOutput:
        root = subpath(folder_paths.get_output_directory(), folder, "folder", "l2p_dataset")
        writer = DatasetWriter(root)
        cond = conditioning_bytes(conditioning) if conditioning is not None else None
        written, skipped = [], []
        batch = images.shape[0]
        for b in range(batch):
            pixels = (images[b].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
            item = DatasetItem(index=index * batch + b, text=prompt, seed=seed, category=category or "",
                               width=pixels.shape[1], height=pixels.shape[0],
                               extra={"batch_index": b} if batch > 1 else {})
            done = writer.write(item, png_bytes(Image.fromarray(pixels)), cond)
            (written if done else skipped).append(item.stem)
        text = f"{folder}: wrote {', '.join(written) or 'nothing'}" + (
            f"; skipped {', '.join(skipped)} (already there)" if skipped else "")
        return io.NodeOutput(ui={"text": [text]})


def conditioning_bytes(conditioning) -> bytes:
    """The first conditioning's text features [tokens, width] (padding cut by its mask) as safetensors bytes."""
    feats, extra = conditioning[0][0], conditioning[0][1]
    feats = feats[0]
    mask = extra.get("attention_mask")
    if mask is not None:
        feats = feats[mask[0].bool().to(feats.device)[: feats.shape[0]]]
    return conditioning_file_bytes(feats)
