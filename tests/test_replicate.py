"""The shapes-world replication (bench/replicate) at toy budgets, and the demo nodes it relies on.

The smoke run goes through every stage of the real pipeline: VAE and source training, sampling and
scoring, the pack's conversion CLI (the aligned conversion too), the synthetic dataset rendered by the source
through a real headless ComfyUI (its own server), every training run of the design with training/launch.py,
validation curves, the CFG and scratch-rate choices, the test split, the flow loss per sigma and the report.
Its numbers mean nothing at these budgets; that every stage runs does.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from bench.replicate.config import BUDGETS, FULL, RUNS, SCRATCH_LRS, SMOKE, budget_dict, results_paths
from bench.replicate.models import bake_latent_norm, new_vae
from dataset.folder import read_metadata
from l2p.format.tensor_io import save_safetensors_atomic
from shapes_world.text_encoder import load_text_encoder

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(module_tmp: pathlib.Path) -> pathlib.Path:
    cache = module_tmp
    proc = subprocess.run([sys.executable, "-m", "bench.replicate", "--smoke", "--cache", str(cache)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return cache / SMOKE.name


def test_smoke_pipeline_runs_every_stage(smoke):
    report = json.loads((smoke / "results" / "report.json").read_text())
    stages = {"world", "vae", "source", "source_eval", "convert", "data_syn", "distill", "flow"}
    stages |= {f"{kind}_{run}" for run in SMOKE.runs for kind in ("train", "eval")}
    stages |= {"eval_start_convert", "eval_start_distill"}  # step 0, sampled once per start model
    assert stages <= set(report["seconds"])
    # the default --lanes 2: the scratch runs ran in the second process, so this one found them cached
    assert report["lanes"] == 2
    lane_log = (smoke / "lane-scratch.log").read_text()
    assert "[train_scratch_s1] running" in lane_log and "train_scratch_s1" in report["cached"]
    assert not any(name.startswith("train_scratch") for name in report["seconds"] if name not in report["cached"])
    assert report["data_syn"]["items"] == SMOKE.data_items
    assert "tokens aligned at block 1" in report["distill"]["summary"]
    assert report["scratch_lr"]["chosen"] in SCRATCH_LRS
    assert report["runs"]["scratch_s1"]["lr"] == report["scratch_lr"]["chosen"]
    for run in SMOKE.runs:
        r = report["runs"][run]
        steps = [p["step"] for p in r["curve"]]
        last = SMOKE.train_steps + (SMOKE.scratch_extra_steps if RUNS[run].scratch else 0)
        assert steps == list(range(SMOKE.eval_every if RUNS[run].scratch else 0, last + 1, SMOKE.eval_every)), run
        assert [p["compute"] - p["step"] for p in r["curve"]] == [r["start_compute"]] * len(steps)
        assert r["chosen"]["step"] in steps and r["chosen"]["cfg"] in SMOKE.cfg_choices
        for metric in ("geneval", "colour_level"):
            assert 0.0 <= r["test"][metric]["overall"] <= 1.0
            assert len(r["test"]["hits"][metric]) == SMOKE.test_prompts
        assert len(r["flow"]["caption"]) == len(r["flow"]["empty"]) == SMOKE.flow_sigmas
    assert report["runs"]["aligned"]["start_compute"] == SMOKE.scratch_extra_steps
    verdicts = report["verdicts"]
    assert len(verdicts["retention"]["value"]) == 3 and isinstance(verdicts["above_scratch"]["pass"], bool)
    text = (smoke / "results" / "RESULTS.md").read_text()
    for heading in ("Design and pass criteria (stated before the run)", "## Verdicts", "## Test split",
                    "## Validation curves", "## Is the trunk used?", "## Stage timings"):
        assert heading in text, heading
    grid = Image.open(smoke / "results" / "grid.png")
    assert grid.width > (3 + len(SMOKE.runs)) * SMOKE.size  # ground truth, VAE, source and every run


def test_synthetic_dataset_conditioning_is_the_text_encoder_output(smoke):
    """L2PDemoTextEncode inside ComfyUI wrote each item's conditioning: it equals the plain-torch encoder's."""
    encoder = load_text_encoder(str(smoke / "files" / "l2p-shapes-te.safetensors"))
    (folder,) = smoke.glob("data_syn-*")
    rows = read_metadata(str(folder))
    assert len(rows) == SMOKE.data_items
    for row in rows.values():
        stored = safetensors.torch.load_file(str(folder / row["conditioning"]))["cap_feats"]
        with torch.no_grad():
            expected = encoder([row["text"]])[0]
        assert stored.shape == expected.shape
        torch.testing.assert_close(stored, expected, atol=1e-5, rtol=1e-5)
        image = np.asarray(Image.open(folder / row["file_name"]))
        assert image.shape == (SMOKE.size, SMOKE.size, 3)


def test_latent_lora_transfer_bench_runs_on_the_smoke_pipeline(smoke):
    """bench/lora_transfer on the smoke run's cached stages: a latent LoRA trained on the source, selected for
    the L2P model by the node's own rule, and every model scored on the same held-out prompts."""
    proc = subprocess.run([sys.executable, "-m", "bench.lora_transfer", "--smoke", "--cache", str(smoke.parent)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[lora_crimson] done" in proc.stdout and "[train_published] cached" in proc.stdout
    # 3 blocks, the first and last trained by the paper policy: the default keeps A, B and alpha of the 7 linear
    # layers of the frozen middle block; "all" keeps those of every block.
    assert "kept 21 LoRA tensors on layers.1; dropped 42 (trained by the paper policy)" in proc.stdout
    assert "kept 63 LoRA tensors on layers.0-2" in proc.stdout
    scores = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(scores) == {"source", "source + LoRA", "L2P", "L2P + LoRA (frozen blocks)", "L2P + LoRA (all blocks)",
                           'L2P, "red"'}
    assert all(0.0 <= v <= 1.0 for s in scores.values() for v in s.values())


def test_demo_vae_loader_decodes_like_diffusers(comfy_server, tmp_path):
    """ComfyUI's own AutoencoderKL, built by L2PDemoVAELoader from a narrow diffusers VAE, decodes the same."""
    torch.manual_seed(0)
    vae = new_vae().train(False)
    with torch.no_grad():
        raw = vae.encode(torch.rand(4, 3, 64, 64) * 2 - 1).latent_dist.mean
    bake_latent_norm(vae, raw)
    save_safetensors_atomic(dict(vae.state_dict()), str(comfy_server.models_dir / "vae" / "shapes-vae.safetensors"))
    z = torch.randn(1, 16, 8, 8) * 2.77 + 0.1159
    safetensors.torch.save_file({"latent_tensor": z, "latent_format_version_0": torch.tensor([])},
                                str(comfy_server.input_dir / "test-shapes.latent"))
    graph = {
        "1": {"class_type": "LoadLatent", "inputs": {"latent": "test-shapes.latent"}},
        "2": {"class_type": "L2PDemoVAELoader", "inputs": {"vae_name": "shapes-vae.safetensors"}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "shapes_vae"}},
    }
    result = comfy_server.run(graph, timeout=120)
    assert result.ok, result.describe()
    (png,) = comfy_server.output_images(result)
    with torch.no_grad():
        want = ((vae.decode(z).sample.clamp(-1, 1) + 1) * 127.5)[0].permute(1, 2, 0).numpy()
    got = np.asarray(Image.open(png)).astype(np.float32)
    assert np.abs(got - want).max() <= 1.5


def test_demo_nodes_refuse_wrong_files_in_one_line(comfy_server):
    sd = {"decoder.conv_in.weight": torch.zeros(1)}
    save_safetensors_atomic(sd, str(comfy_server.models_dir / "vae" / "not-a-vae.safetensors"))
    save_safetensors_atomic(sd, str(comfy_server.models_dir / "text_encoders" / "not-a-te.safetensors"))
    for graph, needle in (
        ({"1": {"class_type": "L2PDemoVAELoader", "inputs": {"vae_name": "not-a-vae.safetensors"}},
          "2": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 0]}},
          "3": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
          "4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}, "not a diffusers AutoencoderKL"),
        ({"1": {"class_type": "L2PDemoTextEncode", "inputs": {"text_encoder": "not-a-te.safetensors", "text": "x"}},
          "2": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["1", 0]}},
          "3": {"class_type": "L2PDatasetWriter", "inputs": {"images": ["4", 0], "prompt": "x", "seed": 0,
                                                             "index": 0, "folder": "refuse_test",
                                                             "conditioning": ["2", 0]}},
          "4": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0}}},
         "not a shapes-world demo text encoder"),
    ):
        result = comfy_server.run(graph, timeout=60)
        assert not result.ok
        message = result.error_message or ""
        assert needle in message and "\n" not in message.strip(), message
    assert comfy_server.running


