"""The trainer as a user meets it when something is wrong: ``python training/launch.py`` (a subprocess) on tiny
datasets with one defect each. A bad config or dataset is refused before step 1 with exit code 2 and one stderr
line that names what is wrong and what to do (no traceback); an item that only fails to decode mid-run is
skipped and counted; ``--help`` documents every option with its default."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save

from l2p.format.tensor_io import save_safetensors_atomic
from l2p.pixel_dit import official_state_dict
from l2p.tiny import tiny_l2p
from tests.test_trainer import make_dataset
from training.contract import TrainConfig, error_line

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = str(REPO / "training" / "launch.py")
N = 4  # items per dataset: with batch 2, two steps are one whole epoch


@pytest.fixture(scope="module")
def world(module_tmp: pathlib.Path) -> pathlib.Path:
    root = module_tmp
    make_dataset(root / "ds", n=N)
    save_safetensors_atomic(official_state_dict(*tiny_l2p(seed=0)), str(root / "model.safetensors"),
                            metadata={"l2p.policy": "paper"})
    return root


def broken(world: pathlib.Path, name: str, *damage: tuple[str, bytes | None]) -> pathlib.Path:
    """A copy of the good dataset with files replaced (bytes) or deleted (None)."""
    folder = world / name
    if not folder.exists():
        make_dataset(folder, n=N)
        for file, data in damage:
            if data is None:
                (folder / file).unlink()
            else:
                (folder / file).write_bytes(data)
    return folder


def launch(world: pathlib.Path, *args: str, dataset: pathlib.Path | None = None,
           out: str = "run") -> subprocess.CompletedProcess:
    argv = [sys.executable, LAUNCH, "--model", str(world / "model.safetensors"),
            "--dataset", str(dataset or world / "ds"), "--output-dir", str(world / out),
            "--batch-size", "2", "--steps", "2", "--mixed-precision", "no", *args]
    return subprocess.run(argv, cwd=world, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def assert_refused(done: subprocess.CompletedProcess, *words: str) -> str:
    """Exit code 2, nothing trained (no event on stdout), and one stderr line with the words, no traceback."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    message = error_line(lines[0])
    assert message is not None, lines[0]
    for word in words:
        assert word in message, (word, message)
    assert '"event"' not in done.stdout, done.stdout
    return message


