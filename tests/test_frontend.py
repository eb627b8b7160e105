"""The pack in the real ComfyUI frontend, in a real headless Chromium (Debian's, driven by Playwright):
every shipped workflow loads with no missing or red node and is in the template browser with a thumbnail;
the hint on L2PEmptyImage follows the width and shows the shift the workflow samples at; a tiny training run
draws its loss curve and the Stop button ends it with a checkpoint. Screenshots land in test-artifacts/frontend/.

Model files: the shipped workflows name real models (Z-Image's text encoder, the official L2P checkpoint...)
that the test server does not have. Newer frontends (1.49) flag a loader red when its file is not installed
(and list it as a missing model), older ones (1.32) did not. So the server gets a small placeholder file of
each name the workflows' file widgets use (listed, never loaded), and then "no red node" must hold on every
frontend: a red node, a node type the server lacks, or a widget value its list does not offer fails the test,
on its own or as the frontend reports it (the missing-model list, the missing-models dialog)."""

from __future__ import annotations

import json
import pathlib
import shutil
import time
import urllib.request

import pytest
import torch
from safetensors.torch import save_file

from harness.server import PACK_NAME, ComfyServer
from l2p.format.tensor_io import save_safetensors_atomic
from l2p.pixel_dit import official_state_dict
from l2p.tiny import tiny_l2p, write_demo_models
from scripts.make_workflows import WORKFLOWS as DEFINITIONS
from tests.test_trainer import make_dataset

REPO = pathlib.Path(__file__).resolve().parents[1]
SHOTS = REPO / "test-artifacts" / "frontend"
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


# The widgets that list files, and the folder (under the server's base directory) each file lives in.
FILE_WIDGETS = {
    ("CLIPLoader", "clip_name"): "models/text_encoders",
    ("VAELoader", "vae_name"): "models/vae",
    ("UNETLoader", "unet_name"): "models/diffusion_models",
    ("L2PModelLoader", "ckpt_name"): "models/l2p",
    ("L2PTrain", "model"): "models/l2p",
    ("L2PSourceModelLoader", "source"): "models/diffusion_models",  # a file, or a diffusers folder ("name/")
    ("L2PTextEncoderLoader", "text_encoder_name"): "models/text_encoders",
    ("L2PDemoTextEncode", "text_encoder"): "models/text_encoders",
    ("L2PDemoVAELoader", "vae_name"): "models/vae",
    ("L2PPromptBank", "prompts"): "input",
    ("LoraLoaderModelOnly", "lora_name"): "models/loras",
    ("L2PLoraFromLatent", "lora_name"): "models/loras",
}


def combo_options(object_info: dict, node_type: str, widget: str) -> list | None:
    """The values a combo input offers (old style: the list itself; new style: "COMBO" with options)."""
    inputs = object_info[node_type]["input"]
    spec = {**inputs.get("required", {}), **inputs.get("optional", {})}.get(widget)
    if not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1].get("options")
    return None


def write_placeholder(folder: pathlib.Path, name: str) -> pathlib.Path:
    """A small valid file of the name a workflow uses (a diffusers folder for "name/"): the frontend lists it;
    nothing in these tests loads it."""
    path = folder / name
    if name.endswith("/"):  # listed by its config.json
        path.mkdir(parents=True)
        (path / "config.json").write_text('{"_class_name": "placeholder"}\n')
    elif name.endswith(".jsonl"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"prompt": "placeholder"}\n')
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"placeholder": torch.zeros(1)}, str(path), metadata={"l2p.placeholder": "tests/test_frontend.py"})
    return path


def install_placeholders(server: ComfyServer) -> list[pathlib.Path]:
    """For every file a shipped workflow's file widget names and the server does not list, a placeholder."""
    info = server.object_info()
    created: list[pathlib.Path] = []
    for nodes in DEFINITIONS.values():
        for node in nodes:
            for widget, value in node.widgets.items():
                folder = FILE_WIDGETS.get((node.type, widget))
                options = combo_options(info, node.type, widget)
                if folder is None or options is None or value in options:
                    continue
                if not (server.base_dir / folder / value).exists():
                    created.append(write_placeholder(server.base_dir / folder, value))
    return created


