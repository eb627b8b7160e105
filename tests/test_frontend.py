"""The pack in the real ComfyUI frontend, in a real headless Chromium (Debian's, driven by Playwright):
every shipped workflow loads with no missing or red node and is in the template browser with a thumbnail;
the hint on L2PEmptyImage follows the width; a tiny training run draws its loss curve and the Stop button
ends it with a checkpoint. Screenshots land in test-artifacts/frontend/."""

from __future__ import annotations

import json
import pathlib
import shutil
import time
import urllib.request

import pytest

from l2p.pixel_dit import official_state_dict
from l2p.tensor_io import save_safetensors_atomic
from l2p.tiny import tiny_l2p, write_demo_models
from scripts.comfy_server import PACK_NAME, ComfyServer
from tests.test_trainer import make_dataset

REPO = pathlib.Path(__file__).resolve().parents[1]
SHOTS = REPO / "test-artifacts" / "frontend"
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def server(comfy_server: ComfyServer) -> ComfyServer:
    write_demo_models(str(comfy_server.models_dir))
    save_safetensors_atomic(official_state_dict(*tiny_l2p(seed=4)),
                            str(comfy_server.models_dir / "l2p" / "tiny-ui-train.safetensors"),
                            metadata={"l2p.policy": "paper"})
    if not (comfy_server.output_dir / "ui-train-ds").exists():
        make_dataset(comfy_server.output_dir / "ui-train-ds", n=4)
    return comfy_server


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


def dismiss_dialogs(page) -> None:
    """Close the frontend's own pop-ups (the first-run template browser) so clicks reach the graph."""
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


def node_report(page) -> list[dict]:
    return page.evaluate("""() => window.app.graph._nodes.map(n => ({
        id: n.id, type: n.type, registered: !!window.LiteGraph.registered_node_types[n.type],
        errors: !!n.has_errors, color: n.color || null}))""")


@pytest.mark.parametrize("wf", WORKFLOWS, ids=lambda p: p.stem)
def test_shipped_workflow_loads_without_missing_or_red_nodes(page, wf):
    load(page, json.loads(wf.read_text()))
    dismiss_dialogs(page)
    nodes = node_report(page)
    assert nodes and all(n["registered"] for n in nodes), [n for n in nodes if not n["registered"]]
    assert not [n for n in nodes if n["errors"]]
    page.screenshot(path=str(SHOTS / f"workflow-{wf.stem}.png"))


def test_templates_are_listed_with_thumbnails(server):
    with urllib.request.urlopen(f"{server.url}/workflow_templates", timeout=30) as r:
        listed = json.loads(r.read())
    assert sorted(listed[PACK_NAME]) == sorted(w.stem for w in WORKFLOWS)
    for wf in WORKFLOWS:
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{PACK_NAME}/{wf.stem}.jpg", timeout=30) as r:
            assert r.status == 200 and r.read()[:3] == b"\xff\xd8\xff"  # a JPEG


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
