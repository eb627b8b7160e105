"""How the benches measure: peak memory of one piece of work in a fresh process, and side-by-side timing.

* ``run_child(argv)`` runs ``python <argv>`` with glibc's mmap threshold fixed, so large tensors are mapped and
  unmapped as they live and die and the peak RSS is the peak of live memory (with the default, adaptive threshold
  one case measured 451 and 634 MiB in two runs; with this, 438 and 439). The child prints one JSON line last.
* ``PeakRise`` (in the child): the rise of the process's peak RSS over its RSS at the start of a block; the
  high-water mark is reset there (``/proc/self/clear_refs``), so what ran before (weights, warm-up) does not count.
* ``interleaved(configs, reps)``: the run order A B C A B C ..., so that a machine that slows down or speeds up
  during the run shifts every configuration alike; ``spread`` gives median, min and max.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

MIB = 2**20
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
