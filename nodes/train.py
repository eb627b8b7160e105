"""L2PTrain: runs training/launch.py as a subprocess and shows it in ComfyUI (progress bar, events, Cancel).

The trainer runs in its own process (ComfyUI's Python, an argument list, never a shell), so a crash or
an out-of-memory in training never takes the server down, and several GPUs can be used through
accelerate. Its JSON lines drive the node's progress bar and validation previews, are re-sent as
``l2p.train`` websocket events for the frontend, and are kept in ``<run>/events.jsonl``. Cancel sends
SIGINT: the trainer finishes the step, saves a checkpoint and exits; rerun with resume to continue.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import queue
import signal
import subprocess
import sys
import threading

import folder_paths
from comfy_api.latest import io

from ..l2p.policies import POLICIES
from ..l2p.text_encoding import find_tokenizer
from ..training.contract import WS_EVENT, TrainConfig, error_line, parse_event, to_toml, ws_payload
from .comfy_core import ProgressBar, comfyui_install, model_management
from .files import checkpoint_names, checkpoint_path, new_checkpoint_path, subpath

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "training", "launch.py")
RUNS = "l2p_runs"
CACHED = "cached (no text encoder)"


def launch_argv(config_path: str, processes: int) -> list[str]:
    """ComfyUI's own Python runs the trainer; several processes go through accelerate (DDP)."""
    if processes <= 1:
        return [sys.executable, LAUNCH, "--config", config_path]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--dynamo_backend", "no", LAUNCH, "--config", config_path]


def _view(event: dict) -> list[dict] | None:
    """Validation images as /view arguments (they live under the output directory) for the frontend."""
    if event.get("event") != "validation":
        return None
    root = folder_paths.get_output_directory()
    views = []
    for path in event.get("images", []):
        rel = os.path.relpath(path, root)
        if not rel.startswith(".."):
            sub, name = os.path.split(rel)
            views.append({"filename": name, "subfolder": sub.replace(os.sep, "/"), "type": "output"})
    return views


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _stderr_reader(stream, tail: collections.deque, state: dict) -> None:
    """Keeps the last stderr lines (for a crash) and the trainer's last one-line refusal (``error: ...``)."""
    for line in stream:
        tail.append(line.rstrip())
        refusal = error_line(line)
        if refusal is not None:
            state["error"] = refusal