@pytest.fixture(scope="module")
def server(comfy_server: ComfyServer):
    write_demo_models(str(comfy_server.models_dir))
    save_safetensors_atomic(official_state_dict(*tiny_l2p(seed=4)),
                            str(comfy_server.models_dir / "l2p" / "tiny-ui-train.safetensors"),
                            metadata={"l2p.policy": "paper"})
    if not (comfy_server.output_dir / "ui-train-ds").exists():
        make_dataset(comfy_server.output_dir / "ui-train-ds", n=4)
    placeholders = install_placeholders(comfy_server)
    yield comfy_server
    for path in placeholders:  # the session's server is shared: later tests see no made-up model files
        shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    if not pathlib.Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is missing: run `bash scripts/setup.sh` (it installs it)", pytrace=False)
    SHOTS.mkdir(parents=True, exist_ok=True)
    # A returning user: no first-run template browser over the canvas.
    req = urllib.request.Request(f"{server.url}/settings/Comfy.TutorialCompleted", data=b"true", method="POST")
    urllib.request.urlopen(req, timeout=30).close()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url, wait_until="domcontentloaded", timeout=120_000)
        page.wait_for_function("() => window.app?.graph && window.LiteGraph?.registered_node_types?.L2PTrain",
                               timeout=120_000)
        page.wait_for_timeout(3000)  # the app restores its (empty) start-up workflow after it is ready
        dismiss_dialogs(page)
        page.l2p_errors = errors
        yield page
        browser.close()


def open_dialogs(page) -> list[str]:
    """The text of every open PrimeVue dialog (missing nodes or models, the template browser, errors...)."""
    return page.evaluate("""() => [...document.querySelectorAll(".p-dialog-mask .p-dialog, .p-dialog-mask")]
        .filter(d => d.classList.contains("p-dialog") || !d.querySelector(".p-dialog"))
        .map(d => d.textContent.replace(/\\s+/g, " ").trim().slice(0, 300))""")


def dismiss_dialogs(page) -> None:
    """Close the frontend's own pop-ups (the first-run template browser, the missing nodes or models warning) so
    clicks reach the graph."""
    for _ in range(5):
        if page.locator(".p-dialog-mask").count() == 0:
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
        close = page.locator(".p-dialog-mask button[aria-label='Close'], .p-dialog-mask .p-dialog-close-button")
        if page.locator(".p-dialog-mask").count() and close.count():
            close.first.click()
            page.wait_for_timeout(300)


def load(page, workflow: dict) -> None:
    for _ in range(3):
        page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        page.wait_for_timeout(300)
        if page.evaluate("() => window.app.graph._nodes.length") == len(workflow["nodes"]):
            return
    raise AssertionError("the frontend did not keep the loaded workflow")


# Per node: is its type registered, is it red (has_errors), and which combo values its widget list does not offer
# (a file that is not installed, or a bad value). Frontends with a missing-model store (1.49: the Pinia store
# "missingModel", what the errors tab and the red loaders come from) also say which widgets name a missing model.
NODE_REPORT = """() => {
    const options = (w, n) => { const v = w.options?.values; return typeof v === "function" ? v(w, n) : v; };
    const pinia = document.querySelector("#vue-app")?.__vue_app__?.config?.globalProperties?.$pinia;
    const store = pinia?._s?.get("missingModel");
    return {
        store: !!store,
        missing_models: (store?.missingModelCandidates || []).map(c => ({
            id: String(c.nodeId), widget: c.widgetName, name: c.name})),
        nodes: window.app.graph._nodes.map(n => ({
            id: String(n.id), type: n.type, registered: !!window.LiteGraph.registered_node_types[n.type],
            errors: !!n.has_errors,
            unlisted: (n.widgets || []).filter(w => w.type === "combo" && Array.isArray(options(w, n))
                && !options(w, n).includes(w.value)).map(w => `${w.name}=${w.value}`)})),
    }; }"""


