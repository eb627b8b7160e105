"""Distributed training as users launch it, on this CPU (gloo), tiny models (issue 18.3):

- two machines: two ``accelerate launch`` processes on this host as machine rank 0 and 1 equal one process with
  the same global batch (the DDP tolerance of tests/test_trainer.py);
- FSDP through an accelerate config file: trains with the trainable set sharded, equals one process as well,
  resumes after SIGKILL to the same weights as an uninterrupted run, and exports a model that samples;
- one process of a two-machine run killed mid-run: the other stops within a bounded time with one
  ``error:`` line, and ``--resume latest`` on both machines continues from the newest complete checkpoint;
- DeepSpeed ZeRO-2: the shipped accelerate config is valid (the package does not train on a CPU: GPU-only).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import tomllib

import pytest
import torch
from safetensors.torch import load_file

from l2p.format.tensor_io import save_safetensors_atomic
from l2p.pixel_dit import official_state_dict
from l2p.sampling import euler_sample
from l2p.schedule import sampling_sigmas
from l2p.tiny import tiny_l2p
from tests.test_trainer import LR, assert_same_training, make_dataset
from training.contract import error_line
from training.model import load_model

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = str(REPO / "training" / "launch.py")
ACCELERATE = str(pathlib.Path(sys.executable).parent / "accelerate")
CONFIGS = REPO / "training" / "configs" / "accelerate"


@pytest.fixture(scope="module")
def world(module_tmp: pathlib.Path) -> pathlib.Path:
    root = module_tmp
    make_dataset(root / "ds")
    save_safetensors_atomic(official_state_dict(*tiny_l2p(seed=0)), str(root / "model.safetensors"),
                            metadata={"l2p.policy": "paper"})
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(world: pathlib.Path, out: str, *extra: str) -> list[str]:
    return [LAUNCH, "--model", str(world / "model.safetensors"), "--dataset", str(world / "ds"), "--output-dir",
            str(world / out), "--log-every", "1", "--lr", str(LR), "--mixed-precision", "no", *extra]


def start(argv: list[str], world: pathlib.Path, log: str) -> subprocess.Popen:
    """A launch in its own process group (so a test can kill a whole machine), stderr to a file."""
    err = open(world / f"{log}.stderr", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(argv, cwd=world, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(proc: subprocess.Popen, world: pathlib.Path, log: str, timeout: float = 600) -> list[dict]:
    out, _ = proc.communicate(timeout=timeout)
    stderr = (world / f"{log}.stderr").read_text()
    assert proc.returncode == 0, stderr[-3000:]
    return [json.loads(x) for x in out.splitlines() if x.startswith("{")]


def machines(world: pathlib.Path, out: str, *extra: str) -> list[subprocess.Popen]:
    """Two machines (ranks 0 and 1) of one process each on this host, rendezvous on 127.0.0.1."""
    port = str(free_port())
    return [start([ACCELERATE, "launch", "--multi_gpu", "--num_machines", "2", "--machine_rank", str(rank),
                   "--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", port,
                   "--mixed_precision", "no", "--dynamo_backend", "no", *train_args(world, out, *extra)],
                  world, f"{out}-m{rank}") for rank in (0, 1)]


def single(world: pathlib.Path, out: str, *extra: str) -> list[dict]:
    return finish(start([sys.executable, *train_args(world, out, *extra)], world, out), world, out)


def training_process(rank: int) -> int:
    """The pid of the trainer process of this global rank (a worker that accelerate's agent started)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and any(c.endswith(b"launch.py") for c in cmd) and \
                not any(c.endswith(b"accelerate") for c in cmd):
            return int(pid)
    raise AssertionError(f"no training process of rank {rank} is running")


def trainable(path: pathlib.Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "trainable.safetensors"))


@pytest.fixture(scope="module")
def one_process(world) -> list[dict]:
    """The reference: one process, global batch 2, 2 steps."""
    return single(world, "run-1p", "--steps", "2", "--batch-size", "2", "--checkpoint-every", "0")