def truncated_png(world: pathlib.Path) -> bytes:
    """A PNG whose header (signature, size) reads fine but whose pixel data is cut off."""
    data = (world / "ds" / "00001.png").read_bytes()
    return data[:len(data) // 2]


def test_help_lists_every_option_with_its_description_and_default():
    done = subprocess.run([sys.executable, LAUNCH, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    blocks = {}
    for block in re.split(r"\n(?=  -)", done.stdout.split("\noptions:", 1)[1].split("\n\n", 1)[0]):
        if words := block.split():
            blocks[words[0]] = " ".join(words)
    fields = [f for f in dataclasses.fields(TrainConfig) if f.name != "extra"]  # extra: a TOML table only
    flags = {"--" + f.name.replace("_", "-") for f in fields}
    actions = {"--config", "--print-config", "--print-dataset", "--cache-text", "--accelerate-config"}
    assert set(blocks) == flags | {"-h,"} | actions and len(flags) >= 32, sorted(blocks)
    assert all(len(blocks[a].split()) > 4 for a in actions)
    for f in fields:
        flag = "--" + f.name.replace("_", "-")
        assert flag in blocks, f"{flag} missing from --help"
        text = blocks[flag]
        default = f.default
        shown = ("true" if default else "false") if isinstance(default, bool) else \
            repr(default) if isinstance(default, (int, float)) else json.dumps(default)
        assert text.endswith(f"(default: {shown})"), (flag, text)
        description = text[len(flag):-len(f"(default: {shown})")].split(None, 1)[1].strip()  # after the metavar
        assert len(description.split()) >= 3 and description == " ".join(f.metadata["help"].split()), (flag, text)
    assert "extra" in done.stdout and "Exit codes" in done.stdout


@pytest.mark.parametrize(("args", "toml", "words"), [
    ([], 'steps = "ten"\n', ['steps = "ten"', "whole number", "steps = 1000"]),
    ([], "lr = true\n", ["lr = true", "must be a number"]),
    ([], "lr = nan\n", ["lr = nan", "finite"]),
    (["--steps", "ten"], "", ["--steps", "'ten'", "--help"]),
    (["--shuffle", "maybe"], "", ["--shuffle", "'maybe' is not true or false"]),
    (["--max-pixels", "0"], "", ["max_pixels is 0", "at least 1"]),
])
def test_a_wrongly_typed_value_is_refused_in_one_line(world, tmp_path, args, toml, words):
    if toml:
        (tmp_path / "run.toml").write_text(toml)
        args = ["--config", str(tmp_path / "run.toml"), *args]
    assert_refused(launch(world, *args), *words)
    assert not (world / "run").exists()


def test_an_unwritable_output_folder_is_refused_before_any_work(world):
    (world / "a-file").write_text("not a folder")
    message = assert_refused(launch(world, out="a-file/run"), "output_dir", "cannot be written", "is a file",
                             "--output-dir")
    assert str(world / "a-file") in message
    (world / "a-folder").mkdir(exist_ok=True)
    assert_refused(launch(world, "--export-path", str(world / "a-folder")), "export_path", "is a folder")
    assert not (world / "run").exists()


@pytest.mark.parametrize(("name", "damage", "reason"), [
    ("corrupt-png", [("00001.png", b"not a png at all")], "not a readable image: corrupt or not an image"),
    ("missing-png", [("00002.png", None)], "image missing"),
    ("corrupt-cond", [("00000.cond.safetensors", b"\x00" * 3)],
     "its conditioning 00000.cond.safetensors: not a safetensors file"),
    ("no-key-cond", [("00001.cond.safetensors", save({"feats": torch.zeros(3, 64)}))],
     "its conditioning 00001.cond.safetensors: no 'cap_feats' tensor in it"),
    ("narrow-cond", [("00002.cond.safetensors", save({"cap_feats": torch.zeros(5, 32)}))],
     "its conditioning holds 32-wide caption features, the model takes 64 (this conditioning comes from another "
     "text encoder"),
])
def test_a_bad_item_is_skipped_and_counted_before_step_one(world, name, damage, reason):
    """Bad items are the rule in folders users bring: skipped with a count and the reason, never fatal."""
    done = launch(world, "--log-every", "1", dataset=broken(world, name, *damage), out=f"run-{name}")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert events[0]["event"] == "dataset" and events[0]["skipped"] == 1 and events[0]["items"] == N - 1
    assert events[1]["event"] == "start" and events[1]["items"] == N - 1
    warnings = [line for line in re.split(r"[\r\n]", done.stderr) if "warning:" in line]
    assert len(warnings) == 1 and "1 of 4 items skipped" in warnings[0] and reason in warnings[0], done.stderr
    listed = subprocess.run([sys.executable, LAUNCH, "--dataset", str(world / name), "--model",
                             str(world / "model.safetensors"), "--print-dataset"], capture_output=True, text=True,
                            timeout=300)
    assert listed.returncode == 0 and reason in listed.stdout and "3 usable, 1 skipped" in listed.stdout, listed


def test_missing_conditioning_without_a_text_encoder_says_how_to_cache_it(world):
    folder = broken(world, "missing-cond", ("00003.cond.safetensors", None))
    assert_refused(launch(world, dataset=folder), f"dataset {folder}", "1 items have no cached text conditioning",
                   "first 00003.png", "--text-encoder FILE", "--cache-text")
    assert not (world / "run").exists()


def test_a_dataset_with_no_usable_item_is_refused_in_one_line(world):
    folder = broken(world, "all-bad", *[(f"{i:05d}.png", b"junk") for i in range(N)])
    assert_refused(launch(world, dataset=folder), f"dataset {folder}: none of its 4 items is usable (most often: "
                   "not a readable image: corrupt or not an image, 4); first 00000.png")
    assert not (world / "run").exists()


def test_an_empty_dataset_says_how_to_render_one(world):
    (world / "empty").mkdir(exist_ok=True)
    assert_refused(launch(world, dataset=world / "empty"), "has no items", "l2p_make_dataset",
                   "python -m dataset.make --server", "images with .txt captions")


def test_an_item_that_fails_to_decode_mid_run_is_skipped_and_counted(world):
    folder = broken(world, "truncated", ("00001.png", truncated_png(world)))
    done = launch(world, "--log-every", "1", dataset=folder, out="run-skip")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert events[1]["event"] == "start" and events[1]["items"] == N  # the header was fine: not skipped up front
    assert events[-1] == {"event": "done", "step": 2, "export": str(world / "run-skip" / "l2p-trained.safetensors"),
                          "lora": "", "skipped": 1}
    assert all(math.isfinite(e["loss"]) for e in events if e["event"] == "log")
    warnings = [line for line in re.split(r"[\r\n]", done.stderr) if "warning:" in line]
    assert len(warnings) == 1 and "item 00001 skipped: 00001.png cannot be decoded" in warnings[0], done.stderr
    assert json.loads((world / "run-skip" / "training_complete.json").read_text())["skipped"] == 1


def test_a_bucket_with_no_readable_item_left_stops_with_one_error_line(world):
    data = truncated_png(world)
    folder = broken(world, "all-truncated", *[(f"{i:05d}.png", data) for i in range(N)])
    done = launch(world, dataset=folder, out="run-none")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    message = error_line(last)
    assert message is not None and "none of the 4 items of size 32x32 loads" in message, last
    assert "first 00000" in message and "replace or delete the broken files" in message
