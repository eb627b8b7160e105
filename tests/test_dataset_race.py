"""Writers racing on one dataset folder (issue 16.5): every complete item's files (png, txt, conditioning) and
its metadata.jsonl line come from one writer; a loser with another prompt is refused, one with the same prompt
and seed skips; the lock holds across processes; nothing temporary is left behind."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

from dataset.folder import LOCK, METADATA, DatasetItem, DatasetWriter, ItemConflict, _locked, read_metadata

WAIT = 30  # seconds any one step may take before the test fails instead of hanging


def payload(kind: str, writer: str, index: int, text: str, size: int = 4096) -> bytes:
    """Bytes that say which writer made which file of which item (big enough to take a moment to write)."""
    tag = f"{kind}|{writer}|{index}|{text}|".encode()
    return (tag * (size // len(tag) + 1))[:size]


def write(writer: DatasetWriter, name: str, index: int, text: str, seed: int, cond: bool) -> str:
    item = DatasetItem(index, text, seed, extra={"writer": name})
    try:
        done = writer.write(item, payload("png", name, index, text),
                            payload("cond", name, index, text) if cond else None)
    except ItemConflict:
        return "refused"
    return "written" if done else "skipped"


def item_files(root: str, index: int) -> list[str]:
    return sorted(n for n in os.listdir(root) if n.startswith(f"{index:05d}."))


def assert_consistent(root: str, pending: int = 0) -> dict[int, dict]:
    """Every complete item's files are its writer's; nothing else is in ``root`` but the staging folders of
    ``pending`` writers that have not committed yet (no temp file or folder once every writer is done)."""
    rows = read_metadata(root)
    with open(os.path.join(root, METADATA), encoding="utf-8") as f:
        assert len(f.read().splitlines()) == len(rows), "an index has two metadata lines"
    names = set()
    for index, row in rows.items():
        stem, who, text = f"{index:05d}", row["writer"], row["text"]
        with open(os.path.join(root, f"{stem}.txt"), encoding="utf-8") as f:
            assert f.read() == text, f"{stem}.txt is not the text of its metadata line"
        with open(os.path.join(root, f"{stem}.png"), "rb") as f:
            assert f.read() == payload("png", who, index, text), f"{stem}.png is not {who}'s"
        cond = os.path.join(root, f"{stem}.cond.safetensors")
        if row.get("conditioning"):
            with open(cond, "rb") as f:
                assert f.read() == payload("cond", who, index, text), f"{stem}.cond.safetensors is not {who}'s"
        else:
            assert not os.path.exists(cond), f"{stem}.cond.safetensors belongs to no metadata line"
        names |= set(item_files(root, index))
    rest = sorted(set(os.listdir(root)) - names - {METADATA, LOCK})
    assert len(rest) == pending and all(n.startswith(".partial-") for n in rest), rest
    return rows


# ------------------------------------------------------------------------ (1) the bad interleaving, replayed

@pytest.mark.parametrize("same_prompt", [False, True], ids=["other-prompt", "same-prompt"])
@pytest.mark.parametrize("first", ["A", "B"], ids=["A-commits-first", "B-commits-first"])
def test_replayed_race_leaves_one_consistent_item(tmp_path, same_prompt, first):
    """A stages item 0, then B stages item 0 (the old writer had written 00000.* by then, B's over A's), then
    one commits and then the other: the folder holds the first committer's item whole; the second is refused
    (another prompt) or skips (the same prompt and seed)."""
    root = str(tmp_path / "ds")
    texts = {"A": "a red cube on grass", "B": "a red cube on grass" if same_prompt else "a blue ball in snow"}
    staged = {name: threading.Event() for name in texts}
    go = {name: threading.Event() for name in texts}
    outcome: dict[str, object] = {}

    def run(name: str) -> None:
        def on_staged(item: DatasetItem) -> None:  # between staging and the locked commit
            staged[name].set()
            assert go[name].wait(WAIT)

        try:
            outcome[name] = write(DatasetWriter(root, on_staged=on_staged), name, 0, texts[name], 7, cond=True)
        except BaseException as e:  # reported by the asserts below
            outcome[name] = e

    threads = {name: threading.Thread(target=run, args=(name,), daemon=True) for name in texts}
    threads["A"].start()
    assert staged["A"].wait(WAIT), outcome
    threads["B"].start()
    assert staged["B"].wait(WAIT), outcome
    assert item_files(root, 0) == [] and read_metadata(root) == {}  # staged is invisible: no 00000.* yet

    second = "B" if first == "A" else "A"
    go[first].set()
    threads[first].join(WAIT)
    assert outcome[first] == "written"
    assert read_metadata(root)[0]["writer"] == first  # complete and whole while the other is still pending
    assert_consistent(root, pending=1)

    go[second].set()
    threads[second].join(WAIT)
    assert outcome[second] == ("skipped" if same_prompt else "refused")
    rows = assert_consistent(root)
    assert list(rows) == [0] and rows[0]["writer"] == first and rows[0]["text"] == texts[first]
    assert item_files(root, 0) == ["00000.cond.safetensors", "00000.png", "00000.txt"]


def test_staging_holds_no_lock(tmp_path):
    """While one writer sits between staging and commit, another writer finishes a whole item."""
    root = str(tmp_path / "ds")
    staged, go = threading.Event(), threading.Event()
    outcome: list[object] = []

    def on_staged(item: DatasetItem) -> None:
        staged.set()
        assert go.wait(WAIT)

    def slow() -> None:
        try:
            outcome.append(write(DatasetWriter(root, on_staged=on_staged), "slow", 0, "slow prompt", 1, cond=False))
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    assert staged.wait(WAIT)
    assert write(DatasetWriter(root), "fast", 1, "fast prompt", 2, cond=True) == "written"
    assert sorted(read_metadata(root)) == [1]
    go.set()
    t.join(WAIT)
    assert outcome == ["written"]
    assert sorted(assert_consistent(root)) == [0, 1]


# ------------------------------------------------------------------------ across processes

def _blocked_writer(root: str, staged, result) -> None:
    def on_staged(item: DatasetItem) -> None:
        staged.set()

    result.put(write(DatasetWriter(root, on_staged=on_staged), "child", 0, "child prompt", 3, cond=True))


def test_the_lock_holds_across_processes(tmp_path):
    """A writer in another process waits for the folder lock that this process holds before it commits."""
    root = str(tmp_path / "ds")
    DatasetWriter(root)
    ctx = multiprocessing.get_context("spawn")  # a fresh process: it shares no in-process lock with this one
    staged, result = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_blocked_writer, args=(root, staged, result))
    with _locked(root):
        proc.start()
        assert staged.wait(WAIT)  # the child has staged its files and now wants the lock
        proc.join(1.0)
        assert proc.is_alive() and read_metadata(root) == {} and item_files(root, 0) == []
    assert result.get(timeout=WAIT) == "written"
    proc.join(WAIT)
    assert proc.exitcode == 0
    assert read_metadata(root)[0]["writer"] == "child"
    assert_consistent(root)


N_ITEMS, N_PROCS = 20, 4


def plan(proc: int) -> list[tuple[int, str, int, bool]]:
    """(index, text, seed, with conditioning) for every item one process writes; all processes write all items.

    index % 4 == 0: every process the same prompt and seed;  1: every process another prompt;
    2: processes 0-1 one prompt, 2-3 another;  3: the same prompt, another seed in odd processes.
    """
    jobs = []
    for i in range(N_ITEMS):
        text, seed = f"prompt {i}", 100 + i
        if i % 4 == 1:
            text = f"prompt {i} from process {proc}"
        elif i % 4 == 2:
            text = f"prompt {i} group {proc // 2}"
        elif i % 4 == 3 and proc % 2:
            seed += 1
        jobs.append((i, text, seed, (proc + i) % 2 == 0))
    return jobs


def _race_worker(root: str, proc: int, barrier, results) -> None:
    writer = DatasetWriter(root)
    barrier.wait(WAIT)
    out = []
    for index, text, seed, cond in plan(proc):  # every process in the same order: they meet on each index
        out.append((index, text, seed, write(writer, f"p{proc}", index, text, seed, cond)))
    results.put((proc, out))


def test_processes_racing_on_one_folder(tmp_path):
    root = str(tmp_path / "ds")
    DatasetWriter(root)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(N_PROCS), ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(root, p, barrier, results)) for p in range(N_PROCS)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(WAIT)
        assert p.exitcode == 0

    rows = assert_consistent(root)
    assert sorted(rows) == list(range(N_ITEMS))
    for i, row in rows.items():
        by = {f"p{p}": outcomes[p][i] for p in range(N_PROCS)}
        winners = [name for name, (_, _, _, outcome) in by.items() if outcome == "written"]
        assert winners == [row["writer"]], (i, by)
        for _, text, seed, outcome in by.values():
            if outcome != "written":
                same = (text, seed) == (row["text"], row["seed"])
                assert outcome == ("skipped" if same else "refused"), (i, by)
    refused = sum(o == "refused" for out in outcomes.values() for *_, o in out)
    assert refused >= N_ITEMS // 4 * (N_PROCS - 1)  # index % 4 == 1: every loser has another prompt

    # a rerun (the same plan again) writes nothing and changes nothing
    before = {n: open(os.path.join(root, n), "rb").read() for n in os.listdir(root)}
    writer = DatasetWriter(root)
    again = [write(writer, "p0", i, text, seed, cond) for i, text, seed, cond in plan(0)]
    assert "written" not in again
    assert {n: open(os.path.join(root, n), "rb").read() for n in os.listdir(root)} == before


# ------------------------------------------------------------------------ (3) rerun / resume semantics

def test_rerun_skips_refuses_and_rewrites_unfinished_items(tmp_path):
    root = str(tmp_path / "ds")
    writer = DatasetWriter(root)
    assert write(writer, "w1", 0, "a cat", 1, cond=True) == "written"
    before = {n: open(os.path.join(root, n), "rb").read() for n in item_files(root, 0)}
    assert write(DatasetWriter(root), "w2", 0, "a cat", 1, cond=False) == "skipped"
    assert write(DatasetWriter(root), "w2", 0, "a dog", 1, cond=True) == "refused"
    assert write(DatasetWriter(root), "w2", 0, "a cat", 2, cond=True) == "refused"
    assert {n: open(os.path.join(root, n), "rb").read() for n in item_files(root, 0)} == before

    # item 1 stopped mid-item by an earlier writer: files with conditioning, no metadata line
    for name, data in [("00001.png", b"old png"), ("00001.txt", b"old prompt"), ("00001.cond.safetensors", b"old")]:
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    assert write(DatasetWriter(root), "w3", 1, "a bird", 5, cond=False) == "written"
    rows = assert_consistent(root)  # the stale conditioning is gone, the rest is w3's
    assert rows[1]["writer"] == "w3" and "conditioning" not in rows[1]

    # a writer that dies between staging and commit leaves neither an item nor a staged file
    def crash(item: DatasetItem) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write(DatasetWriter(root, on_staged=crash), "w4", 2, "a fish", 6, cond=True)
    assert sorted(assert_consistent(root)) == [0, 1] and item_files(root, 2) == []


def test_a_killed_writers_staging_folder_is_removed_by_the_next_writer(tmp_path):
    """A writer killed between staging and commit leaves its staging folder; the next writer on this machine
    removes it (its process is gone), and never one of a live writer or of another machine."""
    import subprocess

    from dataset import folder

    gone = subprocess.Popen(["true"])
    gone.wait()
    host = folder._OWNER.split("-")[0]
    dead = tmp_path / f".partial-00000-{host}-{gone.pid}-abcd1234"
    live = tmp_path / f".partial-00001-{host}-{os.getpid()}-abcd1234"
    remote = tmp_path / ".partial-00002-elsewhere-1-abcd1234"
    for stage in (dead, live, remote):
        stage.mkdir()
        (stage / "00000.png").write_bytes(b"x")
    folder.DatasetWriter(str(tmp_path))
    assert not dead.exists() and live.exists() and remote.exists()
