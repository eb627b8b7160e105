"""Print the pack's requirement lines from pyproject.toml (for pip -r), so setup needs no build backend.

Usage: python scripts/pack_requirements.py dependencies [EXTRA ...]
"""

from __future__ import annotations

import pathlib
import sys
import tomllib


def requirements(groups: list[str]) -> list[str]:
    project = tomllib.loads((pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    lines: list[str] = []
    for group in groups:
        lines += project["dependencies"] if group == "dependencies" else project["optional-dependencies"][group]
    return lines


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:] or ["dependencies"])))
