#!/usr/bin/env bash
# Set up everything (scripts/setup.sh) and run every test: unit, parity, real-ComfyUI server tests.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
venv="$(python3 "$repo/harness/comfyui_home.py" --venv)"
cd "$repo"
"$venv/bin/ruff" check .
exec "$venv/bin/python" -m pytest "$@"
