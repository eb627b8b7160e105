"""Render a synthetic dataset with the source model over one or more running ComfyUI servers.

    python -m dataset.make --server http://127.0.0.1:8188 [--server URL2 ...] \\
        --prompts prompts.jsonl --out DATASET_DIR [--workflow API.json] [--images-per-prompt 2]

One ComfyUI server per GPU is how ComfyUI users scale; the driver keeps each busy with one item at a time.
Each item's graph is the dataset workflow (``workflows/api/l2p_make_dataset.api.json`` unless
``--workflow`` names an API-format export of your own) with the L2P Prompt Bank replaced by the item's
prompt and seed, and the L2P Dataset Writer replaced by a preview, whose image the driver downloads and
writes locally through ``dataset.folder`` (so servers on other machines need no shared disk). Items already
complete in ``--out`` are skipped: rerunning after a stop resumes. A failed item is retried on another
server; a server that keeps failing is dropped; when every server is gone the driver stops with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import struct
import sys
import threading
from dataclasses import dataclass

from dataset.folder import DatasetItem, DatasetWriter, ItemConflict
from dataset.prompts import PromptRecord, read_jsonl
from harness.client import ComfyClient, ComfyServerError, PromptRejected
from harness.graph import inline_outputs, replace_node

DEFAULT_WORKFLOW = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflows", "api",
                                "l2p_make_dataset.api.json")
BANK, WRITER = "L2PPromptBank", "L2PDatasetWriter"
BANK_OUTPUTS = ("prompt", "seed", "category", "index")  # the bank's output slots, in order


@dataclass(frozen=True)
class Job:
    index: int
    record: PromptRecord
    seed: int


def jobs_for(records: list[PromptRecord], images_per_prompt: int) -> list[Job]:
    """Item ``i`` renders prompt ``i // k`` with seed ``record.seed + i % k`` (as L2PPromptBank numbers them)."""
    return [Job(i, records[i // images_per_prompt], records[i // images_per_prompt].seed + i % images_per_prompt)
            for i in range(len(records) * images_per_prompt)]


def item_graph(workflow: dict, job: Job) -> dict:
    """The workflow for one item: bank outputs become literal inputs, the writer becomes a PreviewImage."""
    values = {"prompt": job.record.prompt, "seed": job.seed, "category": job.record.category, "index": job.index}
    graph = inline_outputs(workflow, BANK, [values[name] for name in BANK_OUTPUTS])
    return replace_node(graph, WRITER, "PreviewImage", keep=("images",))


class Driver:
    """Hands jobs to one worker thread per server; failed jobs go back to the queue (retries)."""

    def __init__(self, servers: list[str], workflow: dict, writer: DatasetWriter, retries: int, timeout: float):
        self.clients = [ComfyClient(url) for url in servers]
        self.workflow = workflow
        self.writer = writer
        self.retries = retries
        self.timeout = timeout
        self.jobs: queue.Queue[tuple[Job, int]] = queue.Queue()
        self.failed: list[str] = []
        self.dead: list[str] = []
        self.lock = threading.Lock()

    def run(self, jobs: list[Job], progress) -> None:
        for job in jobs:
            self.jobs.put((job, 0))
        self.remaining = len(jobs)
        threads = [threading.Thread(target=self._worker, args=(c, progress), daemon=True) for c in self.clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _worker(self, client: ComfyClient, progress) -> None:
        strikes = 0
        while True:
            with self.lock:
                if self.remaining == 0:
                    return
            try:
                job, attempts = self.jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._render(client, job)
                strikes = 0
                with self.lock:
                    self.remaining -= 1
                progress.update(1)
            except ItemConflict as e:  # the index is another writer's, with another prompt: no retry, no strike
                with self.lock:
                    self.failed.append(f"item {job.index:05d}: {e}")
                    self.remaining -= 1
            except (ComfyServerError, PromptRejected, TimeoutError, ValueError, OSError) as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                strikes += 1
                with self.lock:
                    if attempts + 1 >= self.retries:
                        self.failed.append(f"item {job.index:05d}: {reason}")
                        self.remaining -= 1
                    else:
                        self.jobs.put((job, attempts + 1))
                if strikes >= self.retries:
                    with self.lock:
                        self.dead.append(f"{client.url} ({reason})")
                        if len(self.dead) == len(self.clients):
                            self._drain()
                    return

    def _drain(self) -> None:
        while True:
            try:
                job, _ = self.jobs.get_nowait()
            except queue.Empty:
                return
            self.failed.append(f"item {job.index:05d}: no server left")
            self.remaining -= 1

    def _render(self, client: ComfyClient, job: Job) -> None:
        result = client.run(item_graph(self.workflow, job), timeout=self.timeout)
        if not result.ok:
            raise ValueError(result.error_message or result.status)
        images = [img for out in result.outputs.values() if isinstance(out, dict) for img in out.get("images", [])]
        if not images:
            raise ValueError("the workflow produced no image")
        png = client.view(images[0])
        if png[:8] != b"\x89PNG\r\n\x1a\n":
            raise ValueError(f"{images[0].get('filename')} is not a PNG")
        width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
        item = DatasetItem(index=job.index, text=job.record.prompt, seed=job.seed, category=job.record.category,
                           width=width, height=height, extra={"prompt_index": job.record.index})
        self.writer.write(item, png)


def reachable(urls: list[str]) -> list[str]:
    """The servers that answer now (a warning line for each that does not); a one-line error if none does."""
    alive = []
    for url in urls:
        try:
            ComfyClient(url).get_json("/system_stats", timeout=10)
            alive.append(url)
        except ComfyServerError as e:
            print(f"warning: {url} does not answer ({str(e).splitlines()[0]}); not using it", file=sys.stderr)
    if not alive:
        raise ValueError(f"no ComfyUI server answers at {', '.join(urls)}: start one (python main.py --listen) or "
                         "fix --server")
    return alive


def _progress(total: int, done: int):
    try:
        from tqdm import tqdm
    except ImportError:
        class _Quiet:
            def update(self, n: int) -> None: ...

            def close(self) -> None: ...
        return _Quiet()
    return tqdm(total=total, initial=done, unit="image", desc="rendering", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dataset.make", description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", action="append", required=True, help="a running ComfyUI server URL (repeatable)")
    ap.add_argument("--prompts", required=True, help="prompt bank .jsonl (python -m dataset.prompts writes one)")
    ap.add_argument("--out", required=True, help="dataset folder (created; complete items are kept)")
    ap.add_argument("--workflow", default=DEFAULT_WORKFLOW, help="API-format dataset workflow")
    ap.add_argument("--images-per-prompt", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="render only the first N items")
    ap.add_argument("--retries", type=int, default=3, help="attempts per item, and failures before a server is "
                                                           "dropped")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per item")
    args = ap.parse_args(argv)
    try:
        if args.images_per_prompt < 1 or args.retries < 1:
            raise ValueError("--images-per-prompt and --retries must be at least 1")
        records = read_jsonl(args.prompts)
        try:
            with open(args.workflow, encoding="utf-8") as f:
                workflow = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read workflow {args.workflow} ({e}): give an API-format export") from None
        if records:
            try:
                item_graph(workflow, jobs_for(records, 1)[0])  # checks the graph has one bank and one writer
            except ValueError as e:
                raise ValueError(f"{args.workflow}: {e}") from None
        writer = DatasetWriter(args.out)
        servers = reachable(args.server)
        jobs = jobs_for(records, args.images_per_prompt)[: args.limit]
        present = writer.complete()
        todo = [j for j in jobs if j.index not in present]
        progress = _progress(len(jobs), len(jobs) - len(todo))
        driver = Driver(servers, workflow, writer, args.retries, args.timeout)
        driver.run(todo, progress)
        progress.close()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if driver.failed:
        dead = f"; servers dropped: {', '.join(driver.dead)}" if driver.dead else ""
        print(f"error: {len(driver.failed)} of {len(todo)} items failed ({driver.failed[0]}){dead}: fix the cause "
              "and rerun the same command to resume", file=sys.stderr)
        return 1
    print(f"{len(jobs)} items complete in {args.out} ({len(todo)} rendered now, {len(jobs) - len(todo)} already "
          "there)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
