"""Training from any image + caption folder (issue 18.1-2): the trainer caches the text conditioning itself, equal
to what a real ComfyUI server's CLIPTextEncode gives for the same encoder weights, and reads the layouts users
have.

- ``l2p/text_encoding.py`` against ComfyUI's own text-encoder code: in process (token ids and features), and
  end to end: captions encoded by a real fp32 server (CLIPTextEncode -> L2P Dataset Writer) vs the same
  folder with its conditioning deleted and cached by ``training/launch.py --cache-text``, also by two
  ``accelerate launch`` processes sharing the work;
- the three layouts (this pack's folder, diffusers' imagefolder, nested image + .txt folders), bad items
  skipped with their reason, ``--print-dataset``, and a run that caches, then trains with caption dropout.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dataset.folder import CONDITIONING_KEY, read_metadata
from dataset.prompts import PromptRecord, write_jsonl
from harness.comfyui_home import comfyui_home
from harness.inprocess import import_pack
from harness.server import ComfyServer
from l2p.format.tensor_io import save_safetensors_atomic
from l2p.pixel_dit import official_state_dict
from l2p.text_encoding import (
    TOKENIZER_FOLDER,
    Qwen3TextEncoder,
    TextEncoderError,
    find_tokenizer,
    prompt_segments,
    qwen3_config_from_shapes,
)
from l2p.tiny import DEMO_TE_FILE, TINY_QWEN3, tiny_l2p, tiny_qwen3_state_dict, write_demo_models
from training.items import list_items

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = str(REPO / "training" / "launch.py")
CAPTIONS = [
    "a red circle above a small blue square",
    "Two cats, one asleep; the other (awake) \\(watching\\) the door\nsecond line",
    "日本語のテキストと emoji 🙂, accents: café naïve",
    " ".join(["a long caption about a lighthouse on a cliff at dusk with waves"] * 12),
]
TOLERANCE = 1e-5  # fp32 on both sides; measured differences are ~3e-8 (different kernels, same maths)


@pytest.fixture(scope="module")
def encoder_sd() -> dict[str, torch.Tensor]:
    """The demo's tiny Qwen3 weights as stored (fp16), in fp32: what both sides load."""
    return {k: v.half().float() for k, v in tiny_qwen3_state_dict(seed=0).items()}


@pytest.fixture(scope="module")
def tokenizer() -> str:
    return str(comfyui_home() / TOKENIZER_FOLDER)


# ------------------------------------------------------------------------------------------------ unit


def test_prompt_segments_follow_comfyui():
    assert prompt_segments("a cat") == ["<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n"]
    assert prompt_segments("a \\(b\\) (c:1.2)")[0].split("\n")[1] == "a (b) (c:1.2)<|im_end|>"  # no weights
    assert prompt_segments("x embedding:foo y") == ["<|im_start|>user\nx ",
                                                   "embedding:foo y<|im_end|>\n<|im_start|>assistant\n"]


def test_configuration_from_shapes_and_bad_files(encoder_sd):
    assert qwen3_config_from_shapes(encoder_sd) == {"vocab_size": 151936, **{
        k: TINY_QWEN3[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                   "num_key_value_heads", "head_dim")}}
    with pytest.raises(TextEncoderError, match="not a Qwen3 text encoder"):
        qwen3_config_from_shapes({"model.embed_tokens.weight": torch.zeros(4, 4)})
    scaled = {**encoder_sd, "model.layers.0.mlp.up_proj.scale_weight": torch.ones(1)}
    with pytest.raises(TextEncoderError, match="quantised with scales"):
        Qwen3TextEncoder(scaled, str(comfyui_home() / TOKENIZER_FOLDER))
    incomplete = {k: v for k, v in encoder_sd.items() if "layers.1.mlp.up_proj" not in k}
    with pytest.raises(TextEncoderError, match=r"lacks 1 tensors \(first: model.layers.1.mlp.up_proj.weight\)"):
        Qwen3TextEncoder(incomplete, find_tokenizer(str(comfyui_home() / TOKENIZER_FOLDER)))


def test_tokenizer_is_found_in_comfyui_or_refused_in_one_line(tmp_path, monkeypatch, tokenizer):
    monkeypatch.setenv("COMFYUI_PATH", str(comfyui_home()))
    assert find_tokenizer() == tokenizer
    assert find_tokenizer(comfyui=str(comfyui_home())) == tokenizer
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    with pytest.raises(TextEncoderError, match="no Qwen tokenizer found: set tokenizer to the comfy/text_encoders"):
        find_tokenizer()
    with pytest.raises(TextEncoderError, match="holds no vocab.json"):
        find_tokenizer(str(tmp_path))


def test_a_batch_padded_on_the_right_equals_each_caption_alone(encoder_sd, tokenizer):
    enc = Qwen3TextEncoder(encoder_sd, tokenizer)
    batched = list(enc.encode(CAPTIONS, batch_size=4))
    alone = [next(enc.encode([c])) for c in CAPTIONS]
    for a, b in zip(batched, alone, strict=True):
        assert a.shape == b.shape and (a - b).abs().max() < TOLERANCE