def problems(report: dict) -> dict[str, list[str]]:
    """What is wrong per node id, each reason named: an unknown type, a widget value the server does not list
    (a model file not installed, or a bad value), a model the frontend lists as missing, or a red node the
    frontend reports no missing model for (the node itself is broken)."""
    out: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    for m in report["missing_models"]:
        missing.setdefault(m["id"], []).append(f"{m['widget']}={m['name']}")
    for n in report["nodes"]:
        found = []
        if not n["registered"]:
            found.append(f"{n['type']}: node type not registered on the server")
        found += [f"{n['type']}: {w} is not in its list (file not installed, or a bad value)" for w in n["unlisted"]]
        found += [f"{n['type']}: the frontend lists a missing model {w}" for w in missing.pop(n["id"], [])]
        if n["errors"] and not found:
            found.append(f"{n['type']}: red (has_errors) with no missing model or file: the node is broken")
        if found:
            out[n["id"]] = found
    for node_id, widgets in missing.items():  # a missing model on a node the graph does not show (a subgraph)
        out[node_id] = [f"the frontend lists a missing model {w}" for w in widgets]
    return out


def loaded_report(page) -> tuple[dict, list[str]]:
    """The node report and the dialogs open right after a load (then closed, so clicks reach the graph)."""
    page.wait_for_timeout(500)  # the missing-model scan finishes after loadGraphData (folder paths first)
    dialogs = open_dialogs(page)
    report = page.evaluate(NODE_REPORT)
    dismiss_dialogs(page)
    return report, dialogs


@pytest.mark.parametrize("wf", WORKFLOWS, ids=lambda p: p.stem)
def test_shipped_workflow_loads_without_missing_or_red_nodes(page, wf):
    workflow = json.loads(wf.read_text())
    load(page, workflow)
    report, dialogs = loaded_report(page)
    assert len(report["nodes"]) == len(workflow["nodes"])
    assert problems(report) == {}
    assert dialogs == []  # no missing-nodes or missing-models warning
    page.screenshot(path=str(SHOTS / f"workflow-{wf.stem}.png"))


def test_the_check_tells_a_missing_model_from_a_broken_node(page):
    """The same check on a spoiled copy of a shipped workflow: a loader naming a file that is not installed, a
    node type the server lacks and a bad sampler name are each caught, and nothing else is."""
    workflow = json.loads((REPO / "workflows" / "l2p_zimage_1k.json").read_text())
    nodes = {n["type"]: n for n in workflow["nodes"]}
    nodes["CLIPLoader"]["widgets_values"][0] = "not-installed.safetensors"
    nodes["CLIPLoader"]["properties"]["models"][0]["name"] = "not-installed.safetensors"
    nodes["KSampler"]["widgets_values"][4] = "no_such_sampler"
    nodes["ModelSamplingAuraFlow"]["type"] = "L2PNoSuchNode"
    load(page, workflow)
    page.wait_for_function("""() => { const pinia = document.querySelector("#vue-app")?.__vue_app__?.config
        ?.globalProperties?.$pinia; const store = pinia?._s?.get("missingModel");
        return !store || !!store.missingModelCandidates?.length; }""", timeout=30_000)  # its scan is async
    report, dialogs = loaded_report(page)
    found = problems(report)
    clip, sampler, unknown = (str(nodes[t]["id"]) for t in ("CLIPLoader", "KSampler", "ModelSamplingAuraFlow"))
    assert set(found) == {clip, sampler, unknown}, found
    assert "clip_name=not-installed.safetensors is not in its list" in " ".join(found[clip])
    assert "sampler_name=no_such_sampler is not in its list" in " ".join(found[sampler])
    assert found[unknown] == ["L2PNoSuchNode: node type not registered on the server"]
    # A frontend that warns in a dialog (1.32: missing nodes, missing models) names what is missing there.
    assert all("L2PNoSuchNode" in d or "not-installed.safetensors" in d for d in dialogs), dialogs
    if report["store"]:  # this frontend reports missing models itself: the loader only, none for the others
        assert report["missing_models"] == [{"id": clip, "widget": "clip_name", "name": "not-installed.safetensors"}]
        assert next(n for n in report["nodes"] if n["id"] == clip)["errors"]


