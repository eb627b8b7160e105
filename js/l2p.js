// ComfyUI-L2P frontend: a live training panel on L2PTrain, and size / shift / memory hints on
// L2PEmptyImage and L2PNoiseShift. Every figure in the hints comes from the Python route /l2p/hints; which
// model, shift node and size the sampler really gets is found on a snapshot of the graph (l2p_wiring.js);
// this file only snapshots, draws, and formats (l2p_format.js).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { chartPoints, hintText, pushPoint, statusLine } from "./l2p_format.js";
import { hintParams, hintQuery } from "./l2p_wiring.js";

const HINT_NODES = new Set(["L2PEmptyImage", "L2PNoiseShift"]);

// A plain snapshot of the graph for l2p_wiring.js: per node its type, widget values and input origins.
function graphSnapshot(graph) {
  const nodes = {};
  for (const n of graph?._nodes ?? []) {
    const inputs = {};
    (n.inputs ?? []).forEach((input, slot) => {
      inputs[input.name] = n.getInputNode?.(slot)?.id ?? null;
    });
    const widgets = {};
    for (const w of n.widgets ?? []) if (w.name && !w.name.startsWith("l2p_")) widgets[w.name] = w.value;
    nodes[n.id] = { type: n.comfyClass ?? n.type, inputs, widgets };
  }
  return { nodes };
}

// Any widget or link change anywhere can change what a hint describes (the shift node's value, the loader's
// file, a new sampler): every hint node refreshes (each debounced).
function refreshHints(graph) {
  for (const n of graph?._nodes ?? []) n.l2pRefreshHint?.();
}

function watchForHints(node) {
  for (const w of node.widgets ?? []) {
    const original = w.callback;
    w.callback = function (...args) {
      const result = original?.apply(this, args);
      refreshHints(node.graph ?? app.graph);
      return result;
    };
  }
  const onConnectionsChange = node.onConnectionsChange;
  node.onConnectionsChange = function (...args) {
    const result = onConnectionsChange?.apply(this, args);
    refreshHints(node.graph ?? app.graph);
    return result;
  };
}

function addHint(node) {
  const box = element("div", "l2p-hint", "font: 11px monospace; white-space: pre-wrap; opacity: 0.85; padding: 2px 4px;");
  node.addDOMWidget("l2p_hint", "l2p_hint", box, { serialize: false, hideOnZoom: false });
  let timer = null;
  let asked = 0;
  const refresh = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const wiring = hintParams(graphSnapshot(node.graph ?? app.graph), node.id);
      if (wiring.missing !== undefined) {
        box.textContent = wiring.missing;
        return;
      }
      const ask = ++asked;
      try {
        const res = await api.fetchApi(`/l2p/hints?${hintQuery(wiring.params)}`);
        const data = await res.json();
        if (ask !== asked) return; // a newer answer is on its way
        box.textContent = hintText(data);
        box.dataset.ok = String(data.ok === true);
      } catch (err) {
        if (ask === asked) box.textContent = `hint unavailable: ${err}`;
      }
    }, 150);
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
    case "dataset":
      st.skipped = detail.skipped;
      break;
    case "caching":
      Object.assign(st, { cachingDone: detail.done, cachingTotal: detail.total });
      break;
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
    watchForHints(node);
  },
  afterConfigureGraph() {
    refreshHints(app.graph); // a loaded workflow: its links exist now
  },
});
