"""Strict loading (issue 16.1): every path a model enters checks the file's tensors against the architecture its
shapes describe before anything is built. A missing or unexpected tensor, a wrong shape or a non-float dtype is
one line naming the first offending tensor, the count (missing ones grouped by block) and what to do.

- ``expected_tensors`` (a pure function of the configuration) is exactly what ComfyUI's NextDiT (with the head)
  and diffusers' Z-Image build, for every head, the narrow head, Lumina 2 and the latent sources;
- the checks accept every valid kind of file (both layouts, prefix, fp8 / bf16 storage, ComfyUI's scaled-fp8
  companions) and refuse the broken ones with the exact line, on the format functions, the pack's loader, the
  stock UNETLoader path, the source loader, the trainer and the converter;
- core's network is never left with a tensor the file did not fill (``check_network``);
- through a real server, L2PModelLoader and UNETLoader give that line as the node's error and the server
  renders the next prompt.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from PIL import Image

from harness.graph import tiny_demo_prompt
from harness.inprocess import import_pack
from harness.server import ComfyServer
from l2p.format.keys import L2PFormatError
from l2p.format.layouts import (
    COMFY,
    OFFICIAL,
    expected_tensors,
    infer_config,
    official_to_comfy,
    source_config,
    to_comfy_with_config,
)
from l2p.format.tensor_io import DictSource, save_safetensors_atomic
from l2p.head import build_head
from l2p.pixel_dit import official_state_dict
from l2p.tiny import DEMO_L2P_FILE, official_trunk, tiny_l2p, tiny_latent_zimage, write_demo_models

PREFIX = "model.diffusion_model."
TINY3 = "a z-image L2P model (dim 256, 3 layers, 1k head)"
REDOWNLOAD = "download or export it again"


def meta_l2p(patch_size: int = 16, width_div: int = 1, n_layers: int = 2) -> dict[str, torch.Tensor]:
    """An official-layout L2P state dict of meta tensors (shapes and dtypes only), diffusers' trunk + the head."""
    trunk = official_trunk(256, n_layers, 1, 4, 64, patch_size=patch_size, device="meta")
    with torch.device("meta"):
        head = build_head({16: "1k", 64: "4k", 128: "8k", 160: "10k"}[patch_size], 256, width_div=width_div)
    return official_state_dict(trunk, head)