def test_templates_are_listed_with_thumbnails(server):
    with urllib.request.urlopen(f"{server.url}/workflow_templates", timeout=30) as r:
        listed = json.loads(r.read())
    assert sorted(listed[PACK_NAME]) == sorted(w.stem for w in WORKFLOWS)
    for wf in WORKFLOWS:
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{PACK_NAME}/{wf.stem}.jpg", timeout=30) as r:
            assert r.status == 200 and r.read()[:3] == b"\xff\xd8\xff"  # a JPEG


def test_loaders_offer_the_download_of_the_file_they_name():
    """Core's template convention, ``properties.models`` ({name, url, directory}) on a loader, lets the frontend
    offer the download: each entry names the file its widget names, in the folder that widget lists, at a Hugging
    Face URL ending in that name; the Z-Image files and the official L2P checkpoint have one."""
    declared = set()
    for wf in WORKFLOWS:
        definitions = {n.id: n for n in DEFINITIONS[wf.stem]}
        for node in json.loads(wf.read_text())["nodes"]:
            for model in node["properties"].get("models", []):
                assert set(model) == {"name", "url", "directory"}, model
                widget = next(k for k, v in definitions[node["id"]].widgets.items() if v == model["name"])
                assert FILE_WIDGETS[node["type"], widget] == f"models/{model['directory']}", (wf.name, model)
                assert model["url"].startswith("https://huggingface.co/") and "/resolve/main/" in model["url"], model
                assert model["url"].endswith(f"/{model['name']}"), model
                declared.add((model["name"], model["directory"]))
    assert declared >= {("qwen_3_4b.safetensors", "text_encoders"), ("ae.safetensors", "vae"),
                        ("z_image_turbo_bf16.safetensors", "diffusion_models"), ("model-1k-merge.safetensors", "l2p")}


def hint_text(page, node_type: str) -> str:
    return page.evaluate("""(t) => {
        const n = window.app.graph._nodes.find(x => x.type === t);
        const w = n.widgets.find(w => w.name === "l2p_hint");
        return w.element.textContent; }""", node_type)


def test_empty_image_hint_follows_the_width(page):
    load(page, json.loads((REPO / "workflows" / "l2p_tiny_demo.json").read_text()))
    page.wait_for_function("""() => { const n = window.app.graph._nodes.find(x => x.type === "L2PEmptyImage");
        return n.widgets.find(w => w.name === "l2p_hint").element.textContent.includes("tokens"); }""",
                           timeout=30_000)
    before = hint_text(page, "L2PEmptyImage")
    assert "256x256 -> 16x16 = 256 tokens (patch 16, head 1k)" in before and "head memory" in before
    page.evaluate("""() => { const n = window.app.graph._nodes.find(x => x.type === "L2PEmptyImage");
        const w = n.widgets.find(w => w.name === "width"); w.value = 512; w.callback(512); }""")
    page.wait_for_function("""() => window.app.graph._nodes.find(x => x.type === "L2PEmptyImage")
        .widgets.find(w => w.name === "l2p_hint").element.textContent.includes("512x256")""", timeout=30_000)
    assert "32x16 = 512 tokens" in hint_text(page, "L2PEmptyImage")
    page.screenshot(path=str(SHOTS / "hint-empty-image.png"))
    load(page, json.loads((REPO / "workflows" / "l2p_zimage_4k.json").read_text()))
    page.wait_for_function("""() => window.app.graph._nodes.find(x => x.type === "L2PNoiseShift")
        .widgets.find(w => w.name === "l2p_hint").element.textContent.includes("shift")""", timeout=30_000)
    assert "shift" in hint_text(page, "L2PNoiseShift")


