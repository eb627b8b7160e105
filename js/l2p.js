// ComfyUI-L2P frontend: a live training panel on L2PTrain, and size / shift / memory hints on
// L2PEmptyImage and L2PNoiseShift. Every figure in the hints comes from the Python route /l2p/hints;
// this file only gathers widget values, draws, and formats (l2p_format.js).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { chartPoints, pushPoint, statusLine } from "./l2p_format.js";

const HINT_NODES = new Set(["L2PEmptyImage", "L2PNoiseShift"]);

function widgetValue(node, name) {
  return node?.widgets?.find((w) => w.name === name)?.value;
}

function upstream(node, inputName) {
  const slot = node?.findInputSlot ? node.findInputSlot(inputName) : -1;
  return slot >= 0 ? node.getInputNode(slot) : null;
}

// The L2P checkpoint feeding a node's "model" input, following MODEL pass-through nodes.
function ckptName(node) {
  let current = upstream(node, "model");
  for (let hops = 0; current && hops < 8; hops++) {
    const name = widgetValue(current, "ckpt_name");
    if (name) return name;
    current = upstream(current, "model");
  }
  return "";
}

function hintQuery(node) {
  let sizeNode = node;
  const q = {};
  if (node.comfyClass === "L2PNoiseShift") {
    q.mode = widgetValue(node, "mode");
    q.shift = widgetValue(node, "shift");
    sizeNode = upstream(node, "latent");
    if (!sizeNode || sizeNode.comfyClass !== "L2PEmptyImage") return null;
  }
  q.width = widgetValue(sizeNode, "width");
  q.height = widgetValue(sizeNode, "height");
  q.batch = widgetValue(sizeNode, "batch_size");
  q.preset = widgetValue(sizeNode, "preset") ?? "";
  q.fit = widgetValue(sizeNode, "fit") ?? "reject";
  q.ckpt_name = ckptName(sizeNode) || ckptName(node);
  return new URLSearchParams(Object.entries(q).filter(([, v]) => v !== undefined && v !== null));
}

function addHint(node) {
  const box = element("div", "l2p-hint", "font: 11px monospace; white-space: pre-wrap; opacity: 0.85; padding: 2px 4px;");
  node.addDOMWidget("l2p_hint", "l2p_hint", box, { serialize: false, hideOnZoom: false });
  let timer = null;
  const refresh = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const query = hintQuery(node);
      if (!query) {
        box.textContent = "connect the latent from L2P Empty Image to see the shift";
        return;
      }
      try {
        const res = await api.fetchApi(`/l2p/hints?${query}`);
        const data = await res.json();
        box.textContent = data.text;
        box.dataset.ok = String(data.ok);
      } catch (err) {
        box.textContent = `hint unavailable: ${err}`;
      }
    }, 150);
  };
  for (const w of node.widgets ?? []) {
    const original = w.callback;
    w.callback = function (...args) {
      const result = original?.apply(this, args);
      refresh();
      return result;
    };
  }
  const onConnectionsChange = node.onConnectionsChange;
  node.onConnectionsChange = function (...args) {
    const result = onConnectionsChange?.apply(this, args);
    refresh();
    return result;
  };
  node.l2pRefreshHint = refresh;
  refresh();
}

function element(tag, className, css, props = {}) {
  const el = Object.assign(document.createElement(tag), { className, ...props });
  el.style.cssText = css;
  return el;
}

function addTrainPanel(node) {
  const root = element("div", "l2p-train", "display: flex; flex-direction: column; gap: 4px; font: 11px monospace; padding: 2px 4px;");
  const status = element("div", "l2p-train-status", "", { textContent: "not started" });
  const canvas = element("canvas", "l2p-train-loss", "width: 100%; background: rgba(0,0,0,0.25); border-radius: 4px;",
    { width: 300, height: 110 });
  canvas.dataset.points = "0";
  const image = element("img", "l2p-train-validation", "max-width: 100%; display: none; border-radius: 4px;");
  const stop = element("button", "l2p-train-stop", "", { textContent: "Stop (save a checkpoint)", disabled: true });
  stop.onclick = async () => {
    stop.disabled = true;
    status.textContent += " · stopping…";
    await api.fetchApi("/interrupt", { method: "POST" }); // the same clean stop as Cancel
  };
  root.append(status, canvas, image, stop);
  node.addDOMWidget("l2p_train_panel", "l2p_train_panel", root, { serialize: false, hideOnZoom: false });
  // Found from the event's node id at event time: ids are assigned after nodeCreated when a workflow loads.
  node.l2pPanel = { status, canvas, image, stop, series: [], state: {} };
  return node.l2pPanel;
}

function drawLoss(panel) {
  const { canvas, series } = panel;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const pts = chartPoints(series, canvas.width, canvas.height, 6);
  ctx.strokeStyle = "#4fc3f7";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  pts.forEach(([x, y], i) => (i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y)));
  ctx.stroke();
  canvas.dataset.points = String(series.length);
}

// detail: a trainer event as training/contract.py defines it (EVENTS), plus the node id and, for validation,
// the images as /view arguments (ws_payload); tests/test_contract.py checks every field read here against it.
function onTrainEvent(detail) {
  const node = app.graph?.getNodeById(Number(detail.node)) ?? app.graph?.getNodeById(detail.node);
  const panel = node?.l2pPanel;
  if (!panel) return;
  const st = panel.state;
  switch (detail.event) {
    case "start":
      Object.assign(st, { step: detail.step, steps: detail.steps, globalBatch: detail.global_batch });
      panel.stop.disabled = false;
      break;
    case "resumed":
      st.step = detail.step;
      panel.stop.disabled = false;
      break;
    case "log":
      Object.assign(st, { step: detail.step, steps: detail.steps, loss: detail.loss, samplesPerS: detail.samples_per_s, memoryMb: detail.memory_mb });
      pushPoint(panel.series, detail.step, detail.loss);
      drawLoss(panel);
      break;
    case "validation":
      if (detail.view?.length) {
        const v = detail.view[0];
        panel.image.src = api.apiURL(`/view?${new URLSearchParams({ ...v, t: String(Date.now()) })}`);
        panel.image.style.display = "block";
      }
      break;
    case "checkpoint":
      st.lastCheckpoint = detail.path;
      break;
    case "stopped":
    case "done":
      st.step = detail.step;
      panel.stop.disabled = true;
      break;
  }
  panel.status.textContent = statusLine(st) + (detail.event === "done" ? " · done" : detail.event === "stopped" ? " · stopped, checkpoint saved" : "");
}

app.registerExtension({
  name: "ComfyUI-L2P",
  setup() {
    api.addEventListener("l2p.train", (e) => onTrainEvent(e.detail));
  },
  nodeCreated(node) {
    if (node.comfyClass === "L2PTrain") addTrainPanel(node);
    if (HINT_NODES.has(node.comfyClass)) addHint(node);
  },
});
