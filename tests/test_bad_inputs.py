"""Hostile and careless inputs (issue 16), every class in one place, through a real ComfyUI server.

Each case checks three things:

- the refusal is one line carrying the key words (the node's error, ComfyUI's validation, or the route's JSON);
- the server still renders the next valid prompt (a small tiny-demo image);
- nothing is written outside the server's folders: the server's whole base directory and the repository's working
  tree are snapshotted before and after; a refused prompt writes nothing at all, and the valid render writes
  only under output/ (or temp/).

Classes: broken model files (truncated, pickle renamed .safetensors, empty, a latent Z-Image, a foreign state
dict, a refiner tensor missing); path escapes in every input that names a file or folder (combo inputs are
refused by ComfyUI's validation, free strings by the pack); an interrupt during sampling; conditioning of the
wrong width; a stock EmptyLatentImage; hostile ``/l2p/hints`` requests; a size refused by the memory check.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import pickle
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from harness.comfyui_home import comfyui_home
from harness.graph import tiny_demo_prompt
from harness.server import ComfyServer, PromptRejected
from l2p.tiny import (
    DEMO_L2P_FILE,
    DEMO_TE_FILE,
    save_safetensors_atomic,
    tiny_latent_zimage,
    tiny_qwen3_state_dict,
    write_demo_models,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows" / "api"
TE_WIDE48 = "bad-inputs-qwen3-width48.safetensors"
REDOWNLOAD = "download or export it again"
SEEDS = iter(range(5000, 6000))


# --------------------------------------------------------------------------------------------------- helpers


def files_under(base: pathlib.Path) -> set[str]:
    """Every file and folder under ``base`` (symlinks not followed: the pack link is listed, not walked)."""
    found = set()
    for folder, dirs, files in os.walk(base):
        rel = pathlib.Path(folder).relative_to(base)
        found |= {(rel / name).as_posix() for name in dirs + files}
    return found


SKIPPED_IN_REPO = ("test-artifacts", "__pycache__", ".pytest_cache", ".ruff_cache", ".git")


def repo_status() -> set[tuple[str, int, int]]:
    """The repository's files with size and mtime (venvs and caches left out); works without a .git folder."""
    found = set()
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIPPED_IN_REPO and not d.startswith(".venv")]
        for name in files:
            path = pathlib.Path(folder) / name
            with contextlib.suppress(OSError):
                st = path.lstat()
                found.add((path.relative_to(REPO).as_posix(), st.st_size, st.st_mtime_ns))
    return found


class Snapshot:
    """The server's base directory and the repository's working tree at one moment."""

    def __init__(self, server: ComfyServer) -> None:
        self.server = server
        self.tree = files_under(server.base_dir)
        self.repo = repo_status()

    def changes(self) -> set[str]:
        now = files_under(self.server.base_dir)
        # SQLite's own side files of the app database (user/comfyui.db) come and go with each transaction.
        return {p for p in now ^ self.tree if not p.startswith("user/comfyui.db")}

    def assert_nothing_written(self) -> None:
        assert self.changes() == set(), f"a refused input wrote {sorted(self.changes())}"
        assert repo_status() == self.repo, "the repository's working tree changed"

    def assert_only_outputs_written(self) -> None:
        stray = sorted(p for p in self.changes() if p.split("/")[0] not in ("output", "temp"))
        assert stray == [], f"written outside output/ and temp/: {stray}"
        assert repo_status() == self.repo, "the repository's working tree changed"


def demo_prompt(**changes) -> dict:
    """The shipped tiny-demo API workflow, small and short; ``changes``: {node: {input: value} or a whole node}."""
    return tiny_demo_prompt(changes)


