"""The README's main job: the shapes-world demo on the embedded (shipped, trained) model through a real
headless ComfyUI, each image scored by the world's procedural GenEval; an untrained model of the same
architecture, run through the same workflow, prompts and seeds, must not reach the same floor."""

from __future__ import annotations

import json

import safetensors
import torch

from bench.replicate.config import FULL
from bench.replicate.stages import scratch_l2p_state
from l2p.format.tensor_io import save_safetensors_atomic
from scripts.demo import DEMO_L2P, DEMO_PROMPTS, DEMO_TE, IMAGES_PER_PROMPT, SHIPPED, main, run_demo

# The floor the shipped model must reach on the demo's 24 images (README states it): colour-level procedural
# GenEval (right colour, count, binding and position; any outline), mean of per-task accuracy.
FLOOR = 0.25


def test_shipped_model_is_small_and_in_the_official_layout():
    l2p, te = SHIPPED / "l2p" / DEMO_L2P, SHIPPED / "text_encoders" / DEMO_TE
    assert l2p.stat().st_size + te.stat().st_size < 20 * 2**20
    with safetensors.safe_open(str(l2p), framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert "all_x_embedder.16-1.weight" in keys and any(k.startswith("local_decoder.") for k in keys)
    assert meta["l2p.shapes_world.run"]


def test_shipped_model_beats_the_floor(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--out", str(out)]) == 0  # the README's main command, minus the setup
    scores = json.loads((out / "scores.json").read_text())
    assert scores["n"] == len(DEMO_PROMPTS) * IMAGES_PER_PROMPT
    assert len(list(out.glob("*.png"))) == scores["n"]
    assert (out / "scores.md").is_file()
    assert f"colour level {scores['colour_level']['overall']:.3f}" in capsys.readouterr().out
    assert scores["colour_level"]["overall"] >= FLOOR, scores


def test_untrained_model_does_not_reach_the_floor(tmp_path):
    untrained = tmp_path / "models" / "l2p-shapes-untrained.safetensors"
    save_safetensors_atomic(scratch_l2p_state(FULL, seed=1), str(untrained), dtype=torch.float16)
    scores = run_demo(tmp_path / "out", {"l2p": [untrained]}, model=untrained.name)
    assert scores["n"] == len(DEMO_PROMPTS) * IMAGES_PER_PROMPT
    assert scores["colour_level"]["overall"] < FLOOR, scores
