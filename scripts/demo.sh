#!/usr/bin/env bash
# Set up everything (scripts/setup.sh), then run the main job: a headless real ComfyUI with this pack
# generates images from the shipped workflow on the small embedded model and writes the PNGs.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
venv="${L2P_VENV:-$repo/.venv}"
cd "$repo"
exec "$venv/bin/python" -m scripts.demo "$@"
