"""Write each shipped workflow twice from one definition: UI format (workflows/, what the template browser
and users open) and API format (workflows/api/, what the demo, the dataset driver and tests queue; the
template browser lists only workflows/*.json). Run after editing a graph:

    python -m scripts.make_workflows
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field

REPO = pathlib.Path(__file__).resolve().parents[1]
UI_DIR = REPO / "workflows"
API_DIR = REPO / "workflows" / "api"

# Output types of the node slots used below (UI links carry the type).
OUTPUTS: dict[str, list[tuple[str, str]]] = {
    "CLIPLoader": [("CLIP", "CLIP")],
    "L2PTextEncoderLoader": [("CLIP", "CLIP")],
    "CLIPTextEncode": [("CONDITIONING", "CONDITIONING")],
    "L2PModelLoader": [("MODEL", "MODEL")],
    "L2PSourceModelLoader": [("MODEL", "MODEL"), ("architecture", "STRING")],
    "L2PConvert": [("MODEL", "MODEL"), ("report", "STRING")],
    "L2PSaveCheckpoint": [("ckpt_name", "STRING")],
    "ModelSamplingAuraFlow": [("MODEL", "MODEL")],
    "L2PEmptyImage": [("LATENT", "LATENT"), ("info", "STRING")],
    "L2PNoiseShift": [("MODEL", "MODEL"), ("info", "STRING")],
    "KSampler": [("LATENT", "LATENT")],
    "VAELoader": [("VAE", "VAE")],
    "VAEDecode": [("IMAGE", "IMAGE")],
    "SaveImage": [],
    "UNETLoader": [("MODEL", "MODEL")],
    "EmptySD3LatentImage": [("LATENT", "LATENT")],
    "L2PPromptBank": [("prompt", "STRING"), ("seed", "INT"), ("category", "STRING"), ("index", "INT")],
    "L2PDatasetWriter": [],
    "L2PTrain": [("ckpt_name", "STRING"), ("lora_name", "STRING")],
    "LoraLoaderModelOnly": [("MODEL", "MODEL")],
    "L2PLoraFromLatent": [("MODEL", "MODEL"), ("report", "STRING")],
    "L2PDemoTextEncode": [("CONDITIONING", "CONDITIONING")],
    "L2PDemoVAELoader": [("VAE", "VAE")],
}


@dataclass
class Node:
    id: int
    type: str
    # In the node's widget order, all of them: a widget fed by a link keeps a (placeholder) value, as the
    # frontend saves it; the link wins in API format.
    widgets: dict = field(default_factory=dict)
    links: dict[str, tuple[int, int]] = field(default_factory=dict)  # input name -> (node id, output slot)
    title: str | None = None
    pos: tuple[int, int] = (0, 0)
    # Files the node's widgets name, with where to download them: the UI node's ``properties.models`` (list of
    # {name, url, directory}), core's template convention, so the frontend can offer the download.
    models: list[dict[str, str]] = field(default_factory=list)


def to_api(nodes: list[Node]) -> dict:
    api = {}
    for n in nodes:
        inputs = {k: v for k, v in n.widgets.items() if k != "control_after_generate"}
        inputs.update({k: [str(src), slot] for k, (src, slot) in n.links.items()})
        api[str(n.id)] = {"class_type": n.type, "inputs": inputs, "_meta": {"title": n.title or n.type}}
    return api


def to_ui(nodes: list[Node]) -> dict:
    links, ui_nodes = [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    for n in nodes:
        for name, (src, slot) in n.links.items():
            link_id = len(links) + 1
            src_type = OUTPUTS[next(m.type for m in nodes if m.id == src)][slot][1]
            links.append([link_id, src, slot, n.id, list(n.links).index(name), src_type])
            out_links.setdefault((src, slot), []).append(link_id)
    for order, n in enumerate(nodes):
        ui_nodes.append({
            "id": n.id, "type": n.type, "pos": list(n.pos), "size": [320, 110], "flags": {}, "order": order,
            "mode": 0,
            "inputs": [{"name": name, "type": next(link[5] for link in links if link[3] == n.id and link[4] == i),
                        "link": next(link[0] for link in links if link[3] == n.id and link[4] == i),
                        **({"widget": {"name": name}} if name in n.widgets else {})}
                       for i, name in enumerate(n.links)],
            "outputs": [{"name": name, "type": typ, "links": out_links.get((n.id, slot), []), "slot_index": slot}
                        for slot, (name, typ) in enumerate(OUTPUTS[n.type])],
            "properties": {"Node name for S&R": n.type, **({"models": n.models} if n.models else {})},
            "widgets_values": list(n.widgets.values()),
            **({"title": n.title} if n.title else {}),
        })
    return {"last_node_id": max(n.id for n in nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
            "version": 0.4}


# Public downloads of the files the workflows name (Comfy-Org's split files, as core's Z-Image template lists
# them; the official L2P release at the root of zhen-nan/L2P). Files without a public download get no entry.
ZIMAGE_FILES = "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files"
DOWNLOADS: dict[str, tuple[str, str]] = {  # file name -> (models folder, URL)
    "qwen_3_4b.safetensors": ("text_encoders", f"{ZIMAGE_FILES}/text_encoders/qwen_3_4b.safetensors"),
    "ae.safetensors": ("vae", f"{ZIMAGE_FILES}/vae/ae.safetensors"),
    "z_image_turbo_bf16.safetensors": ("diffusion_models",
                                       f"{ZIMAGE_FILES}/diffusion_models/z_image_turbo_bf16.safetensors"),
    "model-1k-merge.safetensors": ("l2p", "https://huggingface.co/zhen-nan/L2P/resolve/main/model-1k-merge.safetensors"),
}


def downloads(*names: str) -> list[dict[str, str]]:
    """``properties.models`` for the files a node names: those with a known public download."""
    return [{"name": n, "url": DOWNLOADS[n][1], "directory": DOWNLOADS[n][0]} for n in names if n in DOWNLOADS]


def l2p_loader(model_file: str) -> list[Node]:
    return [Node(4, "L2PModelLoader", {"ckpt_name": model_file, "weight_dtype": "default"}, pos=(20, 420),
                 models=downloads(model_file))]


def clip_prompts(clip: Node, prompt: str) -> list[Node]:
    """Node 1 the text encoder, 2 the positive and 3 the (empty) negative CLIPTextEncode."""
    return [
        clip,
        Node(2, "CLIPTextEncode", {"text": prompt}, {"clip": (1, 0)}, "Positive prompt", (420, 40)),
        Node(3, "CLIPTextEncode", {"text": ""}, {"clip": (1, 0)}, "Negative prompt (empty)", (420, 260)),
    ]


def shapes_prompts(prompt: str, positive: int = 2, negative: int = 3,
                   text_link: tuple[int, int] | None = None) -> list[Node]:
    """The shapes world's demo text encoder: positive and (empty) negative L2PDemoTextEncode nodes."""
    return [
        Node(positive, "L2PDemoTextEncode", {"text_encoder": SHAPES_TE, "text": prompt},
             {"text": text_link} if text_link else {}, "Positive prompt (shapes-world encoder)", (420, 40)),
        Node(negative, "L2PDemoTextEncode", {"text_encoder": SHAPES_TE, "text": ""}, title="Negative prompt (empty)",
             pos=(420, 260)),
    ]


