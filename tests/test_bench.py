"""The performance set's one table (``python -m bench``): every bench of the set left labelled figures, the README's
table is what the collector makes of them, and a bench run through the entry point lands in the table."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

import bench.measure
from bench.__main__ import README, REPO, SET, readme_table, render
from bench.measure import LABELS, RESULTS, Figure, write_figures


def test_the_readme_table_is_the_collected_figures():
    assert readme_table(README.read_text()) == render(RESULTS), "run `python -m bench --collect`"


def test_every_bench_of_the_set_left_labelled_figures():
    for name in SET:
        docs = [json.loads(p.read_text()) for p in RESULTS.glob(f"{name}*.figures.json")]
        assert docs, f"{name}: no figures in bench/results; run `python -m bench --only {name}`"
        for doc in docs:
            assert doc["figures"] and doc["seconds"] > 0, doc
            assert all(f["label"] in LABELS for f in doc["figures"]), doc


def test_a_figure_without_a_known_label_is_refused():
    with pytest.raises(ValueError, match="is not one of"):
        Figure("a ratio", 1.0, "x", "guessed")


def test_the_table_shows_a_figure_with_its_spread_and_label(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.measure, "RESULTS", tmp_path)
    write_figures("demo", [Figure.over("step, A / B", [1.5, 1.25, 2.0], "x", "extrapolated per block")], 61.0, "")
    table = render(tmp_path)
    assert "| step, A / B | 1.50 | [1.25, 2.00] (min, max over repetitions) | x | extrapolated per block |" in table
    assert "`demo` (1.0 min, " in table


def test_a_bench_run_through_the_entry_point_lands_in_the_smoke_table():
    """policy_cost's smoke mode (dim 256) through ``python -m bench``: its figures and the table are rewritten."""
    smoke = RESULTS / "smoke"
    for old in smoke.glob("policy_cost.*"):
        old.unlink()
    out = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--only", "policy_cost"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads((smoke / "policy_cost.figures.json").read_text())
    assert {f["name"] for f in doc["figures"]} >= {"training step, paper policy / full fine-tune"}
    # the plumbing, not the speed: a ratio's size depends on the machine's load (speed claims live in bench/)
    assert all(0 < f["low"] <= f["value"] <= f["high"] < math.inf for f in doc["figures"]), doc
    assert "training step, paper policy / full fine-tune" in (smoke / "performance.md").read_text()
