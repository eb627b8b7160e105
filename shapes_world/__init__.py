"""A procedural text-to-image world (coloured shapes on plain, striped or dotted backgrounds).

It stands in for real data so the paper's experiments run on CPU: scenes are sampled from a seed, rendered
exactly, described by a small regular English grammar, and scored by a GenEval-style procedural checker.
The striped and dotted backgrounds carry the fine detail that an 8x-downsampling VAE loses, measured by
``hf_energy``. Plain numpy; no ComfyUI import.
"""

from .detail import detail_ratio, hf_energy, stripe_contrast
from .prompts import prompt_for, spec_from_prompt, vocabulary
from .render import render
from .scene import Scene, Spec, make_scenes, sample_scene
from .score import check, detect, evaluate, validate

__all__ = [
    "Scene",
    "Spec",
    "check",
    "detail_ratio",
    "detect",
    "evaluate",
    "hf_energy",
    "make_scenes",
    "prompt_for",
    "render",
    "sample_scene",
    "spec_from_prompt",
    "stripe_contrast",
    "validate",
    "vocabulary",
]