def wait_for_hint(page, node_type: str, needle: str) -> str:
    page.wait_for_function("""([t, s]) => window.app.graph._nodes.find(x => x.type === t)
        .widgets.find(w => w.name === "l2p_hint").element.textContent.includes(s)""", arg=[node_type, needle],
                           timeout=30_000)
    return hint_text(page, node_type)


def test_shapes_demo_hint_shows_the_wired_shift(page):
    """The shapes demo samples through ModelSamplingAuraFlow at shift 1: the empty image's hint says so (not the
    auto shift of a model it does not use), follows that node's widget, and says the model's default once the
    sampler takes the loader's model directly."""
    load(page, json.loads((REPO / "workflows" / "l2p_shapes_demo.json").read_text()))
    text = wait_for_hint(page, "L2PEmptyImage", "tokens")
    assert "64x64 -> 8x8 = 64 tokens (patch 8, head 0.5k)" in text
    assert "shift 1 (set by ModelSamplingAuraFlow" in text and "0.375" not in text
    assert "model l2p-shapes-demo.safetensors: Z-Image L2P, native 512x512, default shift 3" in text
    page.evaluate("""() => { const n = window.app.graph._nodes.find(x => x.type === "ModelSamplingAuraFlow");
        const w = n.widgets.find(w => w.name === "shift"); w.value = 2.5; w.callback(2.5); }""")
    assert "shift 2.5 (set by ModelSamplingAuraFlow" in wait_for_hint(page, "L2PEmptyImage", "shift 2.5")
    page.screenshot(path=str(SHOTS / "hint-shapes-demo.png"))
    page.evaluate("""() => { const g = window.app.graph, find = t => g._nodes.find(x => x.type === t);
        const sampler = find("KSampler");
        find("L2PModelLoader").connect(0, sampler, sampler.findInputSlot("model")); }""")
    text = wait_for_hint(page, "L2PEmptyImage", "the model's default")
    assert "shift 3 (the model's default: no shift node between loader and sampler)" in text


def test_training_panel_draws_the_loss_and_stop_saves_a_checkpoint(page, server):
    wf = json.loads((REPO / "workflows" / "l2p_train.json").read_text())
    load(page, wf)
    page.evaluate("""() => { const n = window.app.graph._nodes.find(x => x.type === "L2PTrain");
        const set = (k, v) => { n.widgets.find(w => w.name === k).value = v; };
        set("model", "tiny-ui-train.safetensors"); set("dataset", "ui-train-ds"); set("run_name", "ui-run");
        set("steps", 500); set("batch_size", 2); set("checkpoint_every", 0); set("validate_every", 0);
        set("resume", false); }""")
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    page.wait_for_function("""() => Number(document.querySelector(".l2p-train-loss")?.dataset.points || 0) >= 3""",
                           timeout=300_000)
    dismiss_dialogs(page)
    page.screenshot(path=str(SHOTS / "training-running.png"))
    assert "step" in page.text_content(".l2p-train-status")
    page.click(".l2p-train-stop")
    page.wait_for_function("""() => document.querySelector(".l2p-train-status").textContent.includes("stopped")""",
                           timeout=300_000)
    page.screenshot(path=str(SHOTS / "training-stopped.png"))
    run = server.output_dir / "l2p_runs" / "ui-run"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(run.glob("checkpoint-*/COMPLETE")):
        time.sleep(0.2)
    assert list(run.glob("checkpoint-*/COMPLETE"))
    assert not page.l2p_errors, page.l2p_errors