class L2PTrain(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2PTrain",
            display_name="L2P Train",
            category="L2P/train",
            description="Fine-tunes an L2P model on a dataset folder with the source model's flow matching "
                        "(training/launch.py in a subprocess: progress bar, validation previews, Cancel saves a "
                        "checkpoint). Exports into models/l2p and returns the file name.",
            inputs=[
                io.Combo.Input("model", options=checkpoint_names(),
                               tooltip="The L2P checkpoint to train (from L2P Convert + Save, or a previous run)."),
                io.String.Input("dataset", default="l2p_dataset",
                                tooltip="Training folder in ComfyUI's output directory: from L2P Dataset Writer, a "
                                        "diffusers imagefolder, or images beside .txt captions (nested too)."),
                io.String.Input("run_name", default="l2p-run",
                                tooltip="Run folder output/l2p_runs/<run_name> (checkpoints, validation images, "
                                        "log) and the exported model's name in models/l2p."),
                io.Int.Input("steps", default=1000, min=1, max=10_000_000, tooltip="Optimizer steps in total."),
                io.Float.Input("lr", default=5e-5, min=1e-7, max=1e-2, step=1e-6,
                               tooltip="AdamW learning rate (official recipe 5e-5, weight decay 0.01)."),
                io.Int.Input("batch_size", default=1, min=1, max=256, tooltip="Images per step per process."),
                io.Combo.Input("policy", options=[*POLICIES, "custom", "from checkpoint"], default="from checkpoint",
                               tooltip="Trainable set: the one stored in the checkpoint, official (embedders, "
                                       "refiners, first/last 5 blocks, head), paper (pixel embedder, image-side "
                                       "noise refiner, first/last block, head) or custom blocks."),
                io.String.Input("custom_blocks", default="0-4,-5--1", tooltip="For policy custom: block ranges."),
                io.Float.Input("shift", default=3.0, min=0.1, max=50.0, step=0.1,
                               tooltip="Noise shift of the training sigmas (3 at 1K)."),
                io.Int.Input("checkpoint_every", default=500, min=0, max=1_000_000,
                             tooltip="Save checkpoint-<step>/ every N steps (0: only at the end or on Cancel)."),
                io.Int.Input("validate_every", default=0, min=0, max=1_000_000,
                             tooltip="Render validation images every N steps (0: never)."),
                io.Boolean.Input("resume", default=True,
                                 tooltip="Continue from the run's latest complete checkpoint if there is one."),
                io.Int.Input("processes", default=1, min=1, max=64,
                             tooltip="Processes (GPUs) on this machine; more than 1 launches accelerate (DDP)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                             tooltip="Seed of the data order and sigmas."),
                io.Combo.Input("text_encoder", options=[CACHED, *folder_paths.get_filename_list("text_encoders")],
                               default=CACHED, optional=True,
                               tooltip="The model's text encoder (qwen_3_4b.safetensors for Z-Image): items without "
                                       "cached conditioning are encoded with it first, as CLIPTextEncode would, "
                                       "and saved beside their images. Leave it at 'cached' when the dataset "
                                       "already has its .cond.safetensors files."),
                io.Combo.Input("network", options=["full", "lora"], default="full", optional=True,
                               tooltip="full: train the policy's blocks whole. lora: LoRA adapters on every "
                                       "trunk block (the Detailer Head and pixel embedder train whole); the LoRA "
                                       "goes to models/loras for LoraLoaderModelOnly, the merged model to "
                                       "models/l2p."),
                io.Int.Input("lora_rank", default=16, min=1, max=1024, optional=True,
                             tooltip="LoRA rank (network lora); alpha equals the rank."),
                io.Float.Input("lr_new", default=0.0, min=0.0, max=1e-2, step=1e-6, optional=True,
                               tooltip="Learning rate of the weights L2P adds, the Detailer Head and the pixel "
                                       "embedder, which start from nothing the source learned (0: lr)."),
            ],
            outputs=[io.String.Output(display_name="ckpt_name",
                                      tooltip="The exported model in models/l2p (refresh to list it)."),
                     io.String.Output(display_name="lora_name",
                                      tooltip="The LoRA in models/loras (network lora; empty otherwise).")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model: str, dataset: str, run_name: str, steps: int, lr: float, batch_size: int, policy: str,
                custom_blocks: str, shift: float, checkpoint_every: int, validate_every: int, resume: bool,
                processes: int, seed: int, text_encoder: str = CACHED, network: str = "full",
                lora_rank: int = 16, lr_new: float = 0.0) -> io.NodeOutput:
        missing = [m for m in ("accelerate", "diffusers") if importlib.util.find_spec(m) is None]
        if missing:
            raise ValueError(f"training needs {' and '.join(missing)} in ComfyUI's Python: run {sys.executable} -m pip "
                             "install accelerate diffusers")
        out_root = folder_paths.get_output_directory()
        run_dir = subpath(os.path.join(out_root, RUNS), run_name, "run_name", "l2p-run")
        export = new_checkpoint_path(run_name)
        cfg = TrainConfig(
            model=checkpoint_path(model), dataset=subpath(out_root, dataset, "dataset", "l2p_dataset"),
            output_dir=run_dir, steps=steps, lr=lr, lr_new=lr_new, batch_size=batch_size, shift=shift,
            policy={"from checkpoint": "", "custom": f"custom:{custom_blocks}"}.get(policy, policy),
            checkpoint_every=checkpoint_every, validate_every=validate_every, seed=seed,
            resume="latest" if resume else "", export_path=export, log_every=1,
        )
        if network == "lora":
            cfg.network, cfg.lora_rank, cfg.lora_alpha = "lora", lora_rank, float(lora_rank)
            cfg.lora_path = new_checkpoint_path(run_name, "loras")
        if text_encoder != CACHED:  # ComfyUI's own tokenizer, from this install
            cfg.text_encoder = folder_paths.get_full_path_or_raise("text_encoders", text_encoder)
            cfg.tokenizer = find_tokenizer(comfyui=comfyui_install())
        os.makedirs(run_dir, exist_ok=True)
        config = os.path.join(run_dir, "l2p_train.toml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(to_toml(cfg))
        return cls._run(launch_argv(config, processes), run_dir, steps, export, cfg.lora_path)

    @classmethod
    def _run(cls, argv: list[str], run_dir: str, steps: int, export: str, lora_path: str = "") -> io.NodeOutput:
        from server import PromptServer

        node = cls.hidden.unique_id
        pbar = ProgressBar(steps, node_id=node)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        lines: queue.Queue = queue.Queue()
        tail: collections.deque[str] = collections.deque(maxlen=20)
        threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
        state = {"stopped": False, "cancelled": False, "result": "", "lora": "", "error": None}
        errors = threading.Thread(target=_stderr_reader, args=(proc.stderr, tail, state), daemon=True)
        errors.start()

        def cancel() -> None:
            if not state["cancelled"]:
                state["cancelled"] = True
                proc.send_signal(signal.SIGINT)  # the trainer finishes the step, saves a checkpoint, exits 0

        def progress(step: int, preview=None) -> None:
            try:  # ComfyUI's progress hook raises when the user pressed Cancel
                pbar.update_absolute(step, steps, preview)
            except model_management.InterruptProcessingException:
                cancel()

        try:
            with open(os.path.join(run_dir, "events.jsonl"), "a", encoding="utf-8") as log:
                while True:
                    if model_management.processing_interrupted():
                        cancel()
                    try:
                        line = lines.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    if line is None:
                        break
                    event = parse_event(line)
                    if event is not None:
                        log.write(line)
                        log.flush()
                        PromptServer.instance.send_sync(WS_EVENT, ws_payload(event, node, _view(event)))
                        cls._on_event(event, progress, state)
        except BaseException:  # this node failed: stop the trainer cleanly rather than orphan it
            if proc.poll() is None and not state["cancelled"]:
                proc.send_signal(signal.SIGINT)
            raise
        finally:
            try:
                proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                proc.kill()
        code = proc.wait()
        errors.join(timeout=5)  # let the stderr reader drain
        if code != 0 and state["error"]:  # a refusal: the trainer's own line says what is wrong and what to do
            raise RuntimeError(f"{state['error']} (the trainer exited with code {code})")
        if code != 0:
            raise RuntimeError(f"the trainer exited with code {code}: " + " | ".join(list(tail)[-5:]))
        if state["cancelled"]:
            model_management.throw_exception_if_processing_interrupted()  # clears ComfyUI's flag, raises
            raise model_management.InterruptProcessingException()
        if state["stopped"]:
            raise RuntimeError(f"training stopped at a checkpoint in {run_dir}: queue again with resume on to "
                               "continue")
        name = os.path.relpath(state["result"] or export, os.path.dirname(export)).replace(os.sep, "/")
        lora = os.path.basename(state["lora"] or lora_path) if lora_path else ""
        return io.NodeOutput(name, lora, ui={"text": [name] + ([lora] if lora else [])})

    @staticmethod
    def _on_event(event: dict, progress, state: dict) -> None:
        kind = event.get("event")
        if kind in ("log", "start", "resumed"):
            progress(event.get("step", 0))
        elif kind == "validation" and event.get("images"):
            from PIL import Image

            with Image.open(event["images"][0]) as im:
                progress(event["step"], ("PNG", im.copy(), 512))
        elif kind == "stopped":
            state["stopped"] = True
        elif kind == "done":
            state["result"], state["lora"] = event.get("export", ""), event.get("lora", "")