def _scores(hit_rate: float, n: int = 120, seed: int = 0) -> dict:
    from shapes_world.scene import TASKS

    rng = np.random.default_rng(seed)
    hits = (rng.random(n) < hit_rate).tolist()
    return {"hits": {"colour_level": hits, "geneval": hits}, "tasks": [TASKS[i % len(TASKS)] for i in range(n)]}


def _report(aligned: float, scratch: float, source: float = 0.5) -> dict:
    runs = {}
    for name, rate, start in (("aligned", aligned, 4), ("aligned_s1", aligned, 4), ("scratch_lr0.001", scratch, 0),
                              ("scratch_s1", scratch, 0)):
        curve = [{"compute": c, **_scores(rate, seed=c + len(runs))} for c in (start, 8, 12)]
        runs[name] = {"test": _scores(rate, seed=len(runs)), "curve": curve}
    return {"source_eval": {"test": _scores(source, seed=9)}, "runs": runs,
            "scratch_lr": {"run": "scratch_lr0.001"}}


def test_verdicts_follow_the_pre_stated_criteria():
    """Retention needs >= 0.9 with its lower bound >= 0.8; above scratch needs two matched points whose interval is
    above 0; equal models are "no difference", not a pass."""
    from bench.replicate.report import verdicts

    good = verdicts(_report(aligned=0.6, scratch=0.1))
    assert good["retention"]["pass"] and good["retention"]["value"][1] >= 0.8
    assert good["above_scratch"]["pass"] and sorted(good["above_scratch"]["above"]) == [8, 12]  # 4: scratch has none
    same = verdicts(_report(aligned=0.3, scratch=0.3))
    assert not same["retention"]["pass"] and not same["above_scratch"]["pass"]
    low, high = same["test_difference"][1:]
    assert low < 0 < high


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_committed_report_is_its_budgets_and_its_recorded_numbers(name):
    """Each design's committed RESULTS.md is what the current report code writes from its report.json, and the
    recorded budget is the code's: a budget edited without a rerun, or a report edited by hand, fails here."""
    from bench.replicate.report import recorded_markdown

    budget = BUDGETS[name]
    folder, md = results_paths(budget)
    recorded = json.loads((folder / "report.json").read_text(encoding="utf-8"))["budget"]
    assert recorded == json.loads(json.dumps(budget_dict(budget))), f"{name}: rerun it or keep its old budget"
    path, text = recorded_markdown(budget)
    assert path == md and md.read_text(encoding="utf-8") == text, f"python -m bench.replicate.report --budget {name}"
    assert f"python -m bench.replicate{'' if budget == FULL else f' --budget {name}'}`" in text.splitlines()[0]


