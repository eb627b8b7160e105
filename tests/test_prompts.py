"""The prompt-bank library (dataset/prompts): taxonomy, offline and chat generation, JSONL, filters, CLI, charts."""

from __future__ import annotations

import collections
import http.server
import json
import logging
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from dataset.prompts import (
    MAX_CHARS,
    MIN_CHARS,
    Category,
    ChatPromptWriter,
    PromptRecord,
    filter_prompts,
    generate_bank,
    generate_prompt,
    load_blocklist,
    load_taxonomy,
    malformed_reason,
    read_jsonl,
    write_jsonl,
)
from dataset.prompts.__main__ import main as cli_main
from dataset.prompts.chat import chat_endpoint, clean_reply
from dataset.prompts.filters import blocklist_pattern
from dataset.prompts.minhash import MinHasher, choose_bands, jaccard, shingles, similarity
from dataset.prompts.taxonomy import DEFAULT_PATH, Taxonomy
from training.plots import bar_chart, line_chart

REPO = pathlib.Path(__file__).resolve().parents[1]
TAXONOMY = load_taxonomy()
LEAVES = TAXONOMY.leaves()
FOX = next(c for c in LEAVES if c.name == "red fox")


def record(i: int, prompt: str) -> PromptRecord:
    return PromptRecord(i, "test/test/test", prompt, i)


# --- taxonomy ---------------------------------------------------------------------------------------------


def test_shipped_taxonomy_has_the_papers_shape():
    raw = json.loads(pathlib.Path(DEFAULT_PATH).read_text(encoding="utf-8"))
    assert len(raw) == 4
    assert sum(len(subs) for subs in raw.values()) == 17
    names = [name for subs in raw.values() for names in subs.values() for name in names]
    assert len(names) >= 1000
    assert len({n.casefold() for n in names}) == len(names), "duplicate leaves"
    assert all(len(names) >= 40 for subs in raw.values() for names in subs.values()), "a thin sub-class"
    expected = {(m, s, n) for m, subs in raw.items() for s, names in subs.items() for n in names}
    assert {(c.major, c.sub, c.name) for c in LEAVES} == expected and len(LEAVES) == len(expected)
    assert FOX.path == "nature/mammals/red fox"
    assert len(TAXONOMY.majors()) == 4 and len(TAXONOMY.subs()) == 17


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[]", "non-empty JSON object"),
    ('{"a": []}', "non-empty object of sub-classes"),
    ('{"a": {"b": "x"}}', "non-empty list"),
    ('{"a": {"b": ["x", " "]}}', "empty or non-text name"),
    ('{"a": {"b": ["x", 3]}}', "empty or non-text name"),
    ('{"a": {"b": ["x"], "c": ["X"]}}', "listed twice"),
    ('{"a": {"b": ["x"]}, "a": {"c": ["y"]}}', "appears twice"),
    ('{"a": {"b": ["x/y"]}}', "bad name"),
    ('{"a": {"b": ["' + "x" * 61 + '"]}}', "over 60 characters"),
])
def test_malformed_taxonomy_one_line_error(tmp_path, content, message):
    path = tmp_path / "tax.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as err:
        load_taxonomy(str(path))
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


# --- offline generator ------------------------------------------------------------------------------------


def test_prompts_fit_the_rules_across_every_category():
    pattern = blocklist_pattern(load_blocklist())
    for seed in (0, 1, 2):
        for category in LEAVES:
            text = generate_prompt(category, seed)
            assert MIN_CHARS <= len(text) <= MAX_CHARS, (category.path, len(text), text)
            assert category.name.casefold() in text.casefold(), (category.path, text)
            assert malformed_reason(text) is None, (category.path, text, malformed_reason(text))
            assert not pattern.search(text), (category.path, text)


