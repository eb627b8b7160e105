"""The pack's seam to ComfyUI (nodes/comfy_core.py), on whichever core COMFYUI_PATH names (CI: 0.3.75 and 0.33.0).

- Core's own forward runs the L2P trunk: rope options and block patches reach it exactly as they reach core's
  latent NextDiT with the same trunk weights (the image tokens after the last block are equal).
- A core that no longer calls the hooked seams gives one line naming the seam, the version and the range.
- Saving goes through core's saving API where it exists and keeps weight patches (LoRA) applied.
- A core with its own L2P class: the pack defers to it for the files it recognises, its own classes still
  load the rest (4K head), and the pack's extras (shift, tiling, saving, conversion refusal) work on top.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from harness.inprocess import import_pack
from l2p import TESTED_COMFYUI
from l2p.format.layouts import infer_config, official_to_comfy, strip_prefix, to_comfy_layout
from l2p.pixel_dit import official_state_dict
from l2p.tiny import tiny_l2p


@pytest.fixture(scope="module")
def core():
    return importlib.import_module(import_pack().__name__ + ".nodes.comfy_core")


@pytest.fixture(scope="module")
def tiny_sd():
    return official_state_dict(*tiny_l2p(seed=3))


def inputs(seed: int = 0, b: int = 1, h: int = 48, w: int = 64, tokens: int = 9):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 3, h, w, generator=gen), torch.rand(b, generator=gen),
            torch.randn(b, tokens, 64, generator=gen), tokens)


def last_block_tokens(dit, x, t, cap, n, options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(the model's output, the image tokens its last block returned), read with a forward hook."""
    seen = {}
    hook = dit.layers[-1].register_forward_hook(lambda m, args, out: seen.__setitem__("img", out.clone()))
    try:
        with torch.no_grad():
            out = dit(x, t, cap, n, transformer_options=dict(options))
    finally:
        hook.remove()
    return out, seen["img"]


def latent_twin(core, dit):
    """Core's own latent NextDiT (no L2P hook at all) with the L2P model's trunk weights, pixels in."""
    import comfy.ops

    cfg = infer_config(to_comfy_layout(dit.state_dict()))
    kwargs = {k: v for k, v in core.unet_config_for(cfg).items() if k not in ("head_variant", "head_width_div",
                                                                              "image_model")}
    twin = core.NextDiTFromShapes(**kwargs, operations=comfy.ops.disable_weight_init)
    missing, _ = twin.load_state_dict(dit.state_dict(), strict=False)
    assert all(k.startswith(("final_layer.", "norm_final.")) for k in missing), missing
    return twin.train(False)


@pytest.mark.parametrize("rope", [None, {"scale_x": 1.0, "shift_x": 3.0, "scale_y": 0.5, "shift_y": 1.0,
                                         "scale_t": 1.0, "shift_t": 0.0}])
def test_trunk_sees_what_core_latent_model_sees(core, tiny_sd, rope):
    dit = core.load_l2p_state_dict(dict(tiny_sd), dtype=torch.float32).model.diffusion_model
    twin = latent_twin(core, dit)
    x, t, cap, n = inputs()
    options = {"rope_options": rope} if rope else {}
    out, img = last_block_tokens(dit, x, t, cap, n, options)
    _, img_core = last_block_tokens(twin, x, t, cap, n, options)
    assert torch.equal(img, img_core)
    assert out.shape == x.shape
    if rope:  # the option changes the L2P image, not only its tokens
        plain, _ = last_block_tokens(dit, x, t, cap, n, {})
        assert (plain - out).abs().max() > 1e-3


def test_block_patches_act_as_on_core_latent_model(core, tiny_sd):
    """A ``double_block`` patch (what stock nodes such as SkipLayerGuidance set) changes the L2P trunk exactly
    as it changes core's latent NextDiT: on a core that runs such patches, both change; on one that does not,
    neither does."""
    dit = core.load_l2p_state_dict(dict(tiny_sd), dtype=torch.float32).model.diffusion_model
    twin = latent_twin(core, dit)
    x, t, cap, n = inputs(seed=1)

    def halve(args):
        return {"img": args["img"] * 0.5} if args["block_index"] == 0 else {}

    patch = {"patches": {"double_block": [halve]}}
    plain, img = last_block_tokens(dit, x, t, cap, n, {})
    patched, img_patched = last_block_tokens(dit, x, t, cap, n, patch)
    _, core_img = last_block_tokens(twin, x, t, cap, n, {})
    _, core_img_patched = last_block_tokens(twin, x, t, cap, n, patch)
    assert torch.equal(img, core_img) and torch.equal(img_patched, core_img_patched)
    core_runs_patches = not torch.equal(core_img, core_img_patched)
    assert (not torch.equal(plain, patched)) == core_runs_patches


def test_a_changed_core_forward_gives_one_line(core, tiny_sd, monkeypatch):
    from comfy.ldm.lumina.model import NextDiT

    dit = core.load_l2p_state_dict(dict(tiny_sd), dtype=torch.float32).model.diffusion_model
    x, t, cap, n = inputs()

    def forward_without_unpatchify(self, x, *args, **kwargs):  # a future core that decodes some other way
        return torch.zeros_like(x)

    monkeypatch.setattr(NextDiT, "_forward", forward_without_unpatchify)
    with pytest.raises(core.CoreChanged) as err, torch.no_grad():
        dit(x, t, cap, n)
    message = str(err.value)
    assert "\n" not in message and "patchify_and_embed" in message and TESTED_COMFYUI in message
    assert core.comfyui_version() in message and core.comfyui_version() != "unknown"
    assert dit._step is None  # the step's pixels are not kept alive


