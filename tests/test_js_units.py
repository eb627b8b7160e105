"""The frontend's pure JavaScript (js/l2p_format.js, js/l2p_wiring.js) under Node's own test runner."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_js_unit_tests_pass():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: install Node.js (Debian package nodejs) to run the frontend's unit tests",
                    pytrace=False)
    done = subprocess.run([node, "--test", "js/tests/"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    declared = sum(len(re.findall(r"^test\(", f.read_text(encoding="utf-8"), re.M))
                   for f in (REPO / "js" / "tests").glob("*.mjs"))
    assert declared >= 14  # every file's tests are counted (6 formatting, 1 hint text, 7 graph walking)
    assert "# fail 0" in done.stdout and f"# pass {declared}\n" in done.stdout, done.stdout[-1500:]
