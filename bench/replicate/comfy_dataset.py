"""The synthetic dataset, rendered by the latent source through a real headless ComfyUI with the pack's nodes.

This is the pack's own dataset path (``workflows/l2p_shapes_dataset``: L2P Prompt Bank -> the source model
-> KSampler -> VAE Decode -> L2P Dataset Writer, text conditioning cached per item), queued once per prompt
with the bank's index incremented, exactly as a user queues N runs in the UI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dataset.folder import read_metadata
from dataset.prompts import PromptRecord
from harness.graph import set_inputs

from .config import REPO, Budget

WORKFLOW = REPO / "workflows" / "api" / "l2p_shapes_dataset.api.json"
PROMPTS_FILE = "shapes_prompts.jsonl"
FOLDER = "shapes_dataset"


def dataset_graph(budget: Budget, index: int) -> dict:
    """The shipped API workflow with this budget's sampler settings and the bank's index set."""
    graph = json.loads(WORKFLOW.read_text())
    graph = set_inputs(graph, "L2PPromptBank", prompts=PROMPTS_FILE, index=index, images_per_prompt=1)
    graph = set_inputs(graph, "KSampler", steps=budget.sample_steps, cfg=budget.cfg)
    graph = set_inputs(graph, "ModelSamplingAuraFlow", shift=budget.shift)
    graph = set_inputs(graph, "EmptySD3LatentImage", width=budget.size, height=budget.size,
                       batch_size=budget.images_per_prompt)
    return set_inputs(graph, "L2PDatasetWriter", folder=FOLDER)


def render_dataset(records: list[PromptRecord], files: dict[str, Path], out: Path, budget: Budget) -> dict:
    """Queue one run per prompt on a fresh server; copy the finished dataset folder to ``out``.

    ``files``: models/ subfolder -> file (diffusion_models: the source, vae, text_encoders).
    """
    from harness.server import ComfyServer

    with ComfyServer() as server:
        for folder, path in files.items():
            server.add_model(path, folder)
        (server.input_dir / PROMPTS_FILE).write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
        ids = [server.queue(dataset_graph(budget, i)) for i in range(len(records))]
        for n, prompt_id in enumerate(ids):
            result = server.wait(prompt_id, timeout=budget.timeouts["dataset"])
            if not result.ok:
                raise RuntimeError(f"dataset item {n} failed: {result.describe()}\n{server.log_tail(20)}")
            if n % 64 == 0 or n == len(ids) - 1:
                print(f"  dataset: {n + 1}/{len(ids)} prompts rendered", flush=True)
        rows = read_metadata(str(server.output_dir / FOLDER))
        expected = len(records) * budget.images_per_prompt
        if len(rows) != expected:
            raise RuntimeError(f"the dataset has {len(rows)} complete items, expected {expected}")
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(server.output_dir / FOLDER, tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return {"items": len(rows), "prompts": len(records)}