def renders_next_valid_prompt(server: ComfyServer, before: Snapshot) -> None:
    result = server.run(demo_prompt(**{"7": {"seed": next(SEEDS)}}), timeout=300)
    assert result.ok, result.describe()
    (path,) = server.output_images(result)
    image = np.asarray(Image.open(path))
    assert image.shape == (64, 96, 3) and image.std() > 0
    before.assert_only_outputs_written()
    assert any(p.startswith("output/") for p in before.changes()), "the valid render saved no image"


def node_error(server: ComfyServer, prompt: dict, node_type: str, timeout: float = 120) -> str:
    """Run a prompt that must fail in ``node_type``; its one-line message."""
    result = server.run(prompt, timeout=timeout)
    assert result.status == "error", result.describe()
    assert result.error["node_type"] == node_type, result.describe()
    message = result.error["exception_message"].strip()
    assert message and "\n" not in message, message
    assert server.running
    return message


@pytest.fixture(scope="module")
def server(comfy_server: ComfyServer) -> ComfyServer:
    models = comfy_server.models_dir
    write_demo_models(str(models))
    te = models / "text_encoders"
    save_safetensors_atomic(tiny_qwen3_state_dict(seed=0, hidden_size=48), str(te / TE_WIDE48), dtype=torch.float16)
    return comfy_server


@pytest.fixture
def snapshot(server: ComfyServer) -> Iterator[Snapshot]:
    yield Snapshot(server)


# ------------------------------------------------------------------------------------------ broken model files


def truncated(folder: pathlib.Path) -> bytes:
    good = (folder / DEMO_L2P_FILE).read_bytes()
    return good[: len(good) // 2]


def pickled(_: pathlib.Path) -> bytes:  # what a .ckpt / .pt renamed .safetensors holds: plain values only
    return pickle.dumps({"state_dict": {"model.diffusion_model.x_embedder.weight": [[0.1, 0.2], [0.3, 0.4]]},
                         "epoch": 3, "global_step": 1200})


def empty(_: pathlib.Path) -> bytes:
    return b""


def safetensors_bytes(sd: dict[str, torch.Tensor], folder: pathlib.Path) -> bytes:
    tmp = folder / ".bad-inputs-build.safetensors"
    save_safetensors_atomic(sd, str(tmp))
    try:
        return tmp.read_bytes()
    finally:
        tmp.unlink()


def latent_zimage(folder: pathlib.Path) -> bytes:
    return safetensors_bytes(tiny_latent_zimage(seed=1), folder)


def foreign(folder: pathlib.Path) -> bytes:  # an SD 1.x-style checkpoint: unrelated keys
    sd = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3),
          "model.diffusion_model.out.2.weight": torch.zeros(4, 8, 3, 3),
          "first_stage_model.decoder.conv_in.weight": torch.zeros(8, 4, 3, 3),
          "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(16, 8)}
    return safetensors_bytes(sd, folder)


def refiner_tensor_missing(folder: pathlib.Path) -> bytes:
    from safetensors.torch import load_file

    sd = load_file(folder / DEMO_L2P_FILE)
    del sd["noise_refiner.0.attention.to_k.weight"]
    return safetensors_bytes(sd, folder)


