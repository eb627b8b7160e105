"""LoRA on L2P models with ComfyUI's stock loaders (issue 19.1): every file format there is lands where it should.

For each format (peft / diffusers names under ``diffusion_model.`` (ai-toolkit, this pack) or ``transformer.``,
kohya ``lora_unet_``, LyCORIS, ComfyUI's own fused names) a LoRA on trunk weights (q, k, v as slices of
ComfyUI's fused qkv, a feed-forward weight, the pixel embedder) and on the Detailer Head (convolutions,
LoCon-style) is applied by core's ``load_lora_for_models`` (what LoraLoader and LoraLoaderModelOnly run); the
patched model's output equals the output of the model whose weights were merged by hand (fp32). A LoRA with
tensors that match nothing is reported in one log line. Through a real server: LoraLoaderModelOnly and
LoraLoader on the demo workflow.
"""

from __future__ import annotations

import importlib
import logging

import numpy as np
import pytest
import torch

from harness.inprocess import import_pack
from l2p.format.layouts import official_to_comfy
from l2p.pixel_dit import official_state_dict
from l2p.tiny import tiny_l2p
from tests.test_trainer import LAUNCH, make_dataset

RANK, ALPHA, STRENGTH = 4, 8.0, 0.7
SCALE = ALPHA / RANK
# official names of the weights the test LoRA adapts: q, k, v of two blocks, a feed-forward weight, the pixel
# embedder, a refiner's attention output and three head convolutions (3x3 and 1x1)
TARGETS = ["layers.0.attention.to_q", "layers.1.attention.to_k", "layers.1.attention.to_v",
           "layers.0.feed_forward.w2", "all_x_embedder.16-1", "noise_refiner.0.attention.to_out.0",
           "local_decoder.enc1.0", "local_decoder.dec2.0", "local_decoder.out_conv"]
COMFY_TARGETS = ["layers.0.attention.qkv", "layers.0.feed_forward.w2", "x_embedder", "local_decoder.enc1.0"]


@pytest.fixture(scope="module")
def core():
    return importlib.import_module(import_pack().__name__ + ".nodes.comfy_core")


@pytest.fixture(scope="module")
def base() -> dict[str, torch.Tensor]:
    return official_state_dict(*tiny_l2p(seed=3))