def test_two_machines_equal_one_process(world, one_process):
    procs = machines(world, "run-2m", "--steps", "2", "--batch-size", "1", "--checkpoint-every", "0")
    runs = [finish(p, world, f"run-2m-m{r}") for r, p in enumerate(procs)]
    start_event = next(e for e in runs[0] if e["event"] == "start")
    assert (start_event["processes"], start_event["global_batch"], start_event["sharding"]) == (2, 2, "ddp")
    assert not runs[1]  # only the main process of the whole run reports
    worst = assert_same_training(trainable(world / "run-1p" / "checkpoint-2"),
                                 trainable(world / "run-2m" / "checkpoint-2"), 2)
    loss1 = [e["loss"] for e in one_process if e["event"] == "log"]
    loss2 = [e["loss"] for e in runs[0] if e["event"] == "log"]
    assert loss1 == pytest.approx(loss2, rel=1e-5)
    print(f"[multi-node] max |two machines - one process| over trainable weights after 2 steps: {worst:.2e}")


def fsdp(world: pathlib.Path, out: str, *extra: str) -> subprocess.Popen:
    return start([ACCELERATE, "launch", "--config_file", str(CONFIGS / "fsdp_2proc.yaml"), "--main_process_port",
                  str(free_port()), *train_args(world, out, "--batch-size", "1", *extra)], world, out)


