"""The performance benches as one run, and their headline figures as one table.

    python -m bench                  # every bench of the set in turn, then the table (about 60 min here)
    python -m bench --only policy_cost head_memory
    python -m bench --collect        # only rebuild the table from bench/results/*.figures.json
    python -m bench --smoke          # each bench's smoke mode (a few minutes); table in bench/results/smoke/

Each bench writes its headline figures (``bench.measure.write_figures``): value, spread and how the figure was
obtained (measured, counted, extrapolated per tile or per block, FLOP model), with the run's wall time. This
collects every ``*.figures.json`` into ``performance.md`` beside them, and puts the same table in the README
between its ``performance table`` markers (a test keeps the two equal). The benches run one after another, each
in its own processes with 2 threads pinned; nothing else should run on the machine meanwhile.

Not in the set (they measure quality or need other caches): ``bench.replicate``, ``bench.lora_transfer``,
``bench.convert_init_loss``, ``bench.lora_memory``, ``bench.prompt_stats``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.measure import LABELS, RESULTS, figures_folder  # noqa: E402

# The set, in the order it runs: bench module and its arguments.
SET: dict[str, list[str]] = {
    "uhr_vs_latent": [],
    "head_memory": [],
    "policy_cost": [],
    "calibrate_memory": ["--test-width"],
    "convert_memory": [],
    "step_cache": ["--prompts", "40", "--out", "none"],  # the README table is a 240-prompt run
}
README = REPO / "README.md"
BEGIN = "<!-- performance table: written by `python -m bench --collect` -->"
END = "<!-- end of performance table -->"


def cell(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "MiB" or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:+.3f}" if unit == "score" else f"{value:.2f}"


def render(folder: pathlib.Path = RESULTS) -> str:
    """The table of every ``*.figures.json`` in ``folder``: one row per figure, benches in file-name order."""
    docs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.figures.json"))]
    total = sum(d["seconds"] for d in docs)
    lines = [f"One row per headline figure; value, then its spread where it has one. Benches: "
             f"{len(docs)}, {total / 60:.0f} min of runs on this 2-core CPU in all.", "",
             "| bench (run time, date) | figure | value | spread | unit | how |", "|---|---|---|---|---|---|"]
    for d in docs:
        where = f"`{d['bench']}` ({d['seconds'] / 60:.1f} min, {d['date']}; {d['setup']})"
        for f in d["figures"]:
            if f["label"] not in LABELS:
                raise ValueError(f"{d['bench']}: figure {f['name']!r} has label {f['label']!r}, not one of {LABELS}")
            spread = (f"[{cell(f['low'], f['unit'])}, {cell(f['high'], f['unit'])}] ({f['spread_kind']})"
                      if f["low"] is not None else "")
            lines.append(f"| {where} | {f['name']} | {cell(f['value'], f['unit'])} | {spread} | {f['unit']} | "
                         f"{f['label']} |")
    return "\n".join(lines) + "\n"


def readme_table(text: str) -> str:
    """What the README holds between its performance-table markers."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"README.md has no performance table markers ({BEGIN!r} ... {END!r})")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def collect(smoke: bool) -> pathlib.Path:
    folder = figures_folder(smoke)
    table = render(folder)
    out = folder / "performance.md"
    out.write_text("# Performance: the headline figures of `python -m bench`\n\n" + table)
    if not smoke:
        text = README.read_text()
        readme_table(text)  # the markers are there
        head, rest = text.split(BEGIN, 1)
        README.write_text(head + BEGIN + "\n" + table + END + rest.split(END, 1)[1])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=list(SET), help="run only these benches, then collect all")
    ap.add_argument("--collect", action="store_true", help="run nothing: only rebuild the table")
    ap.add_argument("--smoke", action="store_true", help="each bench's smoke mode")
    args = ap.parse_args(argv)
    failed = []
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    for name in [] if args.collect else args.only or list(SET):
        cmd = [sys.executable, "-m", f"bench.{name}", *SET[name], *(["--smoke"] * args.smoke)]
        print(f"[bench] {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        if subprocess.run(cmd, cwd=REPO, env=env).returncode:
            failed.append(name)
        print(f"[bench] {name}: {'FAILED' if name in failed else 'done'} in {(time.perf_counter() - start) / 60:.1f} "
              "min", flush=True)
    out = collect(args.smoke)
    print(f"[bench] wrote {out.relative_to(REPO)}" + ("" if args.smoke else " and the README's table"))
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
