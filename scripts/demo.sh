#!/usr/bin/env bash
# Set up what the demo needs (scripts/setup.sh --demo: no test tools), then run the main job: a headless real
# ComfyUI with this pack generates images for a handful of prompts from the shipped shapes-world workflow on the
# small embedded trained model, scores each against its prompt, and writes the PNGs and the scores (demo_output/).
# Arguments go to the demo: --prompt TEXT (repeatable), --seed N, --count N, --out DIR (--help lists them all).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh" --demo
venv="$(python3 "$repo/harness/comfyui_home.py" --venv)"
cd "$repo"
exec "$venv/bin/python" -m scripts.demo "$@"