def test_fsdp_trains_equals_one_process_resumes_after_sigkill_and_exports(world, one_process):
    events = finish(fsdp(world, "run-fsdp", "--steps", "2", "--checkpoint-every", "0"), world, "run-fsdp")
    start_event = next(e for e in events if e["event"] == "start")
    assert (start_event["processes"], start_event["sharding"]) == (2, "fsdp")
    worst = assert_same_training(trainable(world / "run-1p" / "checkpoint-2"),
                                 trainable(world / "run-fsdp" / "checkpoint-2"), 2)
    print(f"[fsdp] max |FSDP - one process| over trainable weights after 2 steps: {worst:.2e}")

    steps = ["--steps", "4", "--checkpoint-every", "1", "--checkpoints-total-limit", "0", "--ema-decay", "0.5"]
    finish(fsdp(world, "run-fsdp-whole", *steps), world, "run-fsdp-whole")
    killed = fsdp(world, "run-fsdp-killed", *steps)
    marker = world / "run-fsdp-killed" / "checkpoint-2" / "COMPLETE"
    deadline = time.monotonic() + 300
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), (world / "run-fsdp-killed.stderr").read_text()[-3000:]
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    resumed = finish(fsdp(world, "run-fsdp-killed", *steps, "--resume", "latest"), world, "run-fsdp-killed")
    assert resumed[1]["event"] == "resumed" and resumed[1]["step"] >= 2
    for name in ("trainable.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a = load_file(str(world / "run-fsdp-whole" / "checkpoint-4" / name))
        b = load_file(str(world / "run-fsdp-killed" / "checkpoint-4" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name

    loaded = load_model(str(world / "run-fsdp-killed" / "l2p-trained.safetensors"))
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cap = load_file(str(world / "ds" / "00000.cond.safetensors"))["cap_feats"]
    with torch.no_grad():
        image = euler_sample(lambda x, s: loaded.model(x, s, [cap]), noise, sampling_sigmas(3, 3.0))
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all() and image.std() > 0


def test_a_killed_machine_stops_the_other_with_one_line_and_both_resume(world):
    args = ["--steps", "200", "--batch-size", "1", "--checkpoint-every", "2", "--process-group-timeout-s", "60"]
    procs = machines(world, "run-kill", *args)
    marker = world / "run-kill" / "checkpoint-4" / "COMPLETE"
    deadline = time.monotonic() + 300
    while not marker.exists() and all(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), (world / "run-kill-m0.stderr").read_text()[-3000:]
    worker = training_process(rank=1)
    os.kill(worker, signal.SIGKILL)  # the trainer of machine 1 dies (its agent then reports the failure)
    killed_at = time.monotonic()
    procs[0].communicate(timeout=120)
    stopped_after = time.monotonic() - killed_at
    procs[1].wait()
    stderr = (world / "run-kill-m0.stderr").read_text()
    lines = [error_line(x) for x in stderr.splitlines() if error_line(x) is not None]
    assert procs[0].returncode != 0 and stopped_after < 60, (procs[0].returncode, stopped_after)
    assert len(lines) == 1 and "another process of this distributed run stopped" in lines[0], stderr[-3000:]
    assert "--resume latest" in lines[0]
    print(f"[kill] the surviving machine stopped {stopped_after:.1f} s after its peer was killed")

    newest = max(int(p.name.split("-")[1]) for p in (world / "run-kill").glob("checkpoint-*/COMPLETE")
                 for p in [p.parent])
    procs = machines(world, "run-kill", "--steps", str(newest + 2), "--batch-size", "1", "--checkpoint-every", "2",
                     "--resume", "latest")
    runs = [finish(p, world, f"run-kill-m{r}") for r, p in enumerate(procs)]
    assert runs[0][1] == {"event": "resumed", "step": newest, "path": str(world / "run-kill" / f"checkpoint-{newest}")}
    assert runs[0][-1]["event"] == "done" and runs[0][-1]["step"] == newest + 2


def test_deepspeed_zero2_config_is_valid():
    """DeepSpeed does not train on a CPU (it needs a CUDA or XPU accelerator), so it is GPU-only and untested
    here; its accelerate config is checked to say what the README says it does."""
    import yaml

    config = yaml.safe_load((CONFIGS / "deepspeed_zero2.yaml").read_text())
    assert config["distributed_type"] == "DEEPSPEED"
    ds = config["deepspeed_config"]
    assert ds["zero_stage"] == 2 and ds["offload_optimizer_device"] in ("none", "cpu")
    assert ds["gradient_accumulation_steps"] == 1 and ds["gradient_clipping"] == 1.0  # the trainer's defaults
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(CONFIGS / "deepspeed_zero2.yaml"))
    assert loaded.distributed_type == "DEEPSPEED" and loaded.deepspeed_config["zero_stage"] == 2


SCENARIOS = {  # training/configs/<toml>: (the accelerate config it is launched with, world size, global batch)
    "tiny_cpu.toml": (None, 1, 2),
    "zimage_turbo_1k_1gpu_24gb.toml": (None, 1, 1),
    "zimage_turbo_1k.toml": ("fsdp_8gpu.yaml", 8, 8),
    "zimage_turbo_1k_2x8.toml": ("multinode_2x8.yaml", 16, 16),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_each_shipped_config_names_its_effective_launch(name):
    assert sorted(p.name for p in (REPO / "training" / "configs").glob("*.toml")) == sorted(SCENARIOS)
    accelerate_config, world, global_batch = SCENARIOS[name]
    args = [sys.executable, LAUNCH, "--config", str(REPO / "training" / "configs" / name), "--print-config"]
    if accelerate_config:
        args += ["--accelerate-config", str(CONFIGS / accelerate_config)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    values = tomllib.loads(done.stdout)
    assert first.startswith(f"# effective launch: world size {world} ") and "warning" not in done.stdout, first
    assert f"per-device batch {values['batch_size']}," in first and first.endswith(f"global batch {global_batch}")


def test_a_deepspeed_config_that_disagrees_with_the_run_is_named(tmp_path):
    done = subprocess.run([sys.executable, LAUNCH, "--config", str(REPO / "training" / "configs" / "tiny_cpu.toml"),
                           "--gradient-accumulation-steps", "4", "--accelerate-config",
                           str(CONFIGS / "deepspeed_zero2.yaml"), "--print-config"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0 and "# warning: deepspeed gradient_accumulation_steps 1 differs from this run's 4" \
        in done.stdout, done.stdout + done.stderr