def test_generator_is_deterministic_across_processes():
    picks = [(c.major, c.sub, c.name) for c in LEAVES[::97]]
    here = [generate_prompt(Category(*p), s) for p in picks for s in (0, 7)]
    code = ("import json, sys\nfrom dataset.prompts import Category, generate_prompt\n"
            "picks = json.loads(sys.argv[1])\n"
            "print(json.dumps([generate_prompt(Category(*p), s) for p in picks for s in (0, 7)]))\n")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a salted str hash must not leak into the output
    out = subprocess.run([sys.executable, "-c", code, json.dumps(picks)], capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == here
    assert generate_prompt(FOX, 3) == generate_prompt(FOX, 3)


def test_different_seeds_give_different_prompts():
    prompts = [generate_prompt(FOX, s) for s in range(60)]
    assert len(set(prompts)) == 60
    assert len({p.split(".")[0] for p in prompts}) >= 40, "opening sentences barely vary"
    sets = [shingles(p) for p in prompts]
    worst = max(jaccard(a, b) for i, a in enumerate(sets) for b in sets[i + 1:])
    assert worst < 0.6, f"two prompts of one category share {worst:.0%} of their 3-grams"
    lengths = [len(p) for p in prompts]
    assert max(lengths) - min(lengths) >= 60, "lengths do not spread over the window"


def test_custom_taxonomy_uses_the_generic_profile(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"things": {"gizmos": ["brass gizmo", "tin whistle"]}}), encoding="utf-8")
    taxonomy = load_taxonomy(str(path))
    bank = generate_bank(6, seed=1, taxonomy=taxonomy)
    assert collections.Counter(r.category for r in bank) == {"things/gizmos/brass gizmo": 3,
                                                             "things/gizmos/tin whistle": 3}
    assert all(MIN_CHARS <= len(r.prompt) <= MAX_CHARS for r in bank)


# --- banks and JSONL --------------------------------------------------------------------------------------


def test_bank_covers_categories_evenly_with_own_seeds():
    n = 2 * len(LEAVES) + 7
    bank = generate_bank(n, seed=0, taxonomy=TAXONOMY)
    assert [r.index for r in bank] == list(range(n))
    counts = collections.Counter(r.category for r in bank)
    assert set(counts) == {c.path for c in LEAVES}
    assert sorted(collections.Counter(counts.values()).items()) == [(2, len(LEAVES) - 7), (3, 7)]
    assert len({r.seed for r in bank}) == n and all(0 <= r.seed < 2**32 for r in bank)
    by_category = {c.path: c for c in LEAVES}
    assert all(r.prompt == generate_prompt(by_category[r.category], r.seed) for r in bank[:50])
    assert generate_bank(40, seed=0, taxonomy=TAXONOMY) == bank[:40], "a bigger bank must extend a smaller one"
    other = generate_bank(40, seed=1, taxonomy=TAXONOMY)
    assert [r.category for r in other] != [r.category for r in bank[:40]]
    with pytest.raises(ValueError):
        generate_bank(-1)


def test_jsonl_round_trip_is_atomic(tmp_path):
    records = [PromptRecord(0, "a/b/crème brûlée", 'A "quoted"\nline with ünïcode', 7),
               *generate_bank(30, seed=3, taxonomy=TAXONOMY)]
    path = tmp_path / "bank.jsonl"
    assert write_jsonl(str(path), records) == len(records)
    assert read_jsonl(str(path)) == records
    assert PromptRecord.from_json(records[5].to_json()) == records[5]
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(records)

    def broken() -> Iterator[PromptRecord]:
        yield records[1]
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_jsonl(str(path), broken())
    assert read_jsonl(str(path)) == records, "an interrupted write must leave the old file intact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.jsonl"], "temp file left behind"


@pytest.mark.parametrize("bad_line, message", [
    (b"{not json", "not valid JSON"),
    (b'["a list"]', "expected a JSON object"),
    (b'{"index": 2, "category": "a/b/c", "seed": 1}', "missing key(s) prompt"),
    (b'{"index": "2", "category": "a/b/c", "prompt": "x", "seed": 1}', "'index' must be a non-negative integer"),
    (b'{"index": 2, "category": "a/b/c", "prompt": "x", "seed": -4}', "'seed' must be a non-negative integer"),
    (b'{"index": 2, "category": "a/b/c", "prompt": 5, "seed": 1}', "'prompt' must be a string"),
    (b'{"index": 2, "category": "a/b/c", "prompt": "\xff\xfe", "seed": 1}', "not UTF-8"),
])
def test_read_jsonl_names_file_and_line(tmp_path, bad_line, message):
    good = [r.to_json().encode("utf-8") for r in generate_bank(2, taxonomy=TAXONOMY)]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join([good[0], b"", bad_line, good[1]]) + b"\n")
    with pytest.raises(ValueError) as err:
        read_jsonl(str(path))
    text = str(err.value)
    assert text.startswith(f"{path}:3: ") and message in text and "\n" not in text