def factors(weight: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(down, up) of a rank-RANK update of ``weight`` (a linear or conv weight: conv down keeps the kernel)."""
    gen = torch.Generator().manual_seed(seed)
    out, inp = weight.shape[0], weight.shape[1]
    down = torch.randn(RANK, inp, *weight.shape[2:], generator=gen) * 0.1
    up = torch.randn(out, RANK, *([1] * (weight.ndim - 2)), generator=gen) * 0.1
    return down, up


def delta(weight: torch.Tensor, down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * SCALE * STRENGTH


def lora_file(sd: dict[str, torch.Tensor], targets: list[str], name) -> dict[str, torch.Tensor]:
    """A LoRA over ``targets`` (names in ``sd``), each written under ``name(target, part)``."""
    out = {}
    for i, t in enumerate(targets):
        down, up = factors(sd[t + ".weight"], i)
        a, b, alpha = name(t)
        out[a], out[b], out[alpha] = down, up, torch.tensor(ALPHA)
    return out


FORMATS = {
    "peft diffusion_model.": lambda t: (f"diffusion_model.{t}.lora_A.weight", f"diffusion_model.{t}.lora_B.weight",
                                        f"diffusion_model.{t}.alpha"),
    "peft transformer.": lambda t: (f"transformer.{t}.lora_A.weight", f"transformer.{t}.lora_B.weight",
                                    f"transformer.{t}.alpha"),
    "kohya lora_unet_": lambda t: (f"lora_unet_{t.replace('.', '_')}.lora_down.weight",
                                   f"lora_unet_{t.replace('.', '_')}.lora_up.weight",
                                   f"lora_unet_{t.replace('.', '_')}.alpha"),
    "lycoris": lambda t: (f"lycoris_{t.replace('.', '_')}.lora_down.weight",
                          f"lycoris_{t.replace('.', '_')}.lora_up.weight", f"lycoris_{t.replace('.', '_')}.alpha"),
}


def merged_by_hand(sd: dict[str, torch.Tensor], targets: list[str]) -> dict[str, torch.Tensor]:
    out = dict(sd)
    for i, t in enumerate(targets):
        w = sd[t + ".weight"]
        out[t + ".weight"] = w + delta(w, *factors(w, i))
    return out


def output(core, sd: dict[str, torch.Tensor], lora: dict[str, torch.Tensor] | None = None,
           strength: float = STRENGTH) -> torch.Tensor:
    import comfy.model_management
    import comfy.sd

    patcher = core.load_l2p_state_dict(dict(sd), dtype=torch.float32)
    if lora is not None:
        patcher, _ = comfy.sd.load_lora_for_models(patcher, None, lora, strength, 0)
    comfy.model_management.load_models_gpu([patcher])
    gen = torch.Generator().manual_seed(0)
    x, cap = torch.randn(1, 3, 32, 48, generator=gen), torch.randn(1, 6, 64, generator=gen)
    with torch.no_grad():
        out = patcher.model.apply_model(x, torch.tensor([0.6]), c_crossattn=cap, num_tokens=6)
    comfy.model_management.unload_all_models()
    return out


@pytest.fixture(scope="module")
def merged_output(core, base) -> torch.Tensor:
    return output(core, merged_by_hand(base, TARGETS))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_equals_the_hand_merged_model(core, base, merged_output, fmt):
    lora = lora_file(base, TARGETS, FORMATS[fmt])
    plain = output(core, base)
    got = output(core, base, lora)
    assert (got - plain).abs().max() > 1e-3  # the LoRA does something
    assert (got - merged_output).abs().max() < 1e-5, (got - merged_output).abs().max()


def test_comfyui_names_on_the_fused_qkv_equal_the_hand_merged_model(core, base):
    comfy_sd = official_to_comfy(base)
    lora = lora_file(comfy_sd, COMFY_TARGETS, FORMATS["peft diffusion_model."])
    by_hand = dict(comfy_sd)
    for i, t in enumerate(COMFY_TARGETS):
        w = comfy_sd[t + ".weight"]
        by_hand[t + ".weight"] = w + delta(w, *factors(w, i))
    assert (output(core, comfy_sd, lora) - output(core, by_hand)).abs().max() < 1e-5


def test_tensors_that_match_nothing_are_reported_in_one_line(core, base, caplog):
    lora = lora_file(base, TARGETS[:2], FORMATS["peft diffusion_model."])
    lora["diffusion_model.layers.99.attention.to_q.lora_A.weight"] = torch.zeros(RANK, 256)
    lora["diffusion_model.layers.99.attention.to_q.lora_B.weight"] = torch.zeros(256, RANK)
    with caplog.at_level(logging.WARNING):
        output(core, base, lora)
    lines = [r.getMessage() for r in caplog.records if "ComfyUI-L2P" in r.getMessage()]
    assert lines == ["ComfyUI-L2P: 2 of 8 LoRA tensors match no weight of this L2P model and are not applied "
                     "(first: diffusion_model.layers.99.attention.to_q.lora_A.weight, "
                     "diffusion_model.layers.99.attention.to_q.lora_B.weight)"], lines


# ------------------------------------------------------------------------------------------- real server

LORA_FILE = "l2p-test-lora.safetensors"
MERGED_FILE = "l2p-test-merged.safetensors"


@pytest.fixture(scope="module")
def server(comfy_server):
    from safetensors.torch import load_file

    from l2p.format.tensor_io import save_safetensors_atomic
    from l2p.tiny import DEMO_L2P_FILE, write_demo_models

    write_demo_models(str(comfy_server.models_dir))
    demo = load_file(str(comfy_server.models_dir / "l2p" / DEMO_L2P_FILE))
    (comfy_server.models_dir / "loras").mkdir(exist_ok=True)
    save_safetensors_atomic(lora_file(demo, TARGETS, FORMATS["peft diffusion_model."]),
                            str(comfy_server.models_dir / "loras" / LORA_FILE))
    save_safetensors_atomic(merged_by_hand(demo, TARGETS), str(comfy_server.models_dir / "l2p" / MERGED_FILE))
    return comfy_server


def image(server, prompt) -> np.ndarray:
    from PIL import Image

    result = server.run(prompt, timeout=300)
    assert result.ok, result.describe()
    (path,) = server.output_images(result)
    return np.asarray(Image.open(path)).astype(int)


@pytest.mark.parametrize("loader", ["LoraLoaderModelOnly", "LoraLoader"])
def test_stock_lora_loaders_render_what_the_merged_model_renders(server, loader):
    from harness.graph import tiny_demo_prompt

    seed = {"7": {"seed": 31}}
    plain = image(server, tiny_demo_prompt(seed))
    merged = image(server, tiny_demo_prompt({**seed, "4": {"ckpt_name": MERGED_FILE}}))
    prompt = tiny_demo_prompt(seed)
    inputs = {"model": ["4", 0], "lora_name": LORA_FILE, "strength_model": STRENGTH}
    if loader == "LoraLoader":
        inputs.update(clip=["1", 0], strength_clip=1.0)
        prompt["2"]["inputs"]["clip"] = prompt["3"]["inputs"]["clip"] = ["11", 1]
    prompt["11"] = {"class_type": loader, "inputs": inputs}
    prompt["5"]["inputs"]["model"] = ["11", 0]
    with_lora = image(server, prompt)
    assert abs(with_lora - plain).mean() > 1  # the LoRA changes the picture
    diff = abs(with_lora - merged)
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())  # 8-bit rounding at most


# ---------------------------------------------------------------------------- a latent LoRA on an L2P model

LATENT_TARGETS = ["layers.0.attention.to_q", "layers.1.feed_forward.w2", "noise_refiner.0.attention.to_out.0",
                  "context_refiner.0.feed_forward.w1"]
LATENT_ONLY = ["all_final_layer.2-1.linear", "all_x_embedder.2-1"]


def latent_lora() -> dict[str, torch.Tensor]:
    """A LoRA of the tiny latent Z-Image (ai-toolkit names): trunk weights, and its latent-only layers."""
    from l2p.tiny import tiny_latent_zimage

    latent = tiny_latent_zimage(seed=5)
    return lora_file(latent, LATENT_TARGETS + LATENT_ONLY, FORMATS["peft diffusion_model."])


def test_the_policy_decides_what_a_latent_lora_keeps(base):
    from l2p.format.lora import lora_key_map
    from l2p.lora_transfer import select

    comfy = official_to_comfy(base)
    key_map = lora_key_map({k: tuple(v.shape) for k, v in comfy.items()}, 16)
    paper = select(latent_lora().keys(), key_map, "paper", 2)
    # the paper policy trains the noise refiner (it reads the new pixel embedder's tokens): only the context
    # refiner is still the source's own weight
    assert paper.kept_weights == {"context_refiner.0.feed_forward.w1.weight"}
    assert {why: len(v) for why, v in paper.dropped.items()} == {"trained by the paper policy": 9,
                                                                  "latent-only: no L2P counterpart": 6}
    assert paper.report("paper") == ("latent LoRA on an L2P model (paper policy): kept 3 LoRA tensors on "
                                     "context_refiner.0; dropped 6 (latent-only: no L2P counterpart); dropped 9 "
                                     "(trained by the paper policy)")
    official = select(latent_lora().keys(), key_map, "official", 2)
    assert not official.kept  # with 2 blocks the official policy trains every block and the refiners
    everything = select(latent_lora().keys(), key_map, "paper", 2, keep="all")
    assert len(everything.kept) == 12 and list(everything.dropped) == ["latent-only: no L2P counterpart"]


@pytest.mark.parametrize("blocks,merged_targets", [("frozen blocks only", LATENT_TARGETS[3:]),
                                                   ("every trunk block", LATENT_TARGETS)])
def test_l2p_lora_from_latent_through_a_server(server, blocks, merged_targets):
    from safetensors.torch import load_file

    from harness.graph import tiny_demo_prompt
    from l2p.format.tensor_io import save_safetensors_atomic
    from l2p.tiny import DEMO_L2P_FILE

    lora = latent_lora()
    save_safetensors_atomic(lora, str(server.models_dir / "loras" / "latent-zimage-lora.safetensors"))
    demo = load_file(str(server.models_dir / "l2p" / DEMO_L2P_FILE))
    by_hand = dict(demo)
    for t in merged_targets:
        down, up = lora[f"diffusion_model.{t}.lora_A.weight"], lora[f"diffusion_model.{t}.lora_B.weight"]
        by_hand[t + ".weight"] = demo[t + ".weight"] + delta(demo[t + ".weight"], down, up)
    name = f"latent-merged-{len(merged_targets)}.safetensors"
    save_safetensors_atomic(by_hand, str(server.models_dir / "l2p" / name))
    seed = {"7": {"seed": 5}}
    merged = image(server, tiny_demo_prompt({**seed, "4": {"ckpt_name": name}}))
    prompt = tiny_demo_prompt(seed)
    prompt["11"] = {"class_type": "L2PLoraFromLatent", "inputs": {
        "model": ["4", 0], "lora_name": "latent-zimage-lora.safetensors", "strength": STRENGTH, "blocks": blocks,
        "policy": "paper"}}
    prompt["5"]["inputs"]["model"] = ["11", 0]
    result = server.run(prompt, timeout=300)
    assert result.ok, result.describe()
    report = result.outputs["11"]["text"][0]
    assert report.startswith("latent LoRA on an L2P model (paper policy): kept")
    assert ("trained by the paper policy" in report) == (blocks == "frozen blocks only")
    from PIL import Image

    (path,) = server.output_images(result)
    diff = abs(np.asarray(Image.open(path)).astype(int) - merged)
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())
    missing = server.run({**prompt, "11": {**prompt["11"], "inputs": {**prompt["11"]["inputs"],
                                                                      "policy": "from checkpoint"}}}, timeout=120)
    assert not missing.ok and "records no l2p.policy" in missing.error_message


# ------------------------------------------------------------------------------------------ LoRA training


def test_a_trained_lora_applied_by_the_stock_loader_equals_the_merged_export(core, tmp_path):
    """network = lora: the LoRA file (adapters + the head and pixel embedder as .diff) on the base model, through
    core's LoRA code, gives the merged export's output."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from l2p.format.tensor_io import save_safetensors_atomic

    base = official_state_dict(*tiny_l2p(seed=0))
    save_safetensors_atomic(base, str(tmp_path / "model.safetensors"), metadata={"l2p.policy": "paper"})
    make_dataset(tmp_path / "ds", n=4)
    done = subprocess.run([sys.executable, LAUNCH, "--model", str(tmp_path / "model.safetensors"), "--dataset",
                           str(tmp_path / "ds"), "--output-dir", str(tmp_path / "run"), "--network", "lora",
                           "--lora-rank", "4", "--lora-alpha", "8", "--lr", "1e-3", "--steps", "2", "--batch-size",
                           "2", "--mixed-precision", "no"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    lora = load_file(str(tmp_path / "run" / "l2p-trained-lora.safetensors"))
    merged = load_file(str(tmp_path / "run" / "l2p-trained.safetensors"))
    assert any(k.endswith(".lora_A.weight") for k in lora) and "diffusion_model.local_decoder.out_conv.diff" in lora
    assert "diffusion_model.all_x_embedder.16-1.diff_b" in lora
    assert not any(k.startswith("diffusion_model.local_decoder.") and "lora_" in k for k in lora)
    with_lora = output(core, base, lora, strength=1.0)
    assert (with_lora - output(core, base)).abs().max() > 1e-3
    assert (with_lora - output(core, merged)).abs().max() < 1e-4, (with_lora - output(core, merged)).abs().max()


def test_rank_16_trains_under_one_percent_of_the_real_model():
    """At real size (meta tensors): rank 16 on every linear layer of all 30 blocks, plus the head and embedder
    trained whole, is under 1% of the 6.17B parameters."""
    from l2p.head import build_head
    from l2p.pixel_dit import PixelDiT
    from l2p.tiny import official_trunk
    from training.lora import add_lora, target_modules
    from training.model import trainable_report

    model = PixelDiT(official_trunk(3840, 30, 2, 30, 2560, device="meta"), build_head("1k", 3840, device="meta"),
                     head_variant="1k")
    add_lora(model, target_modules(model, "all", "all", 30), 16, 16.0, 0.0, "local_decoder,all_x_embedder")
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapters = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    report = trainable_report(model, "lora")
    assert adapters == 30 * 16 * (4 * (3840 + 3840) + 3 * (3840 + 10240)) and trained / 6_166_464_515 < 0.01, report
    print(f"[lora] {report}; adapters alone {adapters:,}")