def comfy_prefixed(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {PREFIX + k: v for k, v in official_to_comfy(sd).items()}


def refused(sd) -> str:
    """The line ``infer_config`` and ``to_comfy_with_config`` both refuse ``sd`` with (they must agree)."""
    with pytest.raises(L2PFormatError) as a:
        infer_config(sd)
    with pytest.raises(L2PFormatError) as b:
        to_comfy_with_config(sd)
    assert str(a.value) == str(b.value)
    assert "\n" not in str(a.value)
    return str(a.value)


def without(sd: dict, *names: str) -> dict:
    """``sd`` less the tensors whose names start with any of ``names``."""
    return {k: v for k, v in sd.items() if not k.startswith(names)}


# The five broken files of the issue, made from a valid 3-layer official-layout state dict, and their lines.
def drop_refiner_tensor(sd):
    return without(sd, "noise_refiner.0.attention.to_k.weight")


def drop_layer_1(sd):
    return without(sd, "layers.1.")


def add_unexpected(sd):
    return {**sd, "layers.0.attention.gate.weight": torch.zeros(4)}


def wrong_head_shape(sd):
    return {**sd, "local_decoder.out_conv.weight": torch.zeros(3, 32, 1, 1)}


def int8_head(sd):
    return {**sd, "local_decoder.enc1.0.weight": sd["local_decoder.enc1.0.weight"].to(torch.int8)}


def drop_out_conv(sd):  # the one head tensor the stock loader once keyed L2P detection on
    return without(sd, "local_decoder.out_conv.weight")


CASES = {
    "out_conv": (drop_out_conv, "incomplete file: 1 tensor of local_decoder missing (first: "
                 f"local_decoder.out_conv.weight); {REDOWNLOAD}"),
    "refiner tensor": (drop_refiner_tensor, "incomplete file: 1 tensor of noise_refiner.0 missing (first: "
                       f"noise_refiner.0.attention.to_k.weight); {REDOWNLOAD}"),
    "layers.1": (drop_layer_1, f"incomplete file: 15 tensors of layers.1 missing (first: "
                 f"layers.1.attention.to_q.weight); {REDOWNLOAD}"),
    "unexpected": (add_unexpected, f"unexpected tensors: 1 tensor of layers.0 not part of {TINY3} (first: "
                   f"layers.0.attention.gate.weight); the file mixes models or was edited: {REDOWNLOAD}"),
    "head shape": (wrong_head_shape, "wrong shape: local_decoder.out_conv.weight is [3, 32, 1, 1], expected "
                   f"[3, 64, 1, 1] for {TINY3} (1 tensor of local_decoder off); the file mixes two models or is "
                   f"corrupt: {REDOWNLOAD}"),
    "int8 head": (int8_head, "not a float checkpoint: local_decoder.enc1.0.weight is stored as int8 (1 tensor of "
                  "local_decoder not floating point); the pack loads fp32, bf16, fp16 and fp8 weights, not "
                  "integer-quantised ones: use the original float checkpoint"),
}


@pytest.fixture(scope="module")
def tiny3() -> dict[str, torch.Tensor]:
    """A valid tiny L2P model with 3 main blocks (layers.1 is a middle block), real weights, official layout."""
    return official_state_dict(*tiny_l2p(seed=4, n_layers=3))


# ------------------------------------------------------------------------------------------- format: unit


@pytest.mark.parametrize("case", list(CASES))
def test_each_broken_file_is_one_line_naming_the_tensor(tiny3, case):
    make, line = CASES[case]
    assert refused(make(tiny3)) == line


def test_comfy_layout_with_prefix_names_its_own_tensors(tiny3):
    packed = comfy_prefixed(tiny3)
    assert refused(without(packed, PREFIX + "context_refiner.0.attention.qkv.weight")) == (
        f"incomplete file: 1 tensor of context_refiner.0 missing (first: context_refiner.0.attention.qkv.weight); "
        f"{REDOWNLOAD}")
    assert refused(without(packed, PREFIX + "layers.1.")) == (
        f"incomplete file: 13 tensors of layers.1 missing (first: layers.1.attention.qkv.weight); {REDOWNLOAD}")


def test_missing_tensors_are_grouped_by_block(tiny3):
    broken = without(tiny3, "layers.1.", "context_refiner.0.ffn_norm2.weight", "x_pad_token")
    assert refused(broken) == (
        "incomplete file: 17 tensors missing: 1 of context_refiner.0, 15 of layers.1, 1 of x_pad_token (first: "
        f"context_refiner.0.ffn_norm2.weight); {REDOWNLOAD}")
    no_norms = {k: v for k, v in tiny3.items() if not k.endswith("attention.norm_q.weight")}
    assert refused(no_norms) == (
        "incomplete file: 5 tensors missing: 1 of noise_refiner.0, 1 of context_refiner.0, 1 of layers.0, "
        f"1 of layers.1, 1 more block (first: noise_refiner.0.attention.norm_q.weight); {REDOWNLOAD}")


def test_a_missing_width_tensor_is_named_not_a_key_error(tiny3):
    """The tensors the widths are read from can be the missing ones: the widths come from any other block."""
    for name, group in [("layers.0.feed_forward.w1.weight", "layers.0"), ("layers.0.attention.norm_q.weight",
                         "layers.0"), ("layers.0.attention.to_k.weight", "layers.0"),
                        ("t_embedder.mlp.2.weight", "t_embedder"), ("cap_embedder.1.weight", "cap_embedder")]:
        assert refused(without(tiny3, name)) == (
            f"incomplete file: 1 tensor of {group} missing (first: {name}); {REDOWNLOAD}")


def test_a_released_width_missing_its_last_block_is_incomplete_not_shallower():
    """Z-Image's released width (3840, caption 2560) has 30 main blocks and 2 refiners: a file without layers.29
    would otherwise read as a complete 29-block model and draw garbage."""
    full = official_state_dict(official_trunk(3840, 30, 2, 30, 2560, device="meta"),
                               build_head("1k", 3840, device="meta"))
    assert infer_config(full).n_layers == 30
    assert refused(without(full, "layers.29.")) == (
        f"incomplete file: 15 tensors of layers.29 missing (first: layers.29.attention.to_q.weight); {REDOWNLOAD}")
    assert refused(without(full, "noise_refiner.1.")).startswith("incomplete file: 15 tensors of noise_refiner.1 ")
    custom = official_state_dict(official_trunk(3840, 4, 1, 30, 2048, device="meta"),
                                 build_head("1k", 3840, device="meta"))
    assert infer_config(custom).n_layers == 4  # another caption width: not the release, any depth


@pytest.mark.parametrize("patch,name", [(64, "enc0.0.weight"), (128, "enc_8k.0.weight"), (160, "enc_10k_a.0.bias"),
                                        (16, "enc1.0.weight"), (64, "enc1.0.bias")])
def test_a_head_missing_its_distinctive_tensor_is_still_that_head(patch, name):
    """The head's kind is read from its whole key set, not from one tensor that may be the missing one."""
    assert refused(without(meta_l2p(patch), "local_decoder." + name)) == (
        f"incomplete file: 1 tensor of local_decoder missing (first: local_decoder.{name}); {REDOWNLOAD}")


def test_a_missing_lumina2_marker_does_not_change_the_architecture():
    from l2p.arch import LUMINA2, detect_arch

    keys = {"cap_embedder.1.weight", "layers.1.adaLN_modulation.1.weight", "noise_refiner.0.adaLN_modulation.1.bias"}
    assert detect_arch(keys) is LUMINA2
    assert detect_arch(keys - {"layers.1.adaLN_modulation.1.weight", "noise_refiner.0.adaLN_modulation.1.bias"}) \
        is not LUMINA2


@pytest.mark.parametrize("patch,width_div", [(16, 1), (64, 1), (128, 1), (160, 1), (16, 4)])
def test_every_valid_head_layout_and_storage_dtype_is_accepted(patch, width_div):
    sd = meta_l2p(patch, width_div)
    fp8 = {k: v.to(torch.float8_e4m3fn) for k, v in sd.items()}
    mixed = {k: v.to(torch.bfloat16) if i % 2 else v for i, (k, v) in enumerate(sd.items())}
    packed = comfy_prefixed(sd)
    for variant in (sd, fp8, mixed, packed, official_to_comfy(fp8)):
        cfg = infer_config(variant)
        assert (cfg.patch_size, cfg.head_width_div) == (patch, width_div)
    comfy, cfg = to_comfy_with_config(packed)
    assert {k: tuple(v.shape) for k, v in comfy.items()} == expected_tensors(cfg, COMFY)


def test_comfyui_quantisation_companions_are_accepted_in_its_layout():
    packed = comfy_prefixed(meta_l2p())
    scaled = {**packed, PREFIX + "scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn),
              PREFIX + "layers.0.attention.qkv.scale_weight": torch.ones(1),
              PREFIX + "layers.0.attention.qkv.scale_input": torch.ones(1)}
    infer_config(scaled)
    stray = {**packed, PREFIX + "layers.0.attention.qkvx.scale_weight": torch.ones(1)}
    assert refused(stray).startswith("unexpected tensors: 1 tensor of layers.0 not part of")


def test_latent_sources_are_checked_the_same_way():
    latent = tiny_latent_zimage(seed=0)
    arch, cfg = source_config(latent)
    assert arch.name == "z-image" and cfg.head_variant is None
    assert {k: tuple(v.shape) for k, v in latent.items()} == expected_tensors(cfg, OFFICIAL)
    source_config({**official_to_comfy(latent), "norm_final.weight": torch.ones(256)})  # ComfyUI 0.3.75's
    broken = without(latent, "all_final_layer.2-1.linear.bias")
    with pytest.raises(L2PFormatError) as e:
        source_config(broken)
    assert str(e.value) == ("incomplete file: 1 tensor of all_final_layer.2-1 missing (first: "
                            f"all_final_layer.2-1.linear.bias); {REDOWNLOAD}")


# ------------------------------------------------------------ the pure function is what the real modules build


@pytest.fixture(scope="module")
def core():
    return importlib.import_module(import_pack().__name__ + ".nodes.comfy_core")


@pytest.fixture(scope="module")
def pack_keys():
    return importlib.import_module(import_pack().__name__ + ".l2p.format.keys")


def shapes(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.startswith(skip)}


@pytest.mark.parametrize("patch,width_div", [(16, 1), (64, 1), (128, 1), (160, 1), (16, 4)])
def test_expected_tensors_are_what_comfyui_and_diffusers_build(core, patch, width_div):
    import comfy.ops

    sd = meta_l2p(patch, width_div)
    cfg = infer_config(sd)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected_tensors(cfg, OFFICIAL)  # diffusers + head
    kwargs = {k: v for k, v in core.unet_config_for(cfg).items() if k != "image_model"}
    with torch.device("meta"):
        dit = core.NextDiTL2P(**kwargs, operations=comfy.ops.disable_weight_init)
    assert shapes(dit) == expected_tensors(cfg, COMFY)


def test_expected_tensors_of_lumina2_and_latent_sources_match_comfyui(core):
    import dataclasses

    import comfy.ops
    from comfy.ldm.lumina.model import NextDiT

    with torch.device("meta"):
        lumina = NextDiT(patch_size=2, in_channels=16, dim=192, n_layers=2, n_refiner_layers=1, n_heads=2,
                         n_kv_heads=1, qk_norm=True, cap_feat_dim=64, axes_dims=[32, 32, 32],
                         axes_lens=[300, 512, 512], operations=comfy.ops.disable_weight_init)
    arch, cfg = source_config(lumina.state_dict())
    assert arch.name == "lumina2" and cfg.kv_heads == 1
    assert shapes(lumina, ("norm_final.",)) == expected_tensors(cfg, COMFY)
    kwargs = {k: v for k, v in core.unet_config_for(cfg).items() if k != "image_model"}
    with torch.device("meta"):
        source = core.NextDiTFromShapes(**kwargs, operations=comfy.ops.disable_weight_init)
    assert shapes(source, ("norm_final.",)) == expected_tensors(cfg, COMFY)
    l2p_cfg = dataclasses.replace(cfg, head_variant="1k", in_channels=3, patch_size=16)
    kwargs = {k: v for k, v in core.unet_config_for(l2p_cfg).items() if k != "image_model"}
    with torch.device("meta"):
        pixel = core.NextDiTL2P(**kwargs, operations=comfy.ops.disable_weight_init)
    assert shapes(pixel) == expected_tensors(l2p_cfg, COMFY)
    assert infer_config(pixel.state_dict()) == l2p_cfg  # a Lumina2-derived L2P file is accepted


# ------------------------------------------------------------------------------ ComfyUI paths, in process


@pytest.fixture
def built(monkeypatch) -> list[str]:
    """Names of the ComfyUI model classes constructed (BaseModel.__init__ builds the network)."""
    import comfy.model_base

    seen: list[str] = []
    real = comfy.model_base.BaseModel.__init__

    def init(self, *args, **kwargs):
        seen.append(type(self).__name__)
        real(self, *args, **kwargs)

    monkeypatch.setattr(comfy.model_base.BaseModel, "__init__", init)
    return seen


@pytest.mark.parametrize("case", list(CASES))
def test_pack_loader_refuses_before_building(core, pack_keys, tiny3, built, case):
    make, line = CASES[case]
    with pytest.raises(pack_keys.L2PFormatError) as e:
        core.load_l2p_state_dict(make(tiny3), dtype=torch.float32)
    assert str(e.value) == line and built == []


@pytest.mark.parametrize("case", list(CASES))
def test_stock_loader_path_refuses_before_building(core, pack_keys, tiny3, built, case):
    """core's own load_diffusion_model_state_dict (what UNETLoader runs) -> the pack's get_model."""
    import comfy.sd

    core.register_with_stock_loader()
    make, line = CASES[case]
    broken = make(tiny3)
    if case in ("head shape", "int8 head"):  # both layouts reach get_model; these two also in ComfyUI's
        broken = comfy_prefixed(broken)
    with pytest.raises(pack_keys.L2PFormatError) as e:
        comfy.sd.load_diffusion_model_state_dict(broken)
    assert str(e.value) == line and built == []
    for valid in (comfy_prefixed(tiny3), dict(tiny3)):  # the valid file loads, in both layouts
        assert core.is_l2p(comfy.sd.load_diffusion_model_state_dict(valid))
    assert built == ["L2PModel", "L2PModel"]


def test_core_conversion_of_official_names_is_checked_first(core, pack_keys, tiny3):
    """0.33+ converts official names itself (q/k/v fused into torch.empty): an L2P file is checked before."""
    import comfy.model_detection

    core.register_with_stock_loader()
    with pytest.raises(pack_keys.L2PFormatError) as e:
        comfy.model_detection.convert_diffusers_mmdit(drop_refiner_tensor(tiny3), "")
    assert str(e.value) == CASES["refiner tensor"][1]


def test_stock_loader_never_fuses_a_missing_key_part(core, pack_keys, tiny3, built):
    """An official file missing one of q/k/v: 0.33+ would fuse the rest around an uninitialised block."""
    import comfy.sd

    core.register_with_stock_loader()
    with pytest.raises(pack_keys.L2PFormatError) as e:
        comfy.sd.load_diffusion_model_state_dict(without(tiny3, "layers.2.attention.to_k.weight"))
    assert str(e.value) == ("incomplete file: 1 tensor of layers.2 missing (first: layers.2.attention.to_k.weight); "
                            f"{REDOWNLOAD}") and built == []


def test_valid_file_loads_every_tensor_from_the_file(core, tiny3):
    model = core.load_l2p_state_dict(dict(tiny3), dtype=torch.float32)
    got = model.model.diffusion_model.state_dict()
    want = official_to_comfy(tiny3)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_a_core_network_with_a_tensor_the_file_lacks_is_refused(core, tiny3, monkeypatch):
    """check_network: if core's NextDiT grew a parameter, loading stops instead of leaving it uninitialised."""
    import comfy.sd

    real = core.NextDiTL2P.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.register_parameter("gate", torch.nn.Parameter(torch.empty(self.dim)))

    monkeypatch.setattr(core.NextDiTL2P, "__init__", init)
    for load in (lambda: core.load_l2p_state_dict(dict(tiny3), dtype=torch.float32),
                 lambda: comfy.sd.load_diffusion_model_state_dict(comfy_prefixed(tiny3))):
        with pytest.raises(core.CoreChanged) as e:
            load()
        message = str(e.value)
        assert "has 1 tensors a complete L2P file of its architecture does not carry (first: gate)" in message
        assert "\n" not in message


def test_source_loader_refuses_incomplete_and_integer_sources(core, pack_keys):
    latent = tiny_latent_zimage(seed=2)
    with pytest.raises(pack_keys.L2PFormatError) as e:
        core.load_source_state_dict(drop_refiner_tensor(latent))
    assert str(e.value) == CASES["refiner tensor"][1]
    packed = official_to_comfy(latent)
    packed["final_layer.linear.weight"] = packed["final_layer.linear.weight"].to(torch.int8)
    with pytest.raises(pack_keys.L2PFormatError, match=r"^not a float checkpoint: final_layer\.linear\.weight is "
                                                       r"stored as int8 \(1 tensor of final_layer not floating"):
        core.load_source_state_dict(packed)
    model, arch, cfg = core.load_source_state_dict(latent, dtype=torch.float32)
    assert arch.name == "z-image" and cfg.n_layers == 2


def test_source_loader_node_names_the_file(tmp_path, monkeypatch):
    import_pack()
    import folder_paths

    (tmp_path / "diffusion_models").mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusion_models",
                        ([str(tmp_path / "diffusion_models")], {".safetensors"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    save_safetensors_atomic(drop_refiner_tensor(tiny_latent_zimage(seed=2)),
                            str(tmp_path / "diffusion_models" / "z-broken.safetensors"))
    convert = importlib.import_module(import_pack().__name__ + ".nodes.convert")
    with pytest.raises(ValueError) as e:
        convert.L2PSourceModelLoader.execute("z-broken.safetensors", "fp32")
    assert str(e.value) == f"z-broken.safetensors: {CASES['refiner tensor'][1]}"


# --------------------------------------------------------------------------------------- trainer, converter


@pytest.mark.parametrize("case", ["refiner tensor", "layers.1", "int8 head"])
def test_trainer_refuses_with_the_same_line(tmp_path, tiny3, case):
    from training.model import load_model

    make, line = CASES[case]
    path = tmp_path / "broken.safetensors"
    save_safetensors_atomic(make(tiny3), str(path))
    with pytest.raises(L2PFormatError) as e:
        load_model(str(path))
    assert str(e.value) == f"broken.safetensors: {line}"


def test_trainer_loads_a_valid_comfy_file(tmp_path, tiny3):
    from training.model import load_model

    path = tmp_path / "packed.safetensors"
    save_safetensors_atomic(comfy_prefixed(tiny3), str(path))
    loaded = load_model(str(path))
    assert loaded.config.n_layers == 3 and loaded.official.keys() == tiny3.keys()


def test_converter_refuses_with_the_same_line():
    from l2p.convert import latent_to_l2p, plan_conversion

    latent = tiny_latent_zimage(seed=1)
    with pytest.raises(L2PFormatError) as e:
        plan_conversion(DictSource(drop_refiner_tensor(latent)), source_hash="x")
    assert str(e.value) == CASES["refiner tensor"][1]
    extra = {**latent, "layers.0.attention.gate.weight": torch.zeros(4)}
    with pytest.raises(L2PFormatError, match=r"^unexpected tensors: 1 tensor of layers\.0 not part of a z-image "
                                             r"latent model \(dim 256, 2 layers, latent final layer\)"):
        plan_conversion(DictSource(extra), source_hash="x")
    assert infer_config(latent_to_l2p(latent)).patch_size == 16
    trunk_only = without(latent, "all_final_layer.")  # dropped by the conversion: it may be absent as a whole
    assert infer_config(latent_to_l2p(trunk_only)).patch_size == 16
    with pytest.raises(L2PFormatError, match=r"^incomplete file: 1 tensor of all_final_layer\.2-1 missing"):
        plan_conversion(DictSource(without(latent, "all_final_layer.2-1.linear.bias")), source_hash="x")


# ------------------------------------------------------------------------------------------- real server


def demo_prompt(**changes) -> dict:
    """The shipped tiny-demo API workflow, small and short; ``changes``: {node: {input: value} or a whole node}."""
    return tiny_demo_prompt(changes)


@pytest.fixture(scope="module")
def server(comfy_server: ComfyServer) -> ComfyServer:
    write_demo_models(str(comfy_server.models_dir))
    return comfy_server


def test_server_loaders_give_the_line_and_keep_rendering(server):
    from safetensors.torch import load_file

    demo = load_file(server.models_dir / "l2p" / DEMO_L2P_FILE)
    tiny = "a z-image L2P model (dim 256, 2 layers, 1k head)"
    ours = {"strict-no-refiner-tensor.safetensors": (drop_refiner_tensor(demo), CASES["refiner tensor"][1]),
            "strict-int8-head.safetensors": (int8_head(demo), CASES["int8 head"][1]),
            "strict-head-shape.safetensors": (wrong_head_shape(demo), CASES["head shape"][1].replace(TINY3, tiny))}
    stock = {"strict-packed-no-qkv.safetensors": (
        without(comfy_prefixed(demo), PREFIX + "context_refiner.0.attention.qkv.weight"),
        f"incomplete file: 1 tensor of context_refiner.0 missing (first: context_refiner.0.attention.qkv.weight); "
        f"{REDOWNLOAD}"),
        "strict-no-out-conv.safetensors": (drop_out_conv(demo), CASES["out_conv"][1]),
        "strict-packed-extra.safetensors": (
        {**comfy_prefixed(demo), PREFIX + "layers.0.attention.gate.weight": torch.zeros(4)},
        CASES["unexpected"][1].replace(TINY3, tiny))}
    for name, (sd, _) in ours.items():
        save_safetensors_atomic(sd, str(server.models_dir / "l2p" / name))
    for name, (sd, _) in stock.items():
        save_safetensors_atomic(sd, str(server.models_dir / "diffusion_models" / name))

    runs = [(demo_prompt(**{"4": {"ckpt_name": n}}), "L2PModelLoader", f"{n}: {line}")
            for n, (_, line) in ours.items()]
    for name, (_, line) in stock.items():
        prompt = demo_prompt()
        prompt["4"] = {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}}
        runs.append((prompt, "UNETLoader", line))
    for prompt, node, line in runs:
        result = server.run(prompt, timeout=120)
        assert not result.ok and result.error["node_type"] == node, result.describe()
        assert result.error["exception_message"].strip() == line
        assert server.running

    result = server.run(demo_prompt(**{"7": {"seed": 4321}}), timeout=300)
    assert result.ok, result.describe()
    (path,) = server.output_images(result)
    image = np.asarray(Image.open(path))
    assert image.shape == (64, 96, 3) and image.std() > 0
