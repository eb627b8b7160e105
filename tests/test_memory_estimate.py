"""ComfyUI's memory estimate for L2P models: what core reserves is the pack's per-part estimate, and that estimate
is within -10% / +50% of the peak measured on this CPU, for each attention backend core can pick here.

The band test runs ``bench/calibrate_memory.py``'s measurement (one model call per process, peak RSS) at a
reduced width where each part can lead the peak (trunk tokens, attention scores, the head), in four cases (about
25 s each here); the bench prints the same comparison at the real width, for every case.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from bench.calibrate_memory import run_case
from l2p.pixel_dit import official_state_dict
from l2p.tiny import tiny_l2p

WIDTH = {"dim": 768, "heads": 12, "cap_dim": 64, "ffn": 2048}


@pytest.fixture(scope="module")
def core():
    from harness.inprocess import import_pack

    return importlib.import_module(import_pack().__name__ + ".nodes.comfy_core")


def test_core_reserves_the_packs_estimate_not_its_area_formula(core):
    """Core's own estimate_memory (what prepare_sampling loads by) asks the model: for CFG, twice the batch."""
    import comfy.model_management
    import comfy.sampler_helpers

    patcher = core.load_l2p_state_dict(official_state_dict(*tiny_l2p(seed=3)), dtype=torch.float32)
    dit = patcher.model.diffusion_model
    free = int(comfy.model_management.get_free_memory(comfy.model_management.get_torch_device()))
    cond = {"model_conds": {}, "cross_attn": torch.zeros(1, 40, 64)}
    full, minimum = comfy.sampler_helpers.estimate_memory(patcher, (1, 3, 1024, 768), {"positive": [cond],
                                                                                       "negative": [cond]})
    cap = core.PLAN_CAP_TOKENS  # this path passes no caption shapes: the planning length
    assert full == core.call_memory(dit, (2, 3, 1024, 768), 4, cap, free).total
    assert minimum == core.call_memory(dit, (1, 3, 1024, 768), 4, cap, free).total
    assert full > minimum
    stock = 2 * 1024 * 768 * 0.15 * core.MEMORY_USAGE_FACTOR * 2**20  # core's non-flash formula for the same call
    assert abs(full - stock) > 0.1 * stock
    # with the caption's shape (what core's batching passes), its length counts
    shorter = patcher.model.memory_required([2, 3, 1024, 768], {"c_crossattn": [torch.Size([1, 32, 64])]})
    assert shorter == core.call_memory(dit, (2, 3, 1024, 768), 4, 32, free).total < full


def test_attention_backend_follows_the_function_core_chose(core, monkeypatch):
    import comfy.ldm.modules.attention as attention

    for name, kind in (("attention_sub_quad", "sub_quad"), ("attention_split", "split"),
                       ("attention_basic", "basic"), ("attention_pytorch", "linear")):
        monkeypatch.setattr(attention, "optimized_attention", getattr(attention, name))
        assert core.attention_backend() == kind


def test_chunked_attention_reserves_its_scores_and_follows_the_free_memory():
    from l2p.head_tiling import attention_workspace_bytes

    linear = attention_workspace_bytes("linear", 2, 30, 4224, 2, 10 * 2**30)
    big = attention_workspace_bytes("sub_quad", 2, 30, 4224, 2, 40 * 2**30)
    small = attention_workspace_bytes("sub_quad", 2, 30, 4224, 2, 2 * 2**30)
    assert linear == 0 < small < big
    assert big == 2 * 60 * 4096 * 4224 * 2  # scores and softmax  # enough memory: 4096-query chunks against every key
    assert attention_workspace_bytes("split", 2, 30, 4224, 2, 2**30) == 2**30  # sliced to what is free
    with pytest.raises(ValueError, match="unknown attention backend 'flash2'"):
        attention_workspace_bytes("flash2", 1, 1, 1, 2, None)


# Each part leads somewhere: the head (1K at 512, 4K at 2048), the scores (sub-quad at 1024), the batch.
@pytest.mark.parametrize("variant,size,batch,backend", [("1k", 512, 1, "linear"), ("1k", 1024, 1, "sub_quad"),
                                                        ("1k", 512, 2, "sub_quad"), ("4k", 2048, 1, "linear")])
def test_estimate_is_within_the_band_of_the_measured_peak(variant, size, batch, backend):
    case = {**WIDTH, "variant": variant, "size": size, "batch": batch, "backend": backend,
            "tile": 0 if variant == "1k" else "auto"}
    row = run_case(case, timeout=600)
    ratio = row["estimate"] / row["measured"]
    mib = {k: f"{row[k] / 2**20:.0f} MiB" for k in ("estimate", "measured", "trunk", "head")}
    assert 0.9 <= ratio <= 1.5, f"estimate {mib['estimate']} vs measured {mib['measured']} ({ratio:.2f}): {mib}"
