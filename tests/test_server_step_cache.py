"""The stock step caches (EasyCache, LazyCache) on an L2P model, through a real ComfyUI server.

EasyCache wraps the diffusion model's forward (``WrappersMP.DIFFUSION_MODEL``) and answers some calls without
running it; LazyCache does the same one level up (``PREDICT_NOISE``). Both must work on the pack's model: a
skipped step is not a broken core (seam S16), and a threshold of 0 (never skip) changes nothing."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from harness.graph import tiny_demo_prompt, with_step_cache
from harness.server import ComfyServer
from l2p.tiny import write_demo_models
from scripts.demo import DEMO_L2P, DEMO_TE, SHAPES_WORKFLOW, SHIPPED, prompt_graph

CACHES = ("EasyCache", "LazyCache")
STEPS = 12


@pytest.fixture(scope="module")
def server(comfy_server: ComfyServer) -> ComfyServer:
    write_demo_models(str(comfy_server.models_dir))
    return comfy_server


def prompt(cache: str | None = None, threshold: float = 0.2, seed: int = 9) -> dict:
    """The tiny demo at 64x64, one image, CFG 2 (cond and uncond share a call), ``cache`` before the sampler."""
    graph = tiny_demo_prompt({"7": {"steps": STEPS, "seed": seed},
                              "6": {"width": 64, "height": 64, "batch_size": 1}})
    return with_step_cache(graph, cache, threshold) if cache else graph


def image_and_skips(server: ComfyServer, graph: dict, cache: str | None) -> tuple[np.ndarray, int]:
    """The run's image, and how many steps the cache answered (its verbose log lines during this run)."""
    start = len(server.log_text())
    result = server.run(graph, timeout=300)
    assert result.ok, result.describe()
    (png,) = server.output_images(result)
    skips = len(re.findall(rf"{cache} \[verbose\] - skipping step", server.log_text()[start:])) if cache else 0
    return np.asarray(Image.open(png)).astype(np.int16), skips


def test_the_stock_nodes_exist_on_this_core(server):
    assert set(CACHES) <= server.node_types()


@pytest.mark.parametrize("cache", CACHES)
def test_a_step_cache_skips_steps_on_l2p_and_threshold_zero_changes_nothing(server, cache):
    plain, _ = image_and_skips(server, prompt(), None)
    never, never_skips = image_and_skips(server, prompt(cache, threshold=0.0), cache)
    assert never_skips == 0 and np.array_equal(plain, never)
    cached, skips = image_and_skips(server, prompt(cache, threshold=3.0), cache)
    assert skips >= 2, server.log_tail(60)  # steps really were answered from the cache
    assert not np.array_equal(plain, cached)
    assert cached.std() > 1.0  # an image, not a flat fill


@pytest.mark.parametrize("cache", CACHES)
def test_a_cached_image_stays_near_the_uncached_one(server, cache):
    """On the shipped shapes-world model (trained, fp32 on CPU): a cached step reuses the last change, so the image
    moves less than to another seed's image. (EasyCache adds the cached change to its input in place; in fp32 that
    input was core's x for the denoised value, and every cached step turned the image into noise.)"""
    for kind, name in (("l2p", DEMO_L2P), ("text_encoders", DEMO_TE)):
        server.add_model(SHIPPED / kind / name, kind)
    workflow = json.loads(SHAPES_WORKFLOW.read_text())

    def shapes(seed: int, node: str | None = None) -> dict:
        graph = prompt_graph(workflow, "a photo of a red circle on a plain background", seed, 1)
        return with_step_cache(graph, node, 0.2) if node else graph

    plain, _ = image_and_skips(server, shapes(3), None)
    other, _ = image_and_skips(server, shapes(4), None)
    cached, skips = image_and_skips(server, shapes(3, cache), cache)
    assert skips >= 3, server.log_tail(60)
    near, far = np.abs(cached - plain).mean(), np.abs(other - plain).mean()
    assert near < far, f"{cache}: {skips} steps cached, mean |cached - plain| {near:.1f}, other seed {far:.1f}"