def text_to_image(*, prompts: list[Node], model: list[Node], steps: int, cfg: float, shift: float,
                  width: int, height: int, batch: int, seed: int, prefix: str, model_out: tuple[int, int] | None = None,
                  preset: str = "custom (width x height)", fit: str = "reject", auto_shift: bool = False) -> list[Node]:
    """The L2P text-to-image graph: stock nodes everywhere except the model nodes, the empty image and (with
    ``auto_shift``) L2PNoiseShift in place of ModelSamplingAuraFlow; ``prompts`` give the positive (node 2) and
    negative (node 3) conditioning; ``model_out`` (default: the first model node's output 0) is the pixel MODEL
    that is sampled."""
    model_out = model_out or (model[0].id, 0)
    if auto_shift:
        shift_node = Node(5, "L2PNoiseShift", {"mode": "auto", "shift": shift}, {"model": model_out, "latent": (6, 0)},
                          pos=(420, 460))
    else:
        shift_node = Node(5, "ModelSamplingAuraFlow", {"shift": shift}, {"model": model_out}, pos=(420, 460))
    return [
        *prompts,
        *model,
        shift_node,
        Node(6, "L2PEmptyImage", {"width": width, "height": height, "batch_size": batch, "preset": preset, "fit": fit},
             {"model": model_out}, pos=(420, 600)),
        Node(7, "KSampler", {"seed": seed, "control_after_generate": "fixed", "steps": steps, "cfg": cfg,
                             "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0},
             {"model": (5, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": (6, 0)}, pos=(820, 200)),
        Node(8, "VAELoader", {"vae_name": "pixel_space"}, pos=(820, 560)),
        Node(9, "VAEDecode", {}, {"samples": (7, 0), "vae": (8, 0)}, pos=(1180, 200)),
        Node(10, "SaveImage", {"filename_prefix": prefix}, {"images": (9, 0)}, pos=(1420, 200)),
    ]


def make_dataset(*, model: Node, encoders: list[Node], vae: Node, steps: int, cfg: float, size: int, count: int,
                 folder: str, batch: int = 1, prompts: str = "(built-in taxonomy)", images_per_prompt: int = 2,
                 shift: float = 3.0) -> list[Node]:
    """The source model renders one dataset item per queued run (L2P Prompt Bank index on increment); a latent
    batch of B gives B items per run. ``encoders``: node 5 (positive, text from the bank) and 6 (negative)."""
    return sorted([
        model,
        *encoders,
        vae,
        Node(4, "L2PPromptBank", {"prompts": prompts, "index": 0, "control_after_generate": "increment",
                                  "images_per_prompt": images_per_prompt, "count": count, "seed": 0}, pos=(20, 560)),
        Node(7, "ModelSamplingAuraFlow", {"shift": shift}, {"model": (1, 0)}, pos=(420, 460)),
        Node(8, "EmptySD3LatentImage", {"width": size, "height": size, "batch_size": batch}, pos=(420, 600)),
        Node(9, "KSampler", {"seed": 0, "control_after_generate": "fixed", "steps": steps, "cfg": cfg,
                             "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0},
             {"model": (7, 0), "positive": (5, 0), "negative": (6, 0), "latent_image": (8, 0), "seed": (4, 1)},
             pos=(820, 200)),
        Node(10, "VAEDecode", {}, {"samples": (9, 0), "vae": (3, 0)}, pos=(1180, 200)),
        Node(11, "L2PDatasetWriter", {"folder": folder},
             {"images": (10, 0), "prompt": (4, 0), "seed": (4, 1), "index": (4, 3), "category": (4, 2),
              "conditioning": (5, 0)}, pos=(1420, 200)),
    ], key=lambda n: n.id)


def zimage_dataset_encoders() -> list[Node]:
    clip = Node(2, "CLIPLoader", {"clip_name": "qwen_3_4b.safetensors", "type": "lumina2", "device": "default"},
                pos=(20, 220), models=downloads("qwen_3_4b.safetensors"))
    return [
        clip,
        Node(5, "CLIPTextEncode", {"text": ""}, {"clip": (2, 0), "text": (4, 0)}, "Prompt from the bank", (420, 40)),
        Node(6, "CLIPTextEncode", {"text": ""}, {"clip": (2, 0)}, "Negative prompt (empty)", (420, 260)),
    ]


def train(model_file: str, steps: int) -> list[Node]:
    """Fine-tune a converted model on the dataset the source model rendered (one node; it runs the trainer)."""
    return [Node(1, "L2PTrain", {"model": model_file, "dataset": "l2p_dataset", "run_name": "l2p-zimage-1k",
                                 "steps": steps, "lr": 5e-5, "batch_size": 1, "policy": "from checkpoint",
                                 "custom_blocks": "0-4,-5--1", "shift": 3.0, "checkpoint_every": 500,
                                 "validate_every": 500, "resume": True, "processes": 1, "seed": 0,
                                 "control_after_generate": "fixed",
                                 "text_encoder": "cached (no text encoder)", "network": "full", "lora_rank": 16,
                                 "lr_new": 0.0},
                 title="L2P Train (official recipe: AdamW 5e-5, shift 3, frozen middle)", pos=(20, 40))]


CONVERT_INIT = "vae_lsq"
SHAPES_TE = "l2p-shapes-te.safetensors"  # the shapes world's files (shapes_world/models, bench/replicate)
SHAPES_L2P = "l2p-shapes-demo.safetensors"
SHAPES_SOURCE = "l2p-shapes-source.safetensors"
SHAPES_VAE = "l2p-shapes-vae.safetensors"
# The shipped demo model's CFG, chosen on validation by the replication (its metadata l2p.shapes_world.cfg;
# tests/test_demo.py checks that the two agree).
SHAPES_CFG = 2.0
SHAPES_PROMPT = "a red circle to the left of a blue square on a striped background"
PROMPT = ("A red fox sitting in fresh snow at the edge of a pine forest at dawn, soft golden light, fine fur "
          "detail, shallow depth of field, photograph")

ZIMAGE_CLIP = Node(1, "CLIPLoader", {"clip_name": "qwen_3_4b.safetensors", "type": "lumina2", "device": "default"},
                   pos=(20, 120), models=downloads("qwen_3_4b.safetensors"))

WORKFLOWS: dict[str, list[Node]] = {
    "l2p_zimage_1k": text_to_image(
        prompts=clip_prompts(ZIMAGE_CLIP, PROMPT), model=l2p_loader("model-1k-merge.safetensors"),
        steps=30, cfg=2.0, shift=3.0,
        width=1024, height=1024, batch=1, seed=42, prefix="L2P/zimage_1k"),
    "l2p_tiny_demo": text_to_image(
        prompts=clip_prompts(Node(1, "L2PTextEncoderLoader", {"text_encoder_name": "l2p-tiny-qwen3.safetensors"},
                                  pos=(20, 120)), PROMPT),
        model=l2p_loader("l2p-tiny-demo.safetensors"), steps=8, cfg=2.0, shift=3.0,
        width=256, height=256, batch=2, seed=42, prefix="L2P/tiny_demo"),
    "l2p_convert_zimage": text_to_image(
        prompts=clip_prompts(ZIMAGE_CLIP, PROMPT),
        model=[
            Node(11, "L2PSourceModelLoader", {"source": "Z-Image-Turbo/", "weight_dtype": "default"},
                 title="Latent source (diffusers folder or single file)", pos=(20, 420)),
            Node(12, "VAELoader", {"vae_name": "ae.safetensors"}, title="The source's VAE (for the fitted init)",
                 pos=(20, 600), models=downloads("ae.safetensors")),
            Node(13, "L2PConvert", {"patch_size": 16, "init": CONVERT_INIT, "policy": "official",
                                    "custom_blocks": "0-4,-5--1", "seed": 0, "control_after_generate": "fixed",
                                    "distill_steps": 200},
                 {"model": (11, 0), "vae": (12, 0)}, pos=(420, 760)),
            Node(14, "L2PSaveCheckpoint", {"filename_prefix": "l2p-zimage-turbo-init", "layout": "official"},
                 {"model": (13, 0)}, pos=(820, 760)),
        ],
        model_out=(13, 0),
        steps=30, cfg=2.0, shift=3.0, width=1024, height=1024, batch=1, seed=42,
        prefix="L2P/converted_untrained"),
    "l2p_zimage_4k": text_to_image(
        prompts=clip_prompts(ZIMAGE_CLIP, PROMPT), model=l2p_loader("l2p-zimage-4k.safetensors"),
        steps=50, cfg=4.0, shift=3.0,
        width=3840, height=2160, batch=1, seed=42, prefix="L2P/zimage_4k", preset="3840x2160 (4K UHD)",
        fit="snap up", auto_shift=True),
    "l2p_lora": text_to_image(
        prompts=clip_prompts(ZIMAGE_CLIP, PROMPT),
        model=[
            *l2p_loader("model-1k-merge.safetensors"),
            Node(11, "LoraLoaderModelOnly", {"lora_name": "my-l2p-lora.safetensors", "strength_model": 1.0},
                 {"model": (4, 0)}, title="An L2P LoRA (ai-toolkit, L2P Train with network lora)", pos=(20, 600)),
            Node(12, "L2PLoraFromLatent", {"lora_name": "my-zimage-lora.safetensors", "strength": 1.0,
                                           "blocks": "frozen blocks only", "policy": "from checkpoint"},
                 {"model": (11, 0)}, title="A latent Z-Image LoRA, on the frozen blocks", pos=(20, 780)),
        ],
        model_out=(12, 0), steps=30, cfg=2.0, shift=3.0,
        width=1024, height=1024, batch=1, seed=42, prefix="L2P/zimage_1k_lora"),
    "l2p_train": train("l2p-zimage-turbo-init_00001.safetensors", steps=30000),
    "l2p_make_dataset": make_dataset(
        model=Node(1, "UNETLoader", {"unet_name": "z_image_turbo_bf16.safetensors", "weight_dtype": "default"},
                   title="Source model (latent)", pos=(20, 40), models=downloads("z_image_turbo_bf16.safetensors")),
        encoders=zimage_dataset_encoders(),
        vae=Node(3, "VAELoader", {"vae_name": "ae.safetensors"}, title="Source VAE", pos=(20, 420),
                 models=downloads("ae.safetensors")),
        steps=8, cfg=1.0, size=1024, count=10000, folder="l2p_dataset"),
    "l2p_shapes_demo": text_to_image(
        prompts=shapes_prompts(SHAPES_PROMPT), model=l2p_loader(SHAPES_L2P), steps=20, cfg=SHAPES_CFG, shift=1.0,
        width=64, height=64, batch=4, seed=42, prefix="L2P/shapes_demo"),
    "l2p_shapes_dataset": make_dataset(
        model=Node(1, "L2PSourceModelLoader", {"source": SHAPES_SOURCE, "weight_dtype": "default"},
                   title="Shapes-world latent source", pos=(20, 40)),
        encoders=shapes_prompts("", positive=5, negative=6, text_link=(4, 0)),
        vae=Node(3, "L2PDemoVAELoader", {"vae_name": SHAPES_VAE}, title="Shapes-world VAE", pos=(20, 420)),
        steps=20, cfg=3.0, size=64, count=512, folder="shapes_dataset", batch=4, prompts="shapes_prompts.jsonl",
        images_per_prompt=1, shift=1.0),
}


TITLES = {
    "l2p_zimage_1k": "Z-Image L2P 1K: text to image",
    "l2p_zimage_4k": "Z-Image L2P 4K: 3840x2160, auto shift",
    "l2p_tiny_demo": "Tiny demo (runs on CPU)",
    "l2p_convert_zimage": "Convert a latent Z-Image to L2P",
    "l2p_make_dataset": "Build the synthetic dataset",
    "l2p_lora": "Z-Image L2P 1K with LoRAs (L2P and latent)",
    "l2p_train": "Train an L2P model",
    "l2p_shapes_demo": "Shapes world: the trained demo model (CPU)",
    "l2p_shapes_dataset": "Shapes world: synthetic dataset from its latent source",
}


def thumbnail(name: str, nodes: list[Node]) -> bytes:
    """A small JPEG for the template browser: the title and the graph's node chain."""
    import io

    from PIL import Image, ImageDraw

    img = Image.new("RGB", (512, 384), (24, 28, 36))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 511, 56), fill=(40, 120, 200))
    draw.text((16, 12), "ComfyUI-L2P", fill=(255, 255, 255))
    draw.text((16, 32), TITLES.get(name, name), fill=(230, 240, 255))
    y = 76
    for n in nodes[:12]:
        color = (90, 200, 140) if n.type.startswith("L2P") else (150, 160, 175)
        draw.rounded_rectangle((24, y, 488, y + 20), radius=5, outline=color)
        draw.text((34, y + 5), n.title or n.type, fill=color)
        y += 25
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def main() -> None:
    API_DIR.mkdir(parents=True, exist_ok=True)
    for name, nodes in WORKFLOWS.items():
        (UI_DIR / f"{name}.jpg").write_bytes(thumbnail(name, nodes))
        (UI_DIR / f"{name}.json").write_text(json.dumps(to_ui(nodes), indent=2) + "\n")
        (API_DIR / f"{name}.api.json").write_text(json.dumps(to_api(nodes), indent=2) + "\n")
        print(f"wrote workflows/{name}.json and workflows/api/{name}.api.json")


if __name__ == "__main__":
    main()