def test_token_ids_and_features_equal_comfyui_in_process(encoder_sd, tokenizer):
    """Core's tokenizer (sd1_clip + z_image) and core's Qwen3 (llama.Llama2_) through the pack's any-size CLIP."""
    pack = import_pack()
    import comfy.cli_args

    comfy.cli_args.args.fp32_text_enc = True
    try:
        clip = importlib.import_module(pack.__name__ + ".nodes.text_encoder").load_qwen3_any(dict(encoder_sd))
        enc = Qwen3TextEncoder(encoder_sd, tokenizer)
        for caption, ours in zip(CAPTIONS, enc.encode(CAPTIONS), strict=True):
            tokens = clip.tokenize(caption)
            assert [t[0] for t in tokens["qwen3_4b"][0]] == enc.token_ids(caption)
            theirs = clip.encode_from_tokens_scheduled(tokens)[0][0][0]
            assert theirs.dtype == torch.float32 and theirs.shape == ours.shape
            assert (theirs - ours).abs().max() < TOLERANCE, caption
    finally:
        comfy.cli_args.args.fp32_text_enc = False


# ------------------------------------------------------------------------ a real server's CLIPTextEncode


@pytest.fixture(scope="module")
def fp32_server():
    """A server of its own with fp32 text encoding (CPU default: fp16), for a tight comparison."""
    server = ComfyServer(comfy_dir=comfyui_home(), extra_args=["--fp32-text-enc"])
    server.start()
    try:
        write_demo_models(str(server.models_dir))
        yield server
    finally:
        server.stop()


def encode_on_server(server: ComfyServer, captions: list[str], folder: str) -> pathlib.Path:
    """The captions through CLIPTextEncode into an L2P Dataset Writer folder (one 32x32 image each)."""
    write_jsonl(str(server.input_dir / f"{folder}.jsonl"),
                [PromptRecord(i, "test/parity/x", c, 100 + i) for i, c in enumerate(captions)])
    for index in range(len(captions)):
        prompt = {
            "1": {"class_type": "L2PTextEncoderLoader", "inputs": {"text_encoder_name": DEMO_TE_FILE}},
            "2": {"class_type": "L2PPromptBank", "inputs": {"prompts": f"{folder}.jsonl", "index": index,
                                                             "images_per_prompt": 1, "count": len(captions),
                                                             "seed": 0}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"text": ["2", 0], "clip": ["1", 0]}},
            "4": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1,
                                                         "color": 0x336699}},
            "5": {"class_type": "L2PDatasetWriter", "inputs": {"images": ["4", 0], "prompt": ["2", 0],
                                                               "seed": ["2", 1], "index": ["2", 3],
                                                               "folder": folder, "conditioning": ["3", 0]}},
        }
        result = server.run(prompt, timeout=300)
        assert result.ok, result.describe()
    return server.output_dir / folder