# --- filters ----------------------------------------------------------------------------------------------


def _valid(n: int, offset: int = 0) -> list[str]:
    """n well-formed, in-window, mutually dissimilar prompts."""
    return [generate_prompt(LEAVES[(offset + 37 * i) % len(LEAVES)], i) for i in range(n)]


def test_each_rule_drops_what_it_should_and_counts_match():
    base = _valid(16)
    cases = {
        "malformed": ["", "   ", base[0][:-1] + "\x07", base[1].replace(".", " (", 1), base[2] + ' "',
                      base[3].replace(" a ", " a a ", 1), base[4] + " so very red, so very red, so very red.",
                      "9 " * 120 + "fox.", base[5].replace("e", "\ufffd", 1)],
        "length": [base[6][:150].rstrip(), base[7] + " " + base[8]],
        "blocklist": [base[9].replace(".", ", a GUN on a table.", 1)[:MAX_CHARS].rsplit(" ", 1)[0] + "."],
        "near_duplicate": [base[10], base[10].replace(".", ", gently.", 1)],
    }
    texts = [base[11], *[t for ts in cases.values() for t in ts], base[12], base[13].replace(".", " gunboat.", 1)]
    records = [record(i, t) for i, t in enumerate(texts)]
    kept, report = filter_prompts(records)
    assert report.dropped == {"malformed": 9, "length": 2, "blocklist": 1, "near_duplicate": 1}
    assert report.total == len(records) and report.kept == len(kept) == len(records) - 13
    dropped = {i for i, _, _ in report.drops}
    assert [r.index for r in kept] == [i for i in range(len(records)) if i not in dropped]
    earlier = texts.index(base[10])
    assert earlier not in dropped and texts.index(cases["near_duplicate"][1]) in dropped, "the later copy goes"
    assert texts[-1] in [r.prompt for r in kept], "'gunboat' is not the whole word 'gun'"
    reasons = {rule: [why for _, r, why in report.drops if r == rule] for rule in report.dropped}
    assert any("repeated word 'a'" in why for why in reasons["malformed"])
    assert any("looping phrase" in why for why in reasons["malformed"])
    assert any("U+0007" in why for why in reasons["malformed"])
    assert reasons["blocklist"] == ["contains 'GUN'"]
    table = str(report)
    for rule, count in report.dropped.items():
        assert any(line.split()[:2] == [rule, str(count)] for line in table.splitlines()), table
    assert "kept" in table and str(report.kept) in table


def test_rules_apply_in_order_and_can_be_switched_off():
    short_and_blocked = "A nude study."  # too short and blocked: counted once, under the first rule (length)
    malformed_and_blocked = "A nude nude study " + "x" * 200
    kept, report = filter_prompts([record(0, short_and_blocked), record(1, malformed_and_blocked)])
    assert not kept and report.dropped == {"malformed": 1, "length": 1, "blocklist": 0, "near_duplicate": 0}
    base = _valid(1)[0]
    copies = [record(i, base) for i in range(3)]
    assert filter_prompts(copies)[1].dropped["near_duplicate"] == 2
    assert len(filter_prompts(copies, near_duplicate=None)[0]) == 3
    fox = base.replace(".", " near a red fox.", 1)
    assert filter_prompts([record(0, fox)], blocklist=["Red Fox"])[1].dropped["blocklist"] == 1
    assert filter_prompts([record(0, fox.replace("red fox", "red foxes"))], blocklist=["red fox"])[1].kept == 1
    assert filter_prompts([record(0, fox)], blocklist=[])[1].kept == 1
    assert filter_prompts([record(0, "x" * 60)], min_chars=10, max_chars=50)[1].dropped["length"] == 1
    with pytest.raises(TypeError):
        filter_prompts([], blocklist="gun")
    with pytest.raises(ValueError):
        filter_prompts([], min_chars=300, max_chars=200)


