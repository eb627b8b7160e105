"""Run an API-format ComfyUI workflow on a fresh headless ComfyUI with this pack loaded; collect the PNGs.

With no arguments this is the README's main job: the shapes-world demo (``workflows/l2p_shapes_demo``) on
the embedded default model, the tiny L2P model trained by ``python -m bench.replicate --ship`` and shipped
in ``shapes_world/models`` with its text encoder. A handful of prompts, a few images each, every image
scored by the world's procedural GenEval (``scores.json``, ``scores.md`` next to the PNGs in demo_output/).
``--tiny`` runs the tiny-demo workflow on random-weight tiny models of the real architectures
(rebuilt from their seed by ``l2p.tiny.write_demo_models``); ``--workflow`` runs any API workflow.

    python -m scripts.demo
    python -m scripts.demo --tiny
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

from harness.graph import check_api_format, set_inputs
from harness.server import ComfyServer, ComfyServerError, PromptRejected

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "demo_output"
TINY_WORKFLOW = REPO / "workflows" / "api" / "l2p_tiny_demo.api.json"
SHAPES_WORKFLOW = REPO / "workflows" / "api" / "l2p_shapes_demo.api.json"
SHIPPED = REPO / "shapes_world" / "models"
DEMO_L2P, DEMO_TE = "l2p-shapes-demo.safetensors", "l2p-shapes-te.safetensors"
# One prompt per GenEval task of the world (shapes_world/prompts.py grammar).
DEMO_PROMPTS = (
    "a photo of a red circle on a plain background",
    "a photo of a blue colored square on a striped background",
    "a green triangle and a yellow circle on a plain background",
    "three purple squares on a plain background",
    "a red square to the left of a blue circle on a dotted background",
    "a yellow colored triangle and a green colored square on a striped background",
)
IMAGES_PER_PROMPT = 4


def tiny_models(folder: pathlib.Path) -> dict[str, list[pathlib.Path]]:
    """The embedded default model files, written into ``folder`` as models/<kind>/ entries."""
    from l2p.tiny import write_demo_models

    l2p_path, te_path = write_demo_models(str(folder))
    return {"l2p": [pathlib.Path(l2p_path)], "text_encoders": [pathlib.Path(te_path)]}


def shapes_models() -> dict[str, list[pathlib.Path]]:
    """The shapes world's trained model and its text encoder, as models/<kind>/ entries."""
    files = {"l2p": [SHIPPED / "l2p" / DEMO_L2P], "text_encoders": [SHIPPED / "text_encoders" / DEMO_TE]}
    missing = [str(p) for ps in files.values() for p in ps if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the embedded model is missing ({missing[0]}): restore shapes_world/models from git, "
                                "or rebuild it with python -m bench.replicate --ship")
    return files


def _positive(node: dict[str, Any]) -> bool:
    return bool(node["inputs"].get("text"))  # the negative prompt is the empty one


def prompt_graph(workflow: dict[str, Any], text: str, seed: int, batch: int, model: str = DEMO_L2P) -> dict[str, Any]:
    """The demo workflow with its positive prompt, seed, batch size and model file set (found by node type)."""
    graph = set_inputs(workflow, "L2PDemoTextEncode", where=_positive, text=text)
    graph = set_inputs(graph, "KSampler", seed=seed)
    graph = set_inputs(graph, "L2PEmptyImage", batch_size=batch)
    return set_inputs(graph, "L2PModelLoader", ckpt_name=model)


def run_workflows(
    graphs: Sequence[dict[str, Any]],
    out_dir: str | pathlib.Path,
    models: Mapping[str, Iterable[str | pathlib.Path]] | None = None,
    *,
    timeout: float = 1800.0,
    cpu: bool = True,
    link_models: bool = True,
) -> list[list[pathlib.Path]]:
    """Start one server, place ``models`` ({models subfolder: files}), run each graph, copy its PNGs to out_dir.

    Models are symlinked by default (weights can be GBs); ``link_models=False`` copies them.
    Raises PromptRejected (validation), RuntimeError (a node raised; message has ComfyUI's exception text),
    TimeoutError or ComfyServerError (server died/hung; message has the log tail).
    """
    for graph in graphs:
        check_api_format(graph)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with ComfyServer(cpu=cpu) as server:
        failures = server.import_failures()
        if failures:
            print(f"warning: custom nodes failed to import: {failures}", file=sys.stderr)
        for folder, files in (models or {}).items():
            for src in files:
                server.add_model(pathlib.Path(src), folder, link=link_models)
        copied: list[list[pathlib.Path]] = []
        for graph in graphs:
            result = server.run(graph, timeout=timeout)
            if not result.ok:
                raise RuntimeError(f"workflow failed: {result.describe()}\n{server.log_tail(30)}")
            copied.append([])
            for png in server.output_images(result):
                dest = out / png.name
                shutil.copy2(png, dest)
                copied[-1].append(dest)
        return copied


