"""How the benches measure: peak memory of one piece of work in a fresh process, and side-by-side timing.

* ``run_child(argv)`` runs ``python <argv>`` with glibc's mmap threshold fixed, so large tensors are mapped and
  unmapped as they live and die and the peak RSS is the peak of live memory (with the default, adaptive threshold
  one case measured 451 and 634 MiB in two runs; with this, 438 and 439). The child prints one JSON line last.
* ``PeakRise`` (in the child): the rise of the process's peak RSS over its RSS at the start of a block; the
  high-water mark is reset there (``/proc/self/clear_refs``), so what ran before (weights, warm-up) does not count.
* ``interleaved(configs, reps)``: the run order A B C A B C ..., so that a machine that slows down or speeds up
  during the run shifts every configuration alike; ``spread`` gives median, min and max.
* ``poll_peaks(argv)``: for a child that cannot measure itself (a CLI run as it is): its peak anonymous and
  total RSS, polled from outside.
* ``Figure`` / ``write_figures``: a bench's headline figures, each with how it was obtained (``LABELS``), as
  ``bench/results/<bench>.figures.json``; ``python -m bench`` collects them into one table.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

MIB = 2**20
RESULTS = pathlib.Path(__file__).resolve().parent / "results"
# How a figure was obtained, from the most to the least direct.
LABELS = ("measured", "counted", "extrapolated per tile", "extrapolated per block", "FLOP model")
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def vm_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    with open("/proc/self/status") as f:
        return {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f if ln.startswith(("VmRSS:", "VmHWM:"))}


class PeakRise:
    """``with PeakRise() as p: work()`` -> ``p.bytes``: how far the peak RSS rose above the RSS at the start."""

    bytes: int = 0

    def __enter__(self) -> PeakRise:
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        self.base = vm_status()["VmRSS"]
        return self

    def __exit__(self, *exc: object) -> None:
        self.bytes = max(0, vm_status()["VmHWM"] - self.base)


def run_child(argv: list[str], timeout: float | None = None, threads: int = 2) -> dict[str, Any]:
    """``python argv...`` in a fresh process (threads pinned); its last stdout line, parsed as JSON."""
    env = {**os.environ, **MALLOC_ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode:
        tail = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit code {out.returncode}"
        raise RuntimeError(f"{' '.join(argv[:3])}: {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(configs: list[str], reps: int) -> Iterator[tuple[int, str]]:
    """(repetition, config) in the order A B C A B C ..."""
    for rep in range(reps):
        for config in configs:
            yield rep, config


def spread(values: list[float]) -> tuple[float, float, float]:
    """Median, min and max."""
    return statistics.median(values), min(values), max(values)


def poll_peaks(argv: list[str], cwd: str | None = None) -> tuple[int, int, str]:
    """Run ``python argv...`` and poll its /proc status: (peak RssAnon, peak VmHWM in bytes, its stdout). Anonymous
    memory is what the process really holds; VmHWM also counts the pages of memory-mapped files it read."""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # files, not pipes: a full pipe would stall
    env = {**os.environ, **MALLOC_ENV}                                 # the child while we poll
    proc = subprocess.Popen([sys.executable, *argv], cwd=cwd, stdout=out, stderr=err, env=env)
    anon = total = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                fields = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f if ln.startswith(("RssAnon",
                                                                                                  "VmHWM"))}
            anon, total = max(anon, fields.get("RssAnon", 0)), max(total, fields.get("VmHWM", 0))
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    if proc.returncode:
        err.seek(0)
        raise RuntimeError(err.read().decode(errors="replace")[-2000:] or f"exit code {proc.returncode}")
    out.seek(0)
    return anon, total, out.read().decode()


@dataclass(frozen=True)
class Figure:
    """One headline figure: ``value`` with its spread (``low``/``high``: min and max over repetitions, or a 95%
    interval, as ``spread_kind`` says), a ``unit`` ("x" for a ratio) and how it was obtained (one of ``LABELS``)."""

    name: str
    value: float
    unit: str
    label: str
    low: float | None = None
    high: float | None = None
    spread_kind: str = ""

    @classmethod
    def over(cls, name: str, values: list[float], unit: str, label: str) -> Figure:
        """The median of repetitions, with their min and max."""
        med, lo, hi = spread(values)
        return cls(name, med, unit, label, lo, hi, "min, max over repetitions")

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"figure {self.name!r}: label {self.label!r} is not one of {LABELS}")


def figures_folder(smoke: bool) -> pathlib.Path:
    """Where a bench's figures go: ``bench/results``, or ``bench/results/smoke`` (not committed) for a smoke run."""
    return RESULTS / "smoke" if smoke else RESULTS


def write_figures(bench: str, figures: list[Figure], seconds: float, setup: str, smoke: bool = False) -> pathlib.Path:
    """``<bench>.figures.json`` in ``figures_folder(smoke)``: the figures, the run's wall time and setup, and the
    date, written whole (temp file, then rename)."""
    folder = figures_folder(smoke)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{bench}.figures.json"
    doc = {"bench": bench, "command": f"python -m bench.{bench}", "seconds": round(seconds, 1), "setup": setup,
           "date": datetime.date.today().isoformat(), "figures": [asdict(f) for f in figures]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)
    return path