def launch(*args: str, cmd: list[str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run((cmd or [sys.executable, LAUNCH]) + list(args), capture_output=True, text=True,
                          timeout=600, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def features(folder: pathlib.Path) -> dict[str, torch.Tensor]:
    return {p.name: load_file(str(p))[CONDITIONING_KEY] for p in sorted(folder.glob("*.cond.safetensors"))}


def test_cached_conditioning_equals_the_servers_clip_text_encode(fp32_server, tmp_path, tokenizer):
    served = encode_on_server(fp32_server, CAPTIONS, "parity")
    assert [r["text"] for _, r in sorted(read_metadata(str(served)).items())] == CAPTIONS
    want = features(served)
    assert len(want) == len(CAPTIONS)
    model = tmp_path / "model.safetensors"
    save_safetensors_atomic(official_state_dict(*tiny_l2p(seed=0)), str(model))
    te = str(fp32_server.models_dir / "text_encoders" / DEMO_TE_FILE)
    accelerate = str(pathlib.Path(sys.executable).parent / "accelerate")
    two = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", LAUNCH]
    for name, cmd in (("one", None), ("two", two)):
        folder = tmp_path / name
        shutil.copytree(served, folder)
        for p in folder.glob("*.cond.safetensors"):
            p.unlink()
        done = launch("--model", str(model), "--dataset", str(folder), "--output-dir", str(tmp_path / f"run-{name}"),
                      "--text-encoder", te, "--tokenizer", tokenizer, "--text-encoder-batch", "3", "--cache-text",
                      cmd=cmd)
        events = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
        assert events[0] == {"event": "dataset", "layout": "l2p dataset", "items": 4, "skipped": 0, "reasons": {},
                             "uncached": 4}
        assert events[-1] == {"event": "caching", "done": 4, "total": 4}
        got = features(folder)
        assert got.keys() == want.keys()
        worst = max((got[k] - want[k]).abs().max().item() for k in want)
        assert all(got[k].shape == want[k].shape for k in want) and worst < TOLERANCE, (name, worst)
        print(f"[parity] {name} process(es): max |cached - CLIPTextEncode| = {worst:.2e} over {len(want)} captions")
    assert not (tmp_path / "run-one" / "l2p-trained.safetensors").exists()  # --cache-text trains nothing


# ---------------------------------------------------------------------------------------------- layouts


def picture(path: pathlib.Path, size: tuple[int, int] = (48, 32), seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def caption_folder(root: pathlib.Path) -> pathlib.Path:
    """kohya / ai-toolkit style, nested, with the bad items users have."""
    for i, name in enumerate(["a/one.png", "a/two.jpg", "b/c/three.webp", "four.png"]):
        picture(root / name, seed=i)
        (root / name).with_suffix(".txt").write_text(f"caption {i}\n", encoding="utf-8")
    picture(root / "no-caption.png")
    picture(root / "empty.png")
    (root / "empty.txt").write_text("  \n")
    picture(root / "tiny.png", size=(8, 8))
    (root / "tiny.txt").write_text("too small")
    (root / "broken.png").write_bytes(b"not an image")
    (root / "broken.txt").write_text("broken")
    picture(root / ".hidden" / "x.png")
    return root


def imagefolder(root: pathlib.Path) -> pathlib.Path:
    """diffusers' imagefolder: metadata.jsonl with file_name and text (no index)."""
    lines = []
    for i in range(3):
        picture(root / "images" / f"{i}.png", seed=i)
        lines.append(json.dumps({"file_name": f"images/{i}.png", "text": f"picture {i}"}))
    lines.append(json.dumps({"file_name": "../escape.png", "text": "outside"}))
    lines.append(json.dumps({"file_name": "images/0.png"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_layouts_are_read_with_skips_and_reasons(tmp_path):
    kohya = list_items(str(caption_folder(tmp_path / "kohya")))
    assert kohya.layout == "image + caption files"
    assert [it.name for it in kohya.items] == ["a/one.png", "a/two.jpg", "b/c/three.webp", "broken.png",
                                               "four.png", "tiny.png"]
    assert [it.caption for it in kohya.items][:3] == ["caption 0", "caption 1", "caption 2"]
    assert {s.name: s.why for s in kohya.skipped} == {"empty.png": "empty caption",
                                                       "no-caption.png": "no caption file no-caption.txt"}
    assert kohya.items[0].conditioning == str(tmp_path / "kohya" / "a" / "one.cond.safetensors")
    folder = list_items(str(imagefolder(tmp_path / "imagefolder")))
    assert folder.layout == "imagefolder" and [it.caption for it in folder.items] == [f"picture {i}" for i in range(3)]
    assert [s.why for s in folder.skipped] == ["the path leaves the dataset folder",
                                               "no caption column (text, caption, prompt)"]


def test_any_folder_caches_then_trains_with_caption_dropout(tmp_path, tokenizer):
    root = caption_folder(tmp_path / "kohya")
    model = tmp_path / "model.safetensors"
    save_safetensors_atomic(official_state_dict(*tiny_l2p(seed=0)), str(model), metadata={"l2p.policy": "paper"})
    te = tmp_path / DEMO_TE_FILE
    save_safetensors_atomic(tiny_qwen3_state_dict(seed=0), str(te), dtype=torch.float16)
    listed = launch("--model", str(model), "--dataset", str(root), "--print-dataset").stdout
    assert "(image + caption files): 8 items, 4 usable, 4 skipped, 4 without cached text conditioning" in listed
    assert "48x32: 4" in listed and "tiny.png: 8x8, smaller than one 16-pixel patch" in listed
    assert "broken.png: not a readable image" in listed
    out = tmp_path / "run"
    done = launch("--model", str(model), "--dataset", str(root), "--output-dir", str(out), "--text-encoder", str(te),
                  "--tokenizer", tokenizer, "--steps", "2", "--batch-size", "2", "--caption-dropout", "0.5",
                  "--mixed-precision", "no", "--checkpoint-every", "0")
    events = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert [e["event"] for e in events][:3] == ["dataset", "caching", "caching"]
    assert events[0]["uncached"] == 4 and events[0]["skipped"] == 4
    assert events[-1]["event"] == "done" and (out / "l2p-trained.safetensors").is_file()
    start = next(e for e in events if e["event"] == "start")
    assert start["items"] == 4
    for name in ("a/one", "a/two", "b/c/three", "four"):
        assert load_file(str(root / f"{name}.cond.safetensors"))[CONDITIONING_KEY].shape[1] == 64
    assert load_file(str(out / "empty.cond.safetensors"))[CONDITIONING_KEY].shape == (8, 64)  # template only
    again = launch("--model", str(model), "--dataset", str(root), "--output-dir", str(tmp_path / "run2"),
                   "--text-encoder", str(te), "--tokenizer", tokenizer, "--cache-text")
    assert '"uncached": 0' in again.stdout and '"caching"' not in again.stdout  # all cached: nothing encoded