def run_workflow(api_workflow: dict[str, Any], out_dir: str | pathlib.Path,
                 models: Mapping[str, Iterable[str | pathlib.Path]] | None = None, **kwargs) -> list[pathlib.Path]:
    """One workflow on a fresh server (see ``run_workflows``)."""
    return run_workflows([api_workflow], out_dir, models, **kwargs)[0]


def score_demo(images: Sequence[Sequence[pathlib.Path]], prompts: Sequence[str]) -> dict[str, Any]:
    """Each image checked against its prompt by the world's procedural GenEval, strict and at colour level.

    Strict: right colour and right outline (circle, square, triangle). Colour level: any outline, colour,
    count, binding and position still checked (``shapes_world.score.judge``). The top-level numbers are the
    strict ones; ``colour_level`` has the same keys."""
    import numpy as np
    from PIL import Image

    from shapes_world import detect, spec_from_prompt
    from shapes_world.score import judge, summarize

    rows, tasks, strict, colour = [], [], [], []
    for prompt, paths in zip(prompts, images, strict=True):
        spec = spec_from_prompt(prompt)
        for path in paths:
            image = np.asarray(Image.open(path).convert("RGB"))
            found = detect(image)
            exact, loose = judge(found, spec, image.shape[0]), judge(found, spec, image.shape[0], match_shape=False)
            rows.append({"image": path.name, "prompt": prompt, "task": spec.task, "correct": exact.correct,
                         "colour_level": loose.correct, "reasons": list(exact.reasons)})
            strict.append(exact.correct)
            colour.append(loose.correct)
            tasks.append(spec.task)
    return {**summarize(strict, tasks), "colour_level": summarize(colour, tasks), "images": rows}


def write_scores(scores: dict[str, Any], out: pathlib.Path) -> None:
    (out / "scores.json").write_text(json.dumps(scores, indent=1) + "\n", encoding="utf-8")
    lines = ["# Demo scores (procedural GenEval of the shapes world)", "",
             f"Over {scores['n']} images (mean of per-task accuracy): GenEval **{scores['overall']:.3f}**, "
             f"colour level **{scores['colour_level']['overall']:.3f}** (any outline counts; colour, count, binding "
             "and position are still checked).", "",
             "| image | prompt | GenEval | colour level | why (GenEval) |", "|---|---|---|---|---|"]
    yes = {True: "yes", False: "no"}
    lines += [f"| {r['image']} | {r['prompt']} | {yes[r['correct']]} | {yes[r['colour_level']]} | "
              f"{'; '.join(r['reasons'])} |" for r in scores["images"]]
    (out / "scores.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_demo(out: pathlib.Path, models: Mapping[str, Iterable[pathlib.Path]] | None = None, *, seed: int = 42,
             prompts: Sequence[str] = DEMO_PROMPTS, model: str = DEMO_L2P, **kwargs) -> dict[str, Any]:
    """The README's main job; returns the scores (also written to ``out``). ``model``: the L2P file's name."""
    workflow = json.loads(SHAPES_WORKFLOW.read_text())
    graphs = [prompt_graph(workflow, p, seed + i, IMAGES_PER_PROMPT, model) for i, p in enumerate(prompts)]
    images = run_workflows(graphs, out, models or shapes_models(), **kwargs)
    scores = score_demo(images, prompts)
    write_scores(scores, out)
    return scores


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
    parser.add_argument("--workflow", type=pathlib.Path,
                        help="run this API-format workflow JSON instead of the scored shapes demo")
    parser.add_argument("--tiny", action="store_true",
                        help="the tiny-demo workflow on random-weight models (structure, not content)")
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

    started = time.monotonic()
    models = _parse_models(args.model) if args.model else None
    try:
        if args.workflow is None and not args.tiny:
            scores = run_demo(args.out, models, timeout=args.timeout, cpu=not args.gpu,
                              link_models=not args.copy_models)
            for row in scores["images"]:
                print(f"{row['image']}: {'correct' if row['correct'] else 'wrong'} - {row['prompt']}")
            print(f"procedural GenEval {scores['overall']:.3f}, colour level {scores['colour_level']['overall']:.3f} "
                  f"over {scores['n']} images; PNGs, scores.json and scores.md in {args.out} "
                  f"({time.monotonic() - started:.0f} s including ComfyUI start-up)")
            return 0
        workflow = json.loads((args.workflow or TINY_WORKFLOW).read_text())
        with tempfile.TemporaryDirectory(prefix="l2p_demo_models_") as tmp:
            pngs = run_workflow(workflow, args.out, models or tiny_models(pathlib.Path(tmp)), timeout=args.timeout,
                                cpu=not args.gpu, link_models=not args.copy_models)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, json.JSONDecodeError) as err:
        print(f"error: cannot read the workflow: {err}", file=sys.stderr)
        return 2
    except (PromptRejected, ComfyServerError, RuntimeError, TimeoutError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for png in pngs:
        print(png)
    print(f"{len(pngs)} image(s) in {args.out} ({time.monotonic() - started:.0f} s including ComfyUI start-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
