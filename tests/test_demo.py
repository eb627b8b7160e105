"""The README's main job: the shapes-world demo on the embedded (shipped, trained) model through a real
headless ComfyUI, scored by the world's procedural GenEval; an untrained model of the same architecture
must not pass the same floor."""

from __future__ import annotations

import json

import torch

from bench.replicate.config import FULL
from bench.replicate.stages import scratch_l2p_state
from l2p.tensor_io import save_safetensors_atomic
from scripts.demo import DEMO_L2P, DEMO_PROMPTS, DEMO_TE, IMAGES_PER_PROMPT, SHIPPED, run_demo

FLOOR = 0.5  # procedural GenEval (mean of per-task accuracy) the shipped model must reach; README states it


def test_shipped_model_beats_the_floor(tmp_path):
    shipped = [SHIPPED / "l2p" / DEMO_L2P, SHIPPED / "text_encoders" / DEMO_TE]
    assert sum(p.stat().st_size for p in shipped) < 20 * 2**20
    scores = run_demo(tmp_path)
    assert scores["n"] == len(DEMO_PROMPTS) * IMAGES_PER_PROMPT
    assert len(list(tmp_path.glob("*.png"))) == scores["n"]
    assert json.loads((tmp_path / "scores.json").read_text())["overall"] == scores["overall"]
    assert (tmp_path / "scores.md").is_file()
    assert scores["overall"] >= FLOOR, scores


def test_untrained_model_does_not_beat_the_floor(tmp_path):
    untrained = tmp_path / "models" / "l2p-shapes-untrained.safetensors"
    save_safetensors_atomic(scratch_l2p_state(FULL, seed=1), str(untrained), dtype=torch.float16)
    scores = run_demo(tmp_path / "out", {"l2p": [untrained]}, model=untrained.name)
    assert scores["n"] == len(DEMO_PROMPTS) * IMAGES_PER_PROMPT
    assert scores["overall"] < FLOOR, scores
