"""Run an API-format ComfyUI workflow on a fresh headless ComfyUI with this pack loaded; collect the PNGs.

With no arguments this is the README's main job: the shipped tiny-demo workflow on the embedded default
model (a tiny L2P model and Qwen3 text encoder of the real architectures, rebuilt from their seed by
``l2p.tiny.write_demo_models``), images written to demo_output/.

    python -m scripts.demo
    python -m scripts.demo --workflow my_api.json --model l2p=/path/model.safetensors --out demo_output
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scripts.comfy_server import ComfyServer, ComfyServerError, PromptRejected

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "demo_output"
DEFAULT_WORKFLOW = REPO / "workflows" / "api" / "l2p_tiny_demo.api.json"


def embedded_models(folder: pathlib.Path) -> dict[str, list[pathlib.Path]]:
    """The embedded default model files, written into ``folder`` as models/<kind>/ entries."""
    from l2p.tiny import write_demo_models

    l2p_path, te_path = write_demo_models(str(folder))
    return {"l2p": [pathlib.Path(l2p_path)], "text_encoders": [pathlib.Path(te_path)]}


def run_workflow(
    api_workflow: dict[str, Any],
    out_dir: str | pathlib.Path,
    models: Mapping[str, Iterable[str | pathlib.Path]] | None = None,
    *,
    timeout: float = 1800.0,
    cpu: bool = True,
    link_models: bool = True,
) -> list[pathlib.Path]:
    """Start a server, place ``models`` ({models subfolder: files}), run the workflow, copy its PNGs to out_dir.

    Models are symlinked by default (weights can be GBs); ``link_models=False`` copies them.
    Raises PromptRejected (validation), RuntimeError (a node raised; message has ComfyUI's exception text),
    TimeoutError or ComfyServerError (server died/hung; message has the log tail).
    """
    if "nodes" in api_workflow and isinstance(api_workflow.get("nodes"), list):
        raise ValueError("this is a UI-format workflow: export it with 'Export (API)' and pass that file")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with ComfyServer(cpu=cpu) as server:
        failures = server.import_failures()
        if failures:
            print(f"warning: custom nodes failed to import: {failures}", file=sys.stderr)
        for folder, files in (models or {}).items():
            for src in files:
                server.add_model(pathlib.Path(src), folder, link=link_models)
        result = server.run(api_workflow, timeout=timeout)
        if not result.ok:
            raise RuntimeError(f"workflow failed: {result.describe()}\n{server.log_tail(30)}")
        copied: list[pathlib.Path] = []
        for png in server.output_images(result):
            dest = out / png.name
            shutil.copy2(png, dest)
            copied.append(dest)
        return copied


def _parse_models(specs: Sequence[str]) -> dict[str, list[pathlib.Path]]:
    models: dict[str, list[pathlib.Path]] = {}
    for spec in specs:
        folder, sep, path = spec.partition("=")
        if not sep or not folder or not path:
            raise SystemExit(f"--model expects FOLDER=PATH (e.g. l2p=/models/x.safetensors), got {spec!r}")
        src = pathlib.Path(path).expanduser()
        if not src.exists():
            raise SystemExit(f"model file not found: {src}")
        models.setdefault(folder, []).append(src)
    return models


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", type=pathlib.Path, default=DEFAULT_WORKFLOW,
                        help="API-format workflow JSON (default: the tiny demo on the embedded model)")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="FOLDER=PATH",
        help="put a model file into models/FOLDER/ (e.g. l2p=..., diffusion_models=..., vae=...); repeatable",
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=DEFAULT_OUT, help="where the PNGs go (default: %(default)s)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed for the workflow")
    parser.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU (default: --cpu)")
    parser.add_argument("--copy-models", action="store_true", help="copy model files instead of symlinking them")
    args = parser.parse_args(argv)

    try:
        workflow = json.loads(args.workflow.read_text())
    except (OSError, json.JSONDecodeError) as err:
        print(f"error: cannot read workflow {args.workflow}: {err}", file=sys.stderr)
        return 2
    tmp = tempfile.TemporaryDirectory(prefix="l2p_demo_models_")
    models = _parse_models(args.model) if args.model else embedded_models(pathlib.Path(tmp.name))
    started = time.monotonic()
    try:
        pngs = run_workflow(
            workflow,
            args.out,
            models,
            timeout=args.timeout,
            cpu=not args.gpu,
            link_models=not args.copy_models,
        )
    except (PromptRejected, ComfyServerError, RuntimeError, TimeoutError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        tmp.cleanup()
    for png in pngs:
        print(png)
    print(f"{len(pngs)} image(s) in {args.out} ({time.monotonic() - started:.0f} s including ComfyUI start-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