def test_saving_keeps_weight_patches(core, tiny_sd):
    patcher = core.load_l2p_state_dict(dict(tiny_sd), dtype=torch.float32)
    key = "diffusion_model.layers.0.attention.qkv.weight"
    base = patcher.model.state_dict()[key].clone()
    delta = torch.randn_like(base) * 0.01
    patched = patcher.clone()
    patched.add_patches({key: (delta,)}, strength_patch=0.5)
    saved = core.patched_state_dict(patched)
    assert torch.allclose(saved["layers.0.attention.qkv.weight"], base + 0.5 * delta, atol=1e-6)
    assert saved["layers.0.attention.qkv.weight"].device.type == "cpu"
    assert not any(k.startswith(("final_layer.", "norm_final.")) for k in saved)


def test_free_memory_comes_from_the_patcher_where_core_offers_it(core, tiny_sd):
    """During sampling (``pre_run`` .. ``cleanup``) auto tiling asks the running patcher, where core has
    ``ModelPatcher.get_free_memory`` (dynamic VRAM counts what it can offload); otherwise the device."""
    patcher = core.load_l2p_state_dict(dict(tiny_sd), dtype=torch.float32)
    calls = []
    if hasattr(patcher, "get_free_memory"):
        original = patcher.get_free_memory
        patcher.get_free_memory = lambda device: calls.append(device) or original(device)
    dev = torch.device("cpu")
    patcher.pre_run()
    try:
        assert patcher.model.diffusion_model.free_memory(dev) > 0
    finally:
        patcher.cleanup()
    assert len(calls) == (1 if hasattr(type(patcher), "get_free_memory") else 0)


# --- a core that ships its own L2P class ---------------------------------------------------------------------


@pytest.fixture
def core_with_l2p(core, monkeypatch):
    """A stand-in for core's own L2P support (as PR #14055 would add): a detection entry for 1K-head files."""
    import comfy.model_base
    import comfy.supported_models

    class CoreNextDiTL2P(core.NextDiTL2P):
        pass

    class CoreL2PModel(comfy.model_base.BaseModel):
        def __init__(self, model_config, model_type=comfy.model_base.ModelType.FLOW, device=None):
            super().__init__(model_config, model_type, device=device, unet_model=CoreNextDiTL2P)

        def extra_conds(self, **kwargs):
            return comfy.model_base.Lumina2.extra_conds(self, **kwargs)

    class ZImageL2PCore(comfy.supported_models.ZImage):
        unet_config = {"image_model": "lumina2"}
        required_keys = {"local_decoder.enc1.0.weight"}
        latent_format = core.L2PPixels

        @classmethod
        def matches(cls, unet_config, state_dict=None, **kwargs):  # the 1K head only
            return (super().matches(unet_config, state_dict, **kwargs)
                    and (state_dict is None or "local_decoder.enc0.0.weight" not in state_dict))

        def get_model(self, state_dict, prefix="", device=None):
            self.unet_config.update(core.unet_config_for(infer_config(strip_prefix(state_dict))))
            return CoreL2PModel(self, device=device)

        def process_unet_state_dict(self, state_dict):
            return to_comfy_layout(state_dict)

    models = list(comfy.supported_models.models)
    monkeypatch.setattr(comfy.supported_models, "models", [ZImageL2PCore, *models])
    core.register_with_stock_loader()
    return CoreL2PModel


def test_defers_to_core_l2p_and_keeps_its_own_for_the_rest(core, core_with_l2p, tiny_sd):
    import comfy.supported_models

    order = [c.__name__ for c in comfy.supported_models.models]
    assert order.index("ZImageL2PCore") < order.index("ZImageL2P") < order.index("ZImage")
    one_k = core.load_l2p_state_dict(official_to_comfy(dict(tiny_sd)), dtype=torch.float32)
    assert type(one_k.model) is core_with_l2p
    four_k = core.load_l2p_state_dict(official_state_dict(*tiny_l2p(seed=2, patch_size=64)), dtype=torch.float32)
    assert isinstance(four_k.model, core.L2PModel)
    assert core.is_l2p(one_k) and core.is_l2p(four_k) and not core.is_lumina2(one_k)


def test_extras_work_on_core_l2p_model(core, core_with_l2p, tiny_sd):
    pack = import_pack().__name__
    sampling = importlib.import_module(pack + ".nodes.sampling")
    convert = importlib.import_module(pack + ".nodes.convert")
    patcher = core.load_l2p_state_dict(official_to_comfy(dict(tiny_sd)), dtype=torch.float32)
    assert type(patcher.model) is core_with_l2p
    shifted = sampling.L2PNoiseShift.execute(patcher, mode="manual", shift=5.0).args[0]
    assert shifted.get_model_object("model_sampling").shift == pytest.approx(5.0)
    tiled = sampling.L2PHeadTiling.execute(patcher, mode="fixed", tile_size=16).args[0]
    x, t, cap, n = inputs(h=64, w=64)
    with torch.no_grad():
        whole = patcher.model.diffusion_model(x, t, cap, n, transformer_options={core.HEAD_TILE: 0})
        parts = patcher.model.diffusion_model(x, t, cap, n, **tiled.model_options)
    assert torch.allclose(whole, parts, atol=1e-5)
    with pytest.raises(ValueError, match="already an L2P pixel model"):
        convert.L2PConvert.execute(patcher)
    saved = core.patched_state_dict(patcher)
    assert "local_decoder.enc1.0.weight" in saved
