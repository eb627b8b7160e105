"""L2PTrain on a real ComfyUI server: the shipped training workflow trains a tiny model for a few steps, the
export samples through L2PModelLoader, Cancel stops cleanly at a saved checkpoint, a failing trainer
reports its exit code and last lines."""

from __future__ import annotations

import json
import pathlib
import time

import pytest

from harness.graph import tiny_demo_prompt
from harness.server import ComfyServer
from l2p.format.tensor_io import save_safetensors_atomic
from l2p.pixel_dit import official_state_dict
from l2p.tiny import DEMO_TE_FILE, tiny_l2p, write_demo_models
from tests.test_trainer import make_dataset
from training.contract import load_toml

API = pathlib.Path(__file__).resolve().parents[1] / "workflows" / "api"
MODEL = "tiny-train.safetensors"


@pytest.fixture(scope="module")
def server(comfy_server: ComfyServer) -> ComfyServer:
    write_demo_models(str(comfy_server.models_dir))
    save_safetensors_atomic(official_state_dict(*tiny_l2p(seed=4)), str(comfy_server.models_dir / "l2p" / MODEL),
                            metadata={"l2p.policy": "paper"})
    if not (comfy_server.output_dir / "train-ds").exists():
        make_dataset(comfy_server.output_dir / "train-ds", n=4)
        make_dataset(comfy_server.output_dir / "train-ds-nocond", n=2, cond=False)
    return comfy_server


def train_prompt(**inputs) -> dict:
    prompt = json.loads((API / "l2p_train.api.json").read_text())
    prompt["1"]["inputs"].update({"model": MODEL, "dataset": "train-ds", "steps": 2, "batch_size": 2,
                                  "checkpoint_every": 0, "validate_every": 0, **inputs})
    return prompt


def test_training_workflow_exports_a_model_that_samples(server):
    result = server.run(train_prompt(run_name="e2e", validate_every=2, lr_new=1e-4), timeout=600)
    assert result.ok, result.describe()
    (name,) = result.outputs["1"]["text"]
    assert name.startswith("e2e_") and (server.models_dir / "l2p" / name).is_file()
    run = server.output_dir / "l2p_runs" / "e2e"
    written = load_toml(str(run / "l2p_train.toml"))  # the node's inputs reach the trainer's config
    assert written["lr_new"] == 1e-4 and written["lr"] == 5e-5 and written["steps"] == 2
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][-1] == "done" and (run / "validation" / "step-000002-0.png").is_file()
    demo = tiny_demo_prompt({"1": {"text_encoder_name": DEMO_TE_FILE}, "4": {"ckpt_name": name},
                             "6": {"width": 64, "height": 48}, "7": {"steps": 2}})
    sampled = server.run(demo, timeout=300)
    assert sampled.ok, sampled.describe()
    assert len(server.output_images(sampled)) == 1


def test_cancel_stops_at_a_saved_checkpoint(server):
    run = server.output_dir / "l2p_runs" / "cancel"
    prompt_id = server.queue(train_prompt(run_name="cancel", steps=500))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        log = run / "events.jsonl"
        if log.exists() and '"event": "log"' in log.read_text():
            break
        time.sleep(0.2)
    server._request("POST", "/interrupt", {})
    result = server.wait(prompt_id, timeout=300)
    assert result.status == "interrupted", result.describe()
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    stopped = [e for e in events if e["event"] == "stopped"]
    assert stopped and (run / f"checkpoint-{stopped[0]['step']}" / "COMPLETE").is_file()
    again = server.run(train_prompt(run_name="cancel", steps=stopped[0]["step"] + 1), timeout=600)
    assert again.ok, again.describe()
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "resumed" and e["step"] == stopped[0]["step"] for e in events)


def test_a_failing_trainer_reports_exit_code_and_reason(server):
    result = server.run(train_prompt(run_name="fails", dataset="train-ds-nocond"), timeout=300)
    assert not result.ok
    assert "exited with code 2" in result.error_message and "no cached text conditioning" in result.error_message
    escape = server.run(train_prompt(run_name="../../escape"), timeout=60)
    assert not escape.ok and "inside l2p_runs" in escape.error_message


def test_with_a_text_encoder_the_node_caches_what_is_missing_and_trains(server):
    folder = server.output_dir / "train-ds-cache"
    if not folder.exists():
        make_dataset(folder, n=2, cond=False)
    result = server.run(train_prompt(run_name="cache", dataset="train-ds-cache", steps=1,
                                     text_encoder=DEMO_TE_FILE), timeout=600)
    assert result.ok, result.describe()
    assert len(list(folder.glob("*.cond.safetensors"))) == 2
    events = [json.loads(x) for x in (server.output_dir / "l2p_runs" / "cache" / "events.jsonl").read_text()
              .splitlines()]
    assert [e["event"] for e in events][:3] == ["dataset", "caching", "caching"] and events[-1]["event"] == "done"


def test_lora_training_from_the_node_exports_a_lora_the_stock_loader_applies(server):
    result = server.run(train_prompt(run_name="lora-node", steps=2, network="lora", lora_rank=4), timeout=600)
    assert result.ok, result.describe()
    merged, lora = result.outputs["1"]["text"]
    assert (server.models_dir / "l2p" / merged).is_file() and (server.models_dir / "loras" / lora).is_file()
    demo = tiny_demo_prompt({"1": {"text_encoder_name": DEMO_TE_FILE}, "4": {"ckpt_name": MODEL},
                             "6": {"width": 64, "height": 48}, "7": {"steps": 2}})
    demo["11"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["4", 0], "lora_name": lora,
                                                                  "strength_model": 1.0}}
    demo["5"]["inputs"]["model"] = ["11", 0]
    sampled = server.run(demo, timeout=300)
    assert sampled.ok, sampled.describe()
    assert len(server.output_images(sampled)) == 1