def test_minhash_estimates_jaccard_deterministically():
    a = " ".join(f"word{i}" for i in range(60))
    b = " ".join(f"word{i}" for i in range(20, 80))  # 38 of 78 distinct 3-grams shared
    exact = jaccard(shingles(a), shingles(b))
    sig_a, sig_b = MinHasher().signature(a), MinHasher().signature(b)
    assert abs(similarity(sig_a, sig_b) - exact) < 0.12
    assert similarity(sig_a, MinHasher().signature(a)) == 1.0
    assert (sig_a == MinHasher().signature(a)).all() and not (sig_a == MinHasher(seed=1).signature(a)).all()
    bands, rows = choose_bands(128, 0.8)
    assert bands * rows <= 128 and 1 - (1 - 0.8**rows) ** bands >= 0.99


def test_generated_bank_has_no_near_duplicates():
    bank = generate_bank(2500, seed=5, taxonomy=TAXONOMY)
    kept, report = filter_prompts(bank)
    assert report.kept == 2500, report.drops[:5]


# --- chat mode against a real local HTTP server -----------------------------------------------------------

GOOD = ("A red fox trots across a frost-covered meadow at dawn, its russet coat glowing against pale grass. "
        "Low golden sunlight rakes across the frame, a shallow depth of field softens distant birch trees, "
        "and a quiet, crisp mood settles over the scene. Shot on a telephoto lens, highly detailed.")


class _ChatHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.path, self.headers.get("Authorization"), body))
        mode = self.path.strip("/").split("/")[0]
        if mode == "slow":
            time.sleep(1.5)
        if mode == "error":
            self.send_response(500)
            self.end_headers()
            return
        content = {"good": '"' + GOOD.replace(". ", ".\n  ", 1) + '"', "short": "A red fox.",
                   "json": json.dumps({"prompt": GOOD}), "slow": GOOD}.get(mode, GOOD)
        payload = b"not json" if mode == "garbage" else json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the timed-out client hangs up before the slow reply: expected


