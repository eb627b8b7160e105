"""The dataset pipeline on a real ComfyUI server with a tiny latent source (Z-Image architecture, diffusers
folder) and a random-weight VAE of the real 16-channel architecture: the shipped dataset workflow writes
items, reruns resume, the headless driver fans out, survives being killed, and fails in one line."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from dataset.folder import read_metadata
from dataset.prompts import generate_bank, write_jsonl
from harness.server import ComfyServer
from l2p.format.tensor_io import save_safetensors_atomic
from l2p.tiny import DEMO_TE_FILE, write_demo_models
from tests.test_convert_nodes import install_tiny_source

REPO = pathlib.Path(__file__).resolve().parents[1]
API = REPO / "workflows" / "api" / "l2p_make_dataset.api.json"
VAE_FILE = "tiny-flux-vae.safetensors"


@pytest.fixture(scope="module")
def server(comfy_server: ComfyServer) -> ComfyServer:
    write_demo_models(str(comfy_server.models_dir))
    install_tiny_source(comfy_server.models_dir)
    vae_path = comfy_server.models_dir / "vae" / VAE_FILE
    if not vae_path.exists():
        from diffusers import AutoencoderKL

        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=2, use_quant_conv=False, use_post_quant_conv=False)
        save_safetensors_atomic(vae.state_dict(), str(vae_path))
    write_jsonl(str(comfy_server.input_dir / "bank.jsonl"), generate_bank(4, seed=3))
    return comfy_server


def dataset_workflow(**changes) -> dict:
    """The shipped dataset workflow on the tiny models, 64x64, 2 steps, one image per prompt."""
    prompt = json.loads(API.read_text())
    prompt["1"] = {"class_type": "L2PSourceModelLoader", "inputs": {"source": "tiny-zimage/", "weight_dtype": "fp32"}}
    prompt["2"] = {"class_type": "L2PTextEncoderLoader", "inputs": {"text_encoder_name": DEMO_TE_FILE}}
    prompt["3"]["inputs"]["vae_name"] = VAE_FILE
    prompt["4"]["inputs"].update(prompts="bank.jsonl", images_per_prompt=1)
    prompt["8"]["inputs"].update(width=64, height=64)
    prompt["9"]["inputs"]["steps"] = 2
    for node, inputs in changes.items():
        prompt[node]["inputs"].update(inputs)
    return prompt


def test_workflow_writes_items_and_a_rerun_skips_them(server):
    folder = "ds-workflow"
    for index in (0, 1):
        result = server.run(dataset_workflow(**{"4": {"index": index}, "11": {"folder": folder}}), timeout=300)
        assert result.ok, result.describe()
    root = server.output_dir / folder
    rows = read_metadata(str(root))
    assert sorted(rows) == [0, 1]
    assert (root / "00001.png").is_file() and (root / "00001.txt").read_text() == rows[1]["text"]
    assert len(rows[0]["text"]) >= 200 and rows[0]["category"].count("/") == 2
    cond = load_file(str(root / rows[0]["conditioning"]))["cap_feats"]
    assert cond.ndim == 2 and cond.shape[1] == 64  # the tiny text encoder's width
    again = server.run(dataset_workflow(**{"4": {"index": 1}, "9": {"cfg": 1.5}, "11": {"folder": folder}}),
                       timeout=300)
    assert again.ok and "skipped 00001" in again.outputs["11"]["text"][0]
    assert len((root / "metadata.jsonl").read_text().splitlines()) == 2


def test_node_errors_are_one_line(server):
    good = '{"index": 0, "category": "a/b/c", "prompt": "x", "seed": 1}'
    (server.input_dir / "broken.jsonl").write_text(f"{good}\n{{oops\n")
    cases = [
        ({"4": {"index": 99}}, "past the end of the bank"),
        ({"11": {"folder": "../escape"}}, "inside output"),
        ({"4": {"prompts": "broken.jsonl"}}, "broken.jsonl:2"),
    ]
    for changes, message in cases:
        result = server.run(dataset_workflow(**changes), timeout=300)
        assert not result.ok and message in result.error_message, result.error_message
        assert "\n" not in result.error_message.strip()


def driver(server: ComfyServer, tmp_path: pathlib.Path, out: pathlib.Path, *extra: str,
           servers: tuple[str, ...] = ()) -> subprocess.Popen:
    workflow = tmp_path / "dataset.api.json"
    workflow.write_text(json.dumps(dataset_workflow()))
    prompts = tmp_path / "prompts.jsonl"
    if not prompts.exists():
        write_jsonl(str(prompts), generate_bank(6, seed=5))
    args = [sys.executable, "-m", "dataset.make", "--prompts", str(prompts), "--out", str(out),
            "--workflow", str(workflow), "--images-per-prompt", "1", *extra]
    for url in servers or (server.url, server.url):  # two workers on one server: the fan-out path
        args += ["--server", url]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_driver_resumes_after_being_killed(server, tmp_path):
    out = tmp_path / "ds-driver"
    proc = driver(server, tmp_path, out)
    deadline = time.monotonic() + 300
    while len(read_metadata(str(out))) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < len(read_metadata(str(out))) < 6
    done = driver(server, tmp_path, out)
    stdout, stderr = done.communicate(timeout=300)
    assert done.returncode == 0, stderr
    rows = read_metadata(str(out))
    assert sorted(rows) == list(range(6))
    lines = (out / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 6  # no duplicates
    assert not [p for p in os.listdir(out) if p.startswith(".partial")]
    assert sorted(p for p in os.listdir(out) if p.endswith(".png")) == [f"{i:05d}.png" for i in range(6)]
    assert "already there" in stdout
    trains_with_no_manual_step(server, out, tmp_path)


def trains_with_no_manual_step(server: ComfyServer, out: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """The driver caches no conditioning; the trainer, given the text encoder, caches it and trains."""
    from harness.comfyui_home import comfyui_home
    from l2p.text_encoding import TOKENIZER_FOLDER
    from l2p.tiny import DEMO_L2P_FILE

    assert not list(out.glob("*.cond.safetensors"))
    run = subprocess.run([sys.executable, str(REPO / "training" / "launch.py"), "--model",
                          str(server.models_dir / "l2p" / DEMO_L2P_FILE), "--dataset", str(out), "--output-dir",
                          str(tmp_path / "run"), "--text-encoder", str(server.models_dir / "text_encoders" /
                                                                      DEMO_TE_FILE),
                          "--tokenizer", str(comfyui_home() / TOKENIZER_FOLDER), "--steps", "1", "--batch-size", "2",
                          "--mixed-precision", "no"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(list(out.glob("*.cond.safetensors"))) == 6 and (tmp_path / "run" / "l2p-trained.safetensors").is_file()


def test_driver_errors_are_one_line(server, tmp_path):
    dead = driver(server, tmp_path, tmp_path / "ds-dead", servers=("http://127.0.0.1:9",))
    _, err = dead.communicate(timeout=120)
    assert dead.returncode == 2 and "no ComfyUI server answers" in err, err
    assert err.strip().splitlines()[-1].startswith("error:") and "Traceback" not in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    for args, message in [
        (["--prompts", str(bad)], "bad.jsonl:1"),
        (["--out", "/proc/no-such-dir/ds"], "cannot write to dataset folder"),
    ]:
        proc = driver(server, tmp_path, tmp_path / "ds-x", *args)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and message in err, err
        assert len(err.strip().splitlines()) == 1