def test_cost_bench_projects_the_training_stages_from_measured_steps():
    """``python -m bench.replicate.cost`` times the heavy loops and projects the report's stage total from them."""
    proc = subprocess.run([sys.executable, "-m", "bench.replicate.cost", "--budget", "full", "--steps", "3",
                           "--reps", "1", "--lanes", "1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    head = next(line for line in lines if line.startswith("full: VAE step"))
    vae_s, source_s = (float(head.split(kind)[1].split(" s ")[0]) for kind in ("VAE step ", "source step "))
    assert vae_s > 0 and source_s > 0
    # a stage is steps x seconds per step: 2500 VAE steps, 3000 source steps at the full budget (the printed
    # seconds are rounded to 1 ms, so the printed minutes may differ by up to steps x 0.5 ms)
    vae_min, source_min = (float(part.split(" min")[0]) for part in head.split("-> stage ")[1:])
    assert abs(vae_min - vae_s * 2500 / 60) <= 0.05 + 2500 * 0.0005 / 60
    assert abs(source_min - source_s * 3000 / 60) <= 0.05 + 3000 * 0.0005 / 60
    assert sum(line.startswith("sampling, CFG ") for line in lines) == 2
    assert any(line.startswith("stages as recorded, one after another: ") for line in lines)
    # the lanes comparison: one round, both ratios measured (positive; what they are depends on the machine)
    (lanes,) = [line for line in lines if line.startswith("lanes, round ")]
    ratios = [float(part.split("x ")[0]) for part in lanes.split(" do ")[1].split(" and ")]
    assert len(ratios) == 2 and all(r > 0 for r in ratios), lanes


def test_sample_steps_bench_pairs_each_step_count_with_the_budgets_own(smoke):
    """Fewer Euler steps are compared on the same prompts and seeds: the budget's own count reproduces its images
    (change exactly 0), another count is a colour level in [0, 1] with an interval around its change."""
    proc = subprocess.run([sys.executable, "-m", "bench.replicate.sample_steps", "--smoke", "--cache",
                           str(smoke.parent), "--steps", f"{SMOKE.sample_steps},1"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if " steps: colour level " in line]
    assert len(lines) == 6 and sum(line.startswith("source (CFG ") for line in lines) == 3
    same = [line for line in lines if f": {SMOKE.sample_steps} steps: colour level" in line and "change" in line]
    assert len(same) == 2 and all(line.endswith("change 0.000 [0.000, 0.000]") for line in same)
    for line in lines:
        assert 0.0 <= float(line.split("colour level ")[1].split(",")[0]) <= 1.0


@pytest.mark.parametrize("steps", [3, 20])
def test_vae_training_runs_at_any_step_count(steps):
    """The VAE's warm-up is never exactly one step (torch's OneCycleLR divides by zero there: 20 steps at 5%)."""
    from bench.replicate.models import train_vae

    _, losses = train_vae(torch.rand(4, 3, 16, 16) * 2 - 1, steps, 1, 1e-3, 1e-6, 0)
    assert len(losses) == steps and all(np.isfinite(losses))