@pytest.fixture(scope="module")
def chat_server() -> Iterator[_QuietServer]:
    server = _QuietServer(("127.0.0.1", 0), _ChatHandler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def test_chat_endpoint_url_rules():
    assert chat_endpoint("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_endpoint("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_endpoint("https://h/api/chat/completions") == "https://h/api/chat/completions"
    with pytest.raises(ValueError):
        chat_endpoint("ftp://h")
    assert clean_reply('<think>hmm</think> {"prompt": " A  fox "}') == "A fox"


def test_chat_writer_uses_valid_replies(chat_server):
    writer = ChatPromptWriter(chat_server.base + "/good", "tiny-model", timeout=5, api_key="k3y")
    assert writer(FOX, 11) == GOOD
    path, auth, body = chat_server.seen[-1]
    assert path == "/good/v1/chat/completions" and auth == "Bearer k3y" and body["model"] == "tiny-model"
    system, user = body["messages"]
    assert system["role"] == "system" and f"{MIN_CHARS} and {MAX_CHARS} characters" in system["content"]
    assert user["role"] == "user" and "red fox" in user["content"]
    json_writer = ChatPromptWriter(chat_server.base + "/json/v1/chat/completions", "m", timeout=5)
    assert json_writer(FOX, 2) == GOOD and chat_server.seen[-1][0] == "/json/v1/chat/completions"
    assert writer.fallbacks == json_writer.fallbacks == 0 and writer.requests == 1


@pytest.mark.parametrize("mode, timeout, reason", [
    ("short", 5, "outside 200-350"),
    ("slow", 0.3, "no reply within 0.3 s"),
    ("error", 5, "HTTP 500"),
    ("garbage", 5, "JSONDecodeError"),
])
def test_chat_writer_falls_back_per_item(chat_server, caplog, mode, timeout, reason):
    writer = ChatPromptWriter(chat_server.base + f"/{mode}", "m", timeout=timeout)
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="dataset.prompts.chat"):
        assert writer(FOX, 4) == generate_prompt(FOX, 4)
    assert time.perf_counter() - start < timeout + 1.0
    assert writer.requests == 1 and writer.fallbacks == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and reason in lines[0] and "red fox" in lines[0] and "\n" not in lines[0]


def test_bank_through_chat_counts_fallbacks(chat_server):
    writer = ChatPromptWriter(chat_server.base + "/short", "m", timeout=5)
    bank = generate_bank(6, seed=2, taxonomy=TAXONOMY, writer=writer, workers=3)
    assert writer.requests == writer.fallbacks == 6
    assert bank == generate_bank(6, seed=2, taxonomy=TAXONOMY), "fallbacks are the offline prompts"


# --- CLI --------------------------------------------------------------------------------------------------


def test_cli_writes_a_filtered_bank(tmp_path, capsys):
    out = tmp_path / "prompts.jsonl"
    assert cli_main(["--n", "40", "--seed", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "near_duplicate" in printed and "kept" in printed and "wrote 40 prompts" in printed
    assert read_jsonl(str(out)) == generate_bank(40, seed=3, taxonomy=TAXONOMY)


def test_cli_chat_mode_reports_duplicates(tmp_path, capsys, chat_server):
    out = tmp_path / "chat.jsonl"
    args = ["--n", "3", "--out", str(out), "--endpoint", chat_server.base + "/good", "--model", "m"]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "3 requests" in printed and "0 fell back" in printed
    assert [r.prompt for r in read_jsonl(str(out))] == [GOOD], "the server's identical replies are near duplicates"
    assert cli_main([*args, "--no-filter"]) == 0 and len(read_jsonl(str(out))) == 3


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "--n must be at least 1"),
    (["--endpoint", "http://127.0.0.1:9"], "--endpoint and --model go together"),
    (["--endpoint", "ftp://x", "--model", "m"], "not an http(s) URL"),
    (["--near-duplicate", "1.5"], "--near-duplicate must be in (0, 1]"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--n", "ten"], "invalid int value"),
])
def test_cli_bad_arguments_one_line_exit_2(tmp_path, capsys, args, message):
    assert cli_main(["--out", str(tmp_path / "p.jsonl"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "p.jsonl").exists()


def test_cli_unusable_paths_one_line_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    bad_taxonomy = tmp_path / "tax.json"
    bad_taxonomy.write_text("{")
    for args, message in [(["--out", str(blocker / "p.jsonl")], "does not exist"),
                          (["--out", str(tmp_path)], "is a folder"),
                          (["--out", str(tmp_path / "p.jsonl"), "--taxonomy", str(bad_taxonomy)], "not valid JSON"),
                          (["--out", str(tmp_path / "p.jsonl"), "--blocklist", str(tmp_path / "no.txt")], "No such")]:
        assert cli_main(["--n", "5", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_module_entry_point(tmp_path):
    out = subprocess.run([sys.executable, "-m", "dataset.prompts", "--n", "5", "--out", str(tmp_path / "p.jsonl")],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0 and "wrote 5 prompts" in out.stdout, out.stderr
    bad = subprocess.run([sys.executable, "-m", "dataset.prompts", "--n", "5"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--out" in bad.stderr


# --- bench charts -----------------------------------------------------------------------------------------


def test_charts_draw_pngs(tmp_path):
    bars = bar_chart(str(tmp_path / "b.png"), [3, 0, 7.5], ["200", "210", "220"], "t", "x", "y", size=(400, 300))
    lines = line_chart(str(tmp_path / "sub" / "l.png"), {"train": [(0, 1.0), (50, 0.4), (100, 0.25)],
                                                         "eval": [(100, 0.3)]}, "loss", "step", "loss")
    for path, size in ((bars, (400, 300)), (lines, (960, 540))):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == size
            colors = image.convert("RGB").getcolors(maxcolors=1 << 16)
            assert len(colors) > 10, "nothing drawn"
    with pytest.raises(ValueError):
        bar_chart(str(tmp_path / "x.png"), [1, 2], ["a"], "t", "x", "y")
    assert isinstance(TAXONOMY, Taxonomy)