BAD_FILES = {  # id: (the file's bytes from the l2p folder, the words the loader's one line must carry)
    "truncated": (truncated, ["is truncated or corrupt", "download or copy it again"]),
    "pickle-renamed": (pickled, ["is truncated or corrupt", "download or copy it again"]),
    "empty": (empty, ["is truncated or corrupt", "download or copy it again"]),
    "latent-zimage": (latent_zimage, ["this is a latent Z-Image model (it has a final layer and no local_decoder): "
                                      "load it with the stock UNETLoader, or convert it to L2P first"]),
    "foreign-sd": (foreign, ["this file is not a Z-Image/NextDiT diffusion model (2 tensors): pick an L2P "
                             "checkpoint such as model-1k-merge.safetensors"]),
    "refiner-tensor-missing": (refiner_tensor_missing, [
        "incomplete file: 1 tensor of noise_refiner.0 missing (first: noise_refiner.0.attention.to_k.weight); "
        + REDOWNLOAD]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_broken_model_file_is_one_line_naming_it(server, case):
    make, words = BAD_FILES[case]
    folder = server.models_dir / "l2p"
    name = f"bad-inputs-{case}.safetensors"
    (folder / name).write_bytes(make(folder))
    before = Snapshot(server)
    message = node_error(server, demo_prompt(**{"4": {"ckpt_name": name}}), "L2PModelLoader")
    assert message.startswith(name), message  # the file is named first
    for word in words:
        assert word in message, message
    before.assert_nothing_written()
    renders_next_valid_prompt(server, before)


# ------------------------------------------------------------------------------------------------ path escapes

ESCAPES = ["../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini", "sub/../../../escape", "C:evil"]


def dataset_writer(folder: str) -> dict:
    return {
        "1": {"class_type": "L2PPromptBank", "inputs": {"prompts": "(built-in taxonomy)", "index": 0,
                                                        "images_per_prompt": 1, "count": 4, "seed": 0}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0}},
        "3": {"class_type": "L2PDatasetWriter", "inputs": {"images": ["2", 0], "prompt": ["1", 0], "seed": ["1", 1],
                                                           "index": ["1", 3], "category": ["1", 2],
                                                           "folder": folder}},
    }


def train(**inputs) -> dict:
    node = json.loads((WORKFLOWS / "l2p_train.api.json").read_text())["1"]
    node["inputs"].update({"model": DEMO_L2P_FILE, "dataset": "l2p_dataset", "run_name": "bad-inputs-run",
                           "steps": 1, "resume": False, **inputs})
    return {"1": node}


def save_checkpoint(prefix: str) -> dict:
    prompt = demo_prompt()
    return {"4": prompt["4"], "20": {"class_type": "L2PSaveCheckpoint",
                                     "inputs": {"model": ["4", 0], "filename_prefix": prefix, "layout": "official"}}}


FREE_STRINGS = {  # id: (prompt for an escaping value, the node that refuses, what it names, the folder it keeps to)
    "dataset-writer-folder": (dataset_writer, "L2PDatasetWriter", "folder", "output"),
    "train-run_name": (lambda v: train(run_name=v), "L2PTrain", "run_name", "l2p_runs"),
    "train-dataset": (lambda v: train(dataset=v), "L2PTrain", "dataset", "output"),
    "save-checkpoint-prefix": (save_checkpoint, "L2PSaveCheckpoint", "filename_prefix", "l2p"),
}


@pytest.mark.parametrize("case", list(FREE_STRINGS))
def test_a_free_string_name_cannot_leave_its_folder(server, case):
    make, node_type, what, inside = FREE_STRINGS[case]
    before = Snapshot(server)
    for escape in ESCAPES:
        message = node_error(server, make(escape), node_type)
        assert message.startswith(f"{what} {escape!r} "), message
        assert f"must be a relative name inside {inside}" in message or f"leaves {inside}" in message, message
    before.assert_nothing_written()
    renders_next_valid_prompt(server, before)


def source_convert_save(source: str) -> dict:
    return {"1": {"class_type": "L2PSourceModelLoader", "inputs": {"source": source, "weight_dtype": "default"}},
            "2": {"class_type": "L2PConvert", "inputs": {"model": ["1", 0], "patch_size": 16, "init": "official",
                                                         "policy": "official", "custom_blocks": "0-1", "seed": 0}},
            "3": {"class_type": "L2PSaveCheckpoint", "inputs": {"model": ["2", 0], "filename_prefix": "x",
                                                                "layout": "official"}}}


def prompt_bank(name: str) -> dict:
    prompt = dataset_writer("l2p_dataset")
    prompt["1"]["inputs"]["prompts"] = name
    return prompt


NOT_LISTED = "refresh the node list (press R) and pick a listed"
COMBOS = {  # id: (prompt with the escaping value, the node, the input, the pack's refusal for value v)
    "model-loader-ckpt_name": (lambda v: demo_prompt(**{"4": {"ckpt_name": v}}), "L2PModelLoader", "ckpt_name",
                               lambda v: f"{v} is not in models/l2p or models/diffusion_models: {NOT_LISTED} file"),
    "text-encoder-name": (lambda v: demo_prompt(**{"1": {"text_encoder_name": v}}), "L2PTextEncoderLoader",
                          "text_encoder_name", lambda v: f"folder 'text_encoders' with filename '{v}' not found"),
    "prompt-bank-file": (prompt_bank, "L2PPromptBank", "prompts",
                         lambda v: f"prompts {v!r} must be a relative name inside input, e.g. prompts.jsonl"),
    "train-model": (lambda v: train(model=v), "L2PTrain", "model",
                    lambda v: f"{v} is not in models/l2p or models/diffusion_models: {NOT_LISTED} file"),
    "source-model-loader": (source_convert_save, "L2PSourceModelLoader", "source",
                            lambda v: f"{v} is not in models/diffusion_models: {NOT_LISTED} source"),
}
COMBO_ESCAPES = ["../../etc/passwd", "../../../etc/hosts.safetensors", f"../l2p/{DEMO_L2P_FILE}", "/etc/passwd.jsonl"]


@pytest.mark.parametrize("case", list(COMBOS))
def test_a_listed_name_outside_its_folder_is_refused(server, case):
    """ComfyUI 0.3.75 does not check V3 combo values against their options (the node sees the raw string), so
    the pack's own resolution refuses them; a core that validates them answers value_not_in_list first."""
    make, node_type, what, refusal = COMBOS[case]
    before = Snapshot(server)
    for escape in COMBO_ESCAPES:
        try:
            prompt_id = server.queue(make(escape))
        except PromptRejected as err:
            assert err.status == 400 and "\n" not in err.text, err.text
            assert f"({node_type}): value_not_in_list: Value not in list" in err.text, err.text
            assert what in err.text and escape in err.text, err.text
            continue
        result = server.wait(prompt_id, timeout=120)
        assert result.status == "error" and result.error["node_type"] == node_type, result.describe()
        message = result.error["exception_message"].strip()
        assert "\n" not in message and refusal(escape) in message, message
    assert server.running
    before.assert_nothing_written()
    renders_next_valid_prompt(server, before)


# ---------------------------------------------------------------------------------------------------- interrupt


def test_an_interrupt_during_sampling_stops_it_and_the_next_prompt_renders(server):
    before = Snapshot(server)
    prompt = demo_prompt(**{"7": {"steps": 10000, "seed": next(SEEDS)}})
    steps: list[int] = []

    def on_event(kind: str, data: dict) -> None:
        if kind == "progress":
            steps.append(int(data["value"]))
            if len(steps) == 1:
                server.interrupt()

    ws = server._connect_ws()
    prompt_id = server.queue(prompt)
    result = server.wait(prompt_id, timeout=120, on_event=on_event, _ws=ws)
    assert result.status == "interrupted", result.describe()
    assert steps and max(steps) < 10000, steps
    kinds = [k for k, _ in result.events]
    assert "execution_interrupted" in kinds and "execution_error" not in kinds, kinds
    (data,) = [d for k, d in result.events if k == "execution_interrupted"]
    assert data["node_type"] == "KSampler", data
    assert server.running
    before.assert_nothing_written()
    renders_next_valid_prompt(server, before)


# ------------------------------------------------------------------------------------------ wrong model inputs


def test_conditioning_of_the_wrong_width_is_one_line(server):
    before = Snapshot(server)
    message = node_error(server, demo_prompt(**{"1": {"text_encoder_name": TE_WIDE48}}), "KSampler", timeout=300)
    assert message.startswith("ComfyUI-L2P: "), message
    assert "this conditioning is 48 wide, the model expects 64: wrong text encoder?" in message
    before.assert_nothing_written()
    renders_next_valid_prompt(server, before)


def test_stock_empty_latent_image_is_refused_or_scaled_to_pixels(server):
    before = Snapshot(server)
    prompt = demo_prompt(**{"6": {"class_type": "EmptyLatentImage",
                                  "inputs": {"width": 96, "height": 64, "batch_size": 1}},
                            "7": {"seed": next(SEEDS)}})
    if "downscale_ratio_spacial" in (comfyui_home() / "comfy" / "sample.py").read_text():
        result = server.run(prompt, timeout=300)  # newer cores make the stock latent full-size pixels
        assert result.ok, result.describe()
        (path,) = server.output_images(result)
        assert np.asarray(Image.open(path)).shape == (64, 96, 3)
        before.assert_only_outputs_written()
    else:  # core 0.3.75 would sample a 12x8 image
        message = node_error(server, prompt, "KSampler", timeout=300)
        assert message.startswith("ComfyUI-L2P: "), message
        assert ("this latent has 4 channels at 12x8, not the L2P model's 3-channel pixels: connect L2P Empty "
                "Image or VAEEncode(pixel_space), not EmptyLatentImage") in message
        before.assert_nothing_written()
    renders_next_valid_prompt(server, before)


def test_a_size_that_cannot_fit_memory_is_refused_in_seconds(server):
    before = Snapshot(server)
    result = server.run(demo_prompt(**{"6": {"width": 16384, "height": 16384, "batch_size": 1}}), timeout=120)
    assert result.status == "error" and result.error["node_type"] == "L2PEmptyImage", result.describe()
    message = result.error["exception_message"].strip()
    assert "\n" not in message and message.startswith("ComfyUI-L2P: "), message
    assert "16384x16384 (batch 1) needs about" in message and "GiB to sample on cpu" in message, message
    assert " GiB is free: use at most " in message, message
    assert result.seconds < 10, f"refused after {result.seconds:.1f} s"
    before.assert_nothing_written()
    renders_next_valid_prompt(server, before)


# ------------------------------------------------------------------------------------------ hostile /l2p/hints

HINTS = {  # id: (raw query, the parameter the refusal names)
    "ckpt-escape": ("ckpt_name=" + urllib.parse.quote("../../../etc/passwd"), "ckpt_name"),
    "ckpt-absolute": ("ckpt_name=" + urllib.parse.quote("/etc/hosts.safetensors"), "ckpt_name"),
    "width-nan": ("width=nan", "width"),
    "shift-overflow": ("shift=1e400", "shift"),
    "huge-query": ("ckpt_name=" + "a" * 3000, "query"),
}


def _not_strict(name: str):
    raise ValueError(f"not strict JSON: {name}")


def test_hostile_hints_requests_are_ok_false_strict_json(server):
    before = Snapshot(server)
    for query, param in HINTS.values():
        try:
            with urllib.request.urlopen(f"{server.url}/l2p/hints?{query}", timeout=30) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode()
        assert status == 400, (query[:80], status, text)
        body = json.loads(text, parse_constant=_not_strict)
        assert body["ok"] is False and set(body["errors"]) == {param}, body
        assert param in body["message"] and "\n" not in body["message"], body
        assert str(server.base_dir) not in text, text  # the server's folders stay private
    before.assert_nothing_written()
    renders_next_valid_prompt(server, before)


def test_the_demo_files_are_the_ones_the_cases_rely_on(server):
    """The valid render uses the demo text encoder and model; a renamed demo file would make every case vacuous."""
    info = server.object_info()
    assert DEMO_L2P_FILE in info["L2PModelLoader"]["input"]["required"]["ckpt_name"][1]["options"]
    assert DEMO_TE_FILE in json.dumps(info["L2PTextEncoderLoader"]["input"]["required"]["text_encoder_name"])
