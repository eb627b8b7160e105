"""Run an API-format ComfyUI workflow on a fresh headless ComfyUI with this pack loaded; collect the PNGs.

With no arguments this is the README's main job: the shapes-world demo (``workflows/l2p_shapes_demo``) on
the embedded default model, the tiny L2P model trained by ``python -m bench.replicate --ship`` and shipped
in ``shapes_world/models`` with its text encoder. A handful of prompts, a few images each, every image
scored by the world's procedural GenEval (``scores.json``, ``scores.md`` next to the PNGs in demo_output/),
with progress and both verdicts printed as it goes. ``--prompt`` (repeatable), ``--seed`` and ``--count``
change what is rendered. ``--tiny`` runs the tiny-demo workflow on random-weight tiny models of the real
architectures (rebuilt from their seed by ``l2p.tiny.write_demo_models``); ``--workflow`` runs any API workflow.

    python -m scripts.demo
    python -m scripts.demo --prompt "two red circles on a plain background" --count 2 --seed 7
    python -m scripts.demo --tiny
    python -m scripts.demo --workflow my_api.json --model l2p=/path/model.safetensors --out demo_output
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

from harness.graph import TINY_DEMO, check_api_format, set_inputs
from harness.server import ComfyServer, ComfyServerError, PromptRejected, RunResult

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "demo_output"
TINY_WORKFLOW = TINY_DEMO
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
DEMO_SEED = 42  # prompt i is sampled with seed DEMO_SEED + i
MAX_COUNT = 64  # images per prompt: one batch each, on CPU
MAX_SEED = 2**64 - 1  # KSampler's seed range
LEGEND = ("Each image is judged twice by the shapes world's procedural GenEval:\n"
          "  colour level = the right colours, count and placement, any outline\n"
          "  strict       = that and the right outline (circle, square, triangle), GenEval's own rule")


class Console:
    """The demo's progress on ``stream`` (stdout): whole lines, plus on a terminal a status line that the next
    line overwrites (the sampler's steps). ``quiet`` prints nothing (library use)."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.tty = not quiet and self.stream.isatty()
        self._status = False

    def line(self, text: str) -> None:
        if self.quiet:
            return
        self.clear()
        print(text, file=self.stream, flush=True)

    def status(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self._status = True

    def clear(self) -> None:
        """End the status line, if one is showing (before an error message, say)."""
        if self._status:
            self.stream.write("\r\033[K")
            self._status = False


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


def _comfy_version(folder: pathlib.Path) -> str:
    with contextlib.suppress(OSError):
        found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", (folder / "comfyui_version.py").read_text())
        if found:
            return found.group(1)
    return folder.name


def run_workflows(
    graphs: Sequence[dict[str, Any]],
    out_dir: str | pathlib.Path,
    models: Mapping[str, Iterable[str | pathlib.Path]] | None = None,
    *,
    timeout: float = 1800.0,
    cpu: bool = True,
    link_models: bool = True,
    console: Console | None = None,
    on_images: Callable[[int, list[pathlib.Path], RunResult], None] | None = None,
) -> list[list[pathlib.Path]]:
    """Start one server, place ``models`` ({models subfolder: files}), run each graph, copy its PNGs to out_dir.

    Models are symlinked by default (weights can be GBs); ``link_models=False`` copies them. ``console`` gets
    the start-up and step progress; ``on_images(index, pngs, result)`` runs as soon as graph ``index`` is done.
    Raises PromptRejected (validation), RuntimeError (a node raised; message has ComfyUI's exception text),
    TimeoutError or ComfyServerError (server died/hung; message has the log tail).
    """
    console = console or Console(quiet=True)
    for graph in graphs:
        check_api_format(graph)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    server = ComfyServer(cpu=cpu)
    console.line(f"starting ComfyUI {_comfy_version(server.comfy_dir)} (headless, {'CPU' if cpu else 'GPU'}; "
                 "it imports torch and every node first) ...")
    with server:
        console.line(f"ComfyUI ready in {server.startup_seconds:.0f} s")
        failures = server.import_failures()
        if failures:
            print(f"warning: custom nodes failed to import: {failures}", file=sys.stderr)
        for folder, files in (models or {}).items():
            for src in files:
                server.add_model(pathlib.Path(src), folder, link=link_models)
        copied: list[list[pathlib.Path]] = []
        for index, graph in enumerate(graphs):
            where = f"[{index + 1}/{len(graphs)}]"

            def steps(kind: str, data: dict[str, Any], where: str = where) -> None:
                if kind == "progress" and data.get("max"):
                    console.status(f"{where} sampling, step {data.get('value')}/{data['max']} ...")

            console.status(f"{where} rendering ...")
            try:
                result = server.run(graph, timeout=timeout, on_event=steps)
            finally:
                console.clear()
            if not result.ok:
                raise RuntimeError(f"workflow failed: {result.describe()}\n{server.log_tail(30)}")
            copied.append([])
            for png in server.output_images(result):
                dest = out / png.name
                shutil.copy2(png, dest)
                copied[-1].append(dest)
            if on_images is not None:
                on_images(index, copied[-1], result)
        return copied


def run_workflow(api_workflow: dict[str, Any], out_dir: str | pathlib.Path,
                 models: Mapping[str, Iterable[str | pathlib.Path]] | None = None, **kwargs) -> list[pathlib.Path]:
    """One workflow on a fresh server (see ``run_workflows``)."""
    return run_workflows([api_workflow], out_dir, models, **kwargs)[0]


# ------------------------------------------------------------------------------------------------- scoring

def spec_for(prompt: str) -> Any | None:
    """The world's Spec for ``prompt`` (``shapes_world.spec_from_prompt``), or None when the grammar does not
    cover it. Two shorthands are accepted because the scorer ignores them: no background ("two red circles")
    and no "a photo of" ("a red circle")."""
    from shapes_world import spec_from_prompt

    text = " ".join(prompt.lower().split()).rstrip(".")
    tries = [text] + ([text + " on a plain background"] if "background" not in text else [])
    for candidate in tries + ["a photo of " + t for t in tries]:
        with contextlib.suppress(ValueError):
            return spec_from_prompt(candidate)
    return None


_REASONS = (  # shapes_world.score.judge's check texts -> words for the console
    (re.compile(r"^(?:present|bound colour): (.+?): need (\d+), found (\d+)(.*)$"), r"\1: need \2, found \3\4"),
    (re.compile(r"^count (.+?): need exactly (\d+), found (\d+)$"), r"\1: need exactly \2, found \3"),
    (re.compile(r"^relation (.+?) (left_of|right_of|above|below) (.+?): (.+)$"), r"\1 is not \2 \3: centres \4"),
)


def plain_reason(reason: str) -> str:
    """One of ``judge``'s reasons in plain words: no "fail:"/check prefix, "left of" not "left_of", and at colour
    level "red shape" for the scorer's "red object" (any outline)."""
    text = reason.split(": ", 1)[1] if reason.startswith(("ok: ", "fail: ")) else reason
    for pattern, words in _REASONS:
        if pattern.match(text):
            text = pattern.sub(words, text)
            break
    text = re.sub(r"\(the object found is ([\w/]+)\)", r"(colours found instead: \1)", text.replace("_of", " of"))
    return re.sub(r"\b(\w+) object\b", r"\1 shape", text)


def _verdict(correct: bool | None, reasons: Sequence[str]) -> str:
    if correct:
        return "pass"
    why = "; ".join(plain_reason(r) for r in reasons if r.startswith("fail: "))
    return f"FAIL - {why}" if why else "FAIL"


def score_images(paths: Sequence[pathlib.Path], prompt: str, seed: int | None = None) -> list[dict[str, Any]]:
    """One row per image: the strict verdict (right colour and outline) and the colour-level one (any outline;
    colour, count, binding and position still checked), each with the scorer's reasons
    (``shapes_world.score.judge``); ``scorable`` False (verdicts None) when the grammar does not cover ``prompt``."""
    import numpy as np
    from PIL import Image

    from shapes_world import detect
    from shapes_world.score import judge

    spec = spec_for(prompt)
    rows = []
    for path in paths:
        row: dict[str, Any] = {"image": path.name, "prompt": prompt, "seed": seed, "scorable": spec is not None,
                               "task": None, "correct": None, "colour_level": None, "reasons": [],
                               "colour_level_reasons": []}
        if spec is not None:
            image = np.asarray(Image.open(path).convert("RGB"))
            found = detect(image)
            exact, loose = judge(found, spec, image.shape[0]), judge(found, spec, image.shape[0], match_shape=False)
            row.update(task=spec.task, correct=exact.correct, colour_level=loose.correct, reasons=list(exact.reasons),
                       colour_level_reasons=list(loose.reasons))
        rows.append(row)
    return rows


def summarize_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """GenEval's numbers over the scorable rows (strict at the top level, ``colour_level`` the same keys), the rows
    under ``images`` and how many were not scorable under ``unscored``."""
    from shapes_world.score import summarize

    scored = [r for r in rows if r["scorable"]]
    tasks = [r["task"] for r in scored]
    return {**summarize([r["correct"] for r in scored], tasks),
            "colour_level": summarize([r["colour_level"] for r in scored], tasks),
            "unscored": len(rows) - len(scored), "images": list(rows)}


def score_demo(images: Sequence[Sequence[pathlib.Path]], prompts: Sequence[str]) -> dict[str, Any]:
    """Each image checked against its prompt, strict and at colour level (``score_images``, ``summarize_rows``)."""
    return summarize_rows([row for prompt, paths in zip(prompts, images, strict=True)
                           for row in score_images(paths, prompt)])


def write_scores(scores: dict[str, Any], out: pathlib.Path) -> None:
    (out / "scores.json").write_text(json.dumps(scores, indent=1) + "\n", encoding="utf-8")
    unscored = f" {scores['unscored']} image(s) not scorable (prompt outside the world's grammar)." \
        if scores.get("unscored") else ""
    lines = ["# Demo scores (procedural GenEval of the shapes world)", "",
             f"Over {scores['n']} scored images (mean of per-task accuracy): GenEval **{scores['overall']:.3f}**, "
             f"colour level **{scores['colour_level']['overall']:.3f}** (any outline counts; colour, count, binding "
             f"and position are still checked).{unscored}", "",
             "| image | prompt | GenEval | colour level | why (GenEval) |", "|---|---|---|---|---|"]
    yes = {True: "yes", False: "no", None: "not scorable"}
    lines += [f"| {r['image']} | {r['prompt']} | {yes[r['correct']]} | {yes[r['colour_level']]} | "
              f"{'; '.join(r['reasons'])} |" for r in scores["images"]]
    (out / "scores.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _remove_previous(out: pathlib.Path) -> None:
    """Remove the PNGs an earlier demo run listed in ``out/scores.json``, so the folder shows this run only."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError, AttributeError):
        for row in json.loads((out / "scores.json").read_text())["images"]:
            name = str(row["image"])
            if name == pathlib.Path(name).name and name.endswith(".png") and (out / name).is_file():
                (out / name).unlink()


def run_demo(out: pathlib.Path, models: Mapping[str, Iterable[pathlib.Path]] | None = None, *,
             seed: int = DEMO_SEED, prompts: Sequence[str] = DEMO_PROMPTS, count: int = IMAGES_PER_PROMPT,
             model: str = DEMO_L2P, console: Console | None = None, **kwargs) -> dict[str, Any]:
    """The README's main job; returns the scores (also written to ``out``). Prompt i is sampled with seed
    ``seed + i``, ``count`` images each. ``model``: the L2P file's name. ``console`` gets progress and verdicts."""
    console = console or Console(quiet=True)
    out = pathlib.Path(out)
    workflow = json.loads(SHAPES_WORKFLOW.read_text())
    graphs = [prompt_graph(workflow, p, seed + i, count, model) for i, p in enumerate(prompts)]
    for prompt in prompts:
        if spec_for(prompt) is None:
            console.line(f"note: {prompt!r} is outside the shapes world's prompt grammar (shapes_world/prompts.py): "
                         "its images are written but not scored; scorable prompts read like 'two red circles on a "
                         "plain background' or 'a red square to the left of a blue circle on a dotted background'")
    _remove_previous(out)
    rows: list[dict[str, Any]] = []

    def report(index: int, paths: list[pathlib.Path], result: RunResult) -> None:
        new = score_images(paths, prompts[index], seed + index)
        rows.extend(new)
        if index == 0:
            console.line(LEGEND)
        console.line(f"[{index + 1}/{len(prompts)}] {prompts[index]!r} (seed {seed + index}): "
                     f"{len(paths)} image(s) in {result.seconds:.0f} s")
        width = max((len(r["image"]) for r in new), default=0)
        for row in new:
            if not row["scorable"]:
                console.line(f"  {row['image']:<{width}}  not scorable (prompt outside the world's grammar)")
                continue
            console.line(f"  {row['image']:<{width}}  colour level: "
                         f"{_verdict(row['colour_level'], row['colour_level_reasons'])}")
            console.line(f"  {'':<{width}}  strict:       {_verdict(row['correct'], row['reasons'])}")

    images = ("image" if count == 1 else "images")
    seeds = f"seed {seed}" if len(prompts) == 1 else f"seeds {seed}-{seed + len(prompts) - 1}"
    console.line(f"rendering {len(prompts)} prompt(s) x {count} {images} ({seeds}) into {out}")
    run_workflows(graphs, out, models or shapes_models(), console=console, on_images=report, **kwargs)
    scores = {**summarize_rows(rows), "seed": seed, "count": count}
    write_scores(scores, out)
    return scores


def summary_line(scores: dict[str, Any]) -> str:
    """The demo's last line but one: both GenEval numbers and how many images passed each verdict."""
    n, rows = scores["n"], scores["images"]
    unscored = f"; {scores['unscored']} image(s) not scorable" if scores.get("unscored") else ""
    if n == 0:
        return f"summary: no image could be scored{unscored}"
    passed = sum(bool(r["colour_level"]) for r in rows), sum(bool(r["correct"]) for r in rows)
    return (f"summary: colour level {scores['colour_level']['overall']:.3f} ({passed[0]} of {n} images pass), "
            f"strict GenEval {scores['overall']:.3f} ({passed[1]} of {n}){unscored}; "
            "scores are GenEval's mean of per-task accuracy")


# ---------------------------------------------------------------------------------------------------- CLI

class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, no usage block
        raise _UsageError(message)


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, got {text!r}")
        return value

    return parse


def _prompt(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty (the empty prompt is the negative one)")
    return " ".join(text.split())


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


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m scripts.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", action="append", type=_prompt, metavar="TEXT", dest="prompts",
                        help="render this prompt instead of the six built-in ones; repeatable. Prompts in the shapes "
                             "world's grammar (e.g. 'two red circles', 'a red square to the left of a blue circle "
                             "on a dotted background') are scored, others only rendered")
    parser.add_argument("--seed", type=_whole(0, MAX_SEED), metavar="N",
                        help=f"base seed: prompt i is sampled with seed N+i (default: {DEMO_SEED})")
    parser.add_argument("--count", type=_whole(1, MAX_COUNT), metavar="N",
                        help=f"images per prompt, 1 to {MAX_COUNT} (default: {IMAGES_PER_PROMPT})")
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
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed for each workflow")
    parser.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU (default: --cpu)")
    parser.add_argument("--copy-models", action="store_true", help="copy model files instead of symlinking them")
    args = parser.parse_args(argv)
    shapes_only = [flag for flag, given in (("--prompt", args.prompts), ("--seed", args.seed is not None),
                                            ("--count", args.count is not None)) if given]
    if (args.workflow is not None or args.tiny) and shapes_only:
        parser.error(f"{'/'.join(shapes_only)}: only for the shapes demo, not with --workflow or --tiny")
    prompts = args.prompts or DEMO_PROMPTS
    args.seed = DEMO_SEED if args.seed is None else args.seed
    args.count = IMAGES_PER_PROMPT if args.count is None else args.count
    if args.seed + len(prompts) - 1 > MAX_SEED:
        parser.error(f"--seed {args.seed} is too large for {len(prompts)} prompts (seeds go up to {MAX_SEED})")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file, not a folder")
    args.prompts = tuple(prompts)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _args(argv)
    except _UsageError as err:
        print(f"error: {err} (python -m scripts.demo --help lists the options)", file=sys.stderr)
        return 2
    started = time.monotonic()
    models = _parse_models(args.model) if args.model else None
    console = Console()
    try:
        if args.workflow is None and not args.tiny:
            scores = run_demo(args.out, models, seed=args.seed, prompts=args.prompts, count=args.count,
                              console=console, timeout=args.timeout, cpu=not args.gpu,
                              link_models=not args.copy_models)
            console.line(summary_line(scores))
            console.line(f"PNGs, scores.md and scores.json in {args.out} "
                         f"({time.monotonic() - started:.0f} s including ComfyUI start-up)")
            return 0
        workflow = json.loads((args.workflow or TINY_WORKFLOW).read_text())
        with tempfile.TemporaryDirectory(prefix="l2p_demo_models_") as tmp:
            pngs = run_workflow(workflow, args.out, models or tiny_models(pathlib.Path(tmp)), timeout=args.timeout,
                                cpu=not args.gpu, link_models=not args.copy_models, console=console)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as err:
        print(f"error: cannot read the workflow: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err}" if args.workflow is None else f"error: cannot read the workflow: {err}",
              file=sys.stderr)
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
