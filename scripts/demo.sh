#!/usr/bin/env bash
# Set up everything (scripts/setup.sh), then run the main job: a headless real ComfyUI with this pack
# generates images for a handful of prompts from the shipped shapes-world workflow on the small embedded trained
# model, scores each against its prompt, and writes the PNGs and the scores (demo_output/).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
venv="$(python3 "$repo/harness/comfyui_home.py" --venv)"
cd "$repo"
exec "$venv/bin/python" -m scripts.demo "$@"
