"""The trainer launched as users launch it (subprocesses: python training/launch.py, accelerate launch) on a
tiny real-architecture L2P model and a tiny dataset: export, pruning, resume continuity, SIGKILL/resume
identity, clean SIGINT stop, 2-process equivalence, and one-line refusals of bad configs."""

from __future__ import annotations

import json
import math
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save

from dataset.folder import DatasetItem, DatasetWriter, png_bytes
from l2p.format.layouts import check_l2p
from l2p.format.tensor_io import save_safetensors_atomic
from l2p.init_fit import fit_images
from l2p.pixel_dit import official_state_dict
from l2p.tiny import tiny_l2p
from training.trainer import drops_caption

REPO = pathlib.Path(__file__).resolve().parents[1]
LR = 1e-4  # the runs' learning rate (launch)
LAUNCH = str(REPO / "training" / "launch.py")


N_ITEMS = 6


def make_dataset(root: pathlib.Path, n: int = N_ITEMS, size: int = 32, cond: bool = True) -> pathlib.Path:
    writer = DatasetWriter(str(root))
    images = fit_images(n, size, seed=1)
    for i in range(n):
        pixels = ((images[i].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
        feats = save({"cap_feats": torch.randn(5 + i, 64, generator=torch.Generator().manual_seed(i))})
        writer.write(DatasetItem(i, f"prompt {i}", 100 + i, "a/b/c", size, size), png_bytes(Image.fromarray(pixels)),
                     feats if cond else None)
    return root


@pytest.fixture(scope="module")
def world(module_tmp: pathlib.Path) -> pathlib.Path:
    root = module_tmp
    make_dataset(root / "ds")
    save_safetensors_atomic(official_state_dict(*tiny_l2p(seed=0)), str(root / "model.safetensors"),
                            metadata={"l2p.policy": "paper", "l2p.source_hash": "abc"})
    return root


def launch(world: pathlib.Path, out: str, *args: str, cmd: list[str] | None = None,
           wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    argv = (cmd or [sys.executable, LAUNCH]) + ["--model", str(world / "model.safetensors"), "--dataset",
                                                str(world / "ds"), "--output-dir", str(world / out),
                                                "--batch-size", "2", "--log-every", "1", "--lr", str(LR), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(argv, cwd=world, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(argv, cwd=world, capture_output=True, text=True, timeout=600, env=env)


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def assert_same_training(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], steps: int) -> float:
    """Gradients summed in another order move Adam's update of near-zero-gradient weights: bounded by a small
    share of what ``steps`` steps can move a weight (as tests/test_trainer.py bounds DDP)."""
    budget = steps * LR
    assert a.keys() == b.keys()
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    worst = max(a, key=lambda k: (a[k] - b[k]).abs().max().item())
    # a weight whose gradient is float noise can take Adam's whole step either way; few may, none by more
    assert diffs.max() < budget and (diffs > 0.1 * budget).float().mean() < 1e-4, (worst, diffs.max())
    assert diffs.mean() < 1e-3 * budget, diffs.mean()
    return float(diffs.max())


def trainable(path: pathlib.Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "trainable.safetensors"))


def test_two_steps_export_a_loadable_checkpoint(world):
    done = launch(world, "run-a", "--steps", "2", "--validate-every", "2", "--validation-steps", "2")
    assert done.returncode == 0, done.stderr
    evs = events(done.stdout)
    assert [e["event"] for e in evs][:2] == ["dataset", "start"] and evs[-1]["event"] == "done"
    assert evs[0] == {"event": "dataset", "layout": "l2p dataset", "items": N_ITEMS, "skipped": 0, "reasons": {},
                      "uncached": 0} and evs[-1]["skipped"] == 0
    logs = [e for e in evs if e["event"] == "log"]
    assert [e["step"] for e in logs] == [1, 2] and all(e["loss"] > 0 and e["samples_per_s"] > 0 for e in logs)
    assert "paper:" in evs[1]["policy"]
    out = world / "run-a"
    with safe_open(str(out / "l2p-trained.safetensors"), "pt") as f:
        meta, sd = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    check_l2p(sd)
    assert meta["l2p.steps"] == "2" and meta["l2p.policy"] == "paper" and meta["l2p.source_hash"] == "abc"
    assert "lr = 0.0001" in meta["l2p.train_config"]
    base = load_file(str(world / "model.safetensors"))
    frozen = "context_refiner.0.attention.to_q.weight"  # outside the paper policy
    assert torch.equal(sd[frozen], base[frozen])
    assert not torch.equal(sd["layers.0.attention.to_q.weight"], base["layers.0.attention.to_q.weight"])
    assert (out / "validation" / "step-000002-0.png").is_file() and (out / "loss.png").is_file()
    assert (out / "training_complete.json").is_file()


def test_pruning_and_resume_continuity(world):
    first = launch(world, "run-b", "--steps", "4", "--checkpoint-every", "1", "--checkpoints-total-limit", "2")
    assert first.returncode == 0, first.stderr
    names = sorted(p.name for p in (world / "run-b").iterdir() if p.name.startswith("checkpoint-"))
    assert names == ["checkpoint-3", "checkpoint-4"]
    more = launch(world, "run-b", "--steps", "6", "--checkpoint-every", "1", "--checkpoints-total-limit", "2",
                  "--resume", "latest")
    assert more.returncode == 0, more.stderr
    evs = events(more.stdout)
    assert evs[1] == {"event": "resumed", "step": 4, "path": str(world / "run-b" / "checkpoint-4")}
    assert [e["step"] for e in evs if e["event"] == "log"] == [5, 6]
    names = sorted(p.name for p in (world / "run-b").iterdir() if p.name.startswith("checkpoint-"))
    assert names == ["checkpoint-5", "checkpoint-6"]


@pytest.mark.parametrize("network", ["full", "lora"])
def test_sigkill_and_resume_ends_bit_identical(world, network):
    """Also for LoRA training: adapters, the whole-trained head and embedder, AdamW state and RNG resume exactly."""
    steps = "6"
    net = ["--network", "lora", "--lora-rank", "4"] if network == "lora" else []
    whole_run, killed_run = f"run-whole-{network}", f"run-killed-{network}"
    whole = launch(world, whole_run, "--steps", steps, "--checkpoint-every", "1", "--checkpoints-total-limit", "0",
                   *net)
    assert whole.returncode == 0, whole.stderr
    kill_after = random.Random().randint(1, 4)
    proc = launch(world, killed_run, "--steps", steps, "--checkpoint-every", "1", "--checkpoints-total-limit", "0",
                  *net, wait=False)
    marker = world / killed_run / f"checkpoint-{kill_after}" / "COMPLETE"
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    resumed = launch(world, killed_run, "--steps", steps, "--checkpoint-every", "1",
                     "--checkpoints-total-limit", "0", "--resume", "latest", *net)
    assert resumed.returncode == 0, resumed.stderr
    a, b = trainable(world / whole_run / "checkpoint-6"), trainable(world / killed_run / "checkpoint-6")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"killed after step {kill_after}"
    exports = ["l2p-trained.safetensors"] + (["l2p-trained-lora.safetensors"] if network == "lora" else [])
    for name in exports:
        ea, eb = load_file(str(world / whole_run / name)), load_file(str(world / killed_run / name))
        assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea), name


def test_sigint_saves_a_checkpoint_and_exits_cleanly(world):
    proc = launch(world, "run-int", "--steps", "500", "--checkpoint-every", "0", wait=False)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if '"event": "log"' in line:
            proc.send_signal(signal.SIGINT)
            break
    stdout, stderr = proc.communicate(timeout=300)
    evs = events("".join(seen) + stdout)
    assert proc.returncode == 0, stderr
    stopped = [e for e in evs if e["event"] == "stopped"]
    assert stopped and stopped[0]["step"] < 500
    assert (world / "run-int" / f"checkpoint-{stopped[0]['step']}" / "COMPLETE").is_file()


@pytest.mark.parametrize("network", ["full", "lora"])
def test_two_processes_equal_one_with_the_same_global_batch(world, network):
    net = ["--network", "lora", "--lora-rank", "4"] if network == "lora" else []
    one = launch(world, f"run-1p-{network}", "--steps", "2", "--checkpoint-every", "0", *net)
    assert one.returncode == 0, one.stderr
    accelerate = str(pathlib.Path(sys.executable).parent / "accelerate")
    two = launch(world, f"run-2p-{network}", "--steps", "2", "--checkpoint-every", "0", "--batch-size", "1", *net,
                 cmd=[accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                      "--mixed_precision", "no", "--dynamo_backend", "no", LAUNCH])
    assert two.returncode == 0, two.stderr[-3000:]
    assert events(two.stdout)[1]["processes"] == 2
    a, b = (trainable(world / f"run-{n}-{network}" / "checkpoint-2") for n in ("1p", "2p"))
    assert_same_training(a, b, steps=2)  # gradients all-reduced in another order: tests/test_distributed.py
    loss1 = [e["loss"] for e in events(one.stdout) if e["event"] == "log"]
    loss2 = [e["loss"] for e in events(two.stdout) if e["event"] == "log"]
    assert loss1 == pytest.approx(loss2, rel=1e-5)


def test_bad_configs_fail_in_one_line_before_work(world, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_cond = make_dataset(tmp_path / "nocond", n=2, cond=False)
    big_patch = tmp_path / "p64.safetensors"
    save_safetensors_atomic(official_state_dict(*tiny_l2p(seed=0, patch_size=64)), str(big_patch))
    toml = tmp_path / "bad.toml"
    toml.write_text('steps = 2\nlearning_rate = 1e-4\n')
    cases = [
        (["--dataset", str(tmp_path / "missing")], "does not exist"),
        (["--dataset", str(empty)], "has no items"),
        (["--dataset", str(no_cond)], "no cached text conditioning"),
        (["--model", str(big_patch)], "none of its 6 items is usable (most often: 32x32, smaller than one 64-pixel "
                                      "patch, 6)"),
        (["--policy", "everything"], "unknown policy"),
        (["--config", str(toml)], "unknown config key 'learning_rate'"),
        (["--steps", "0"], "steps is 0"),
        (["--caption-dropout", "0.5"], "caption_dropout needs the empty prompt's conditioning"),
        (["--caption-dropout", "0.1", "--empty-conditioning", str(toml)], "cannot read text conditioning"),
    ]
    for args, message in cases:
        done = launch(world, "run-bad", *args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr[-2000:])
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (world / "run-bad").exists()


def test_caption_dropout_share_and_effect(world, tmp_path):
    draws = [drops_caption(0, step, slot, 0.25) for step in range(200) for slot in range(8)]
    assert 0.2 < sum(draws) / len(draws) < 0.3
    assert draws == [drops_caption(0, step, slot, 0.25) for step in range(200) for slot in range(8)]
    empty = tmp_path / "empty.cond.safetensors"
    empty.write_bytes(save({"cap_feats": torch.zeros(1, 64)}))
    runs = {}
    for name, extra in (("plain", []), ("dropout", ["--caption-dropout", "0.9", "--empty-conditioning", str(empty)])):
        done = launch(world, f"run-cd-{name}", "--steps", "2", "--checkpoint-every", "2", *extra)
        assert done.returncode == 0, done.stderr
        runs[name] = trainable(world / f"run-cd-{name}" / "checkpoint-2")
    # same data, noise and seed: only the captions differ, and with them the trained weights
    assert any(not torch.equal(runs["plain"][k], runs["dropout"][k]) for k in runs["plain"])


def test_print_config_round_trips(world, tmp_path):
    shown = subprocess.run([sys.executable, LAUNCH, "--config", str(REPO / "training" / "configs" / "tiny_cpu.toml"),
                            "--steps", "7", "--print-config"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "steps = 7" in shown.stdout and 'policy = "paper"' in shown.stdout
    (tmp_path / "again.toml").write_text(shown.stdout)
    again = subprocess.run([sys.executable, LAUNCH, "--config", str(tmp_path / "again.toml"), "--print-config"],
                           capture_output=True, text=True, timeout=120)
    assert again.stdout == shown.stdout
    shutil.rmtree(tmp_path / "again.toml", ignore_errors=True)


def test_trainer_takes_a_high_resolution_conversion_unchanged(world, tmp_path):
    from l2p.hr_convert import l2p_to_variant

    model = tmp_path / "l2p-4k-init.safetensors"
    save_safetensors_atomic(l2p_to_variant(official_state_dict(*tiny_l2p(seed=0)), "4k"), str(model))
    make_dataset(tmp_path / "ds128", n=2, size=128)
    done = subprocess.run([sys.executable, LAUNCH, "--model", str(model), "--dataset", str(tmp_path / "ds128"),
                           "--output-dir", str(tmp_path / "run4k"), "--steps", "1", "--batch-size", "2",
                           "--policy", "paper"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with safe_open(str(tmp_path / "run4k" / "l2p-trained.safetensors"), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    check_l2p(sd)
    assert "local_decoder.enc0.0.weight" in sd and sd["all_x_embedder.64-1.weight"].shape[1] == 64 * 64 * 3


def test_frozen_weights_in_bf16_train_and_export_the_checkpoints_values(world):
    """frozen_dtype bf16 halves the frozen weights' memory; the export still carries the file's own values."""
    done = launch(world, "run-bf16", "--steps", "2", "--mixed-precision", "bf16", "--frozen-dtype", "bf16",
                  "--checkpoint-every", "0")
    assert done.returncode == 0, done.stderr
    assert all(math.isfinite(e["loss"]) for e in events(done.stdout) if e["event"] == "log")
    export = load_file(str(world / "run-bf16" / "l2p-trained.safetensors"))
    base = load_file(str(world / "model.safetensors"))
    frozen = "context_refiner.0.attention.to_q.weight"  # outside the paper policy
    assert export[frozen].dtype == base[frozen].dtype and torch.equal(export[frozen], base[frozen])
    trained = "local_decoder.out_conv.weight"
    assert not torch.equal(export[trained], base[trained])
    refused = launch(world, "run-bf16-no", "--frozen-dtype", "bf16", "--mixed-precision", "no")
    assert refused.returncode == 2 and "frozen_dtype bf16 needs mixed_precision bf16" in refused.stderr


def test_the_ema_warms_up_from_its_first_update(world):
    """The EMA's first update takes 90% of the trained weights (decay (1 + 0) / (10 + 0) = 0.1), not 1 - 0.99 of
    them: a run's EMA does not carry its starting weights for hundreds of steps."""
    from training.trainer import ema_decay_at

    done = launch(world, "run-ema", "--steps", "1", "--checkpoint-every", "1", "--ema-decay", "0.99")
    assert done.returncode == 0, done.stderr
    checkpoint = world / "run-ema" / "checkpoint-1"
    ema, trained = load_file(str(checkpoint / "ema.safetensors")), trainable(checkpoint)
    base = load_file(str(world / "model.safetensors"))
    decay = ema_decay_at(0.99, 0)
    assert decay == 0.1 and ema.keys() == trained.keys()
    moved = [k for k in ema if not torch.equal(trained[k], base[k])]
    assert moved
    for k in moved:
        assert torch.allclose(ema[k], decay * base[k] + (1 - decay) * trained[k], atol=1e-6), k
    assert ema_decay_at(0.99, 10_000) == 0.99


def test_new_weights_train_at_their_own_learning_rate(world):
    """lr_new moves the Detailer Head and the pixel embedder at its rate while the pretrained blocks follow lr
    (AdamW's first step moves a weight by about its rate)."""
    done = launch(world, "run-lr-new", "--steps", "1", "--checkpoint-every", "1", "--lr", "1e-9",
                  "--lr-new", "1e-3", "--weight-decay", "0")
    assert done.returncode == 0, done.stderr
    trained, base = trainable(world / "run-lr-new" / "checkpoint-1"), load_file(str(world / "model.safetensors"))
    change = {k: (trained[k] - base[k]).abs().max().item() for k in trained}
    new = {k: v for k, v in change.items() if k.startswith(("local_decoder.", "all_x_embedder.", "x_embedder."))}
    old = {k: v for k, v in change.items() if k not in new}
    assert new and old  # the paper policy trains both kinds
    assert max(new.values()) > 1e-4 and max(old.values()) < 1e-7, (max(new.values()), max(old.values()))


def test_a_resume_that_changes_the_optimizer_groups_is_refused_in_one_line(world):
    """The group layout is part of a run (lr_new on or off): resuming without it is refused before step 2, and
    resuming with it continues."""
    first = launch(world, "run-lr-resume", "--steps", "1", "--checkpoint-every", "1", "--lr-new", "1e-3")
    assert first.returncode == 0, first.stderr
    refused = launch(world, "run-lr-resume", "--steps", "2", "--resume", "latest")
    assert refused.returncode != 0
    assert "parameter group(s), this run makes 1: resume with the lr_new it was started with" in refused.stderr
    assert not any(e["event"] == "log" for e in events(refused.stdout))
    more = launch(world, "run-lr-resume", "--steps", "2", "--resume", "latest", "--lr-new", "1e-3")
    assert more.returncode == 0, more.stderr
    assert [e["step"] for e in events(more.stdout) if e["event"] == "log"] == [2]
