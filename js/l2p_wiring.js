// Pure graph walking for the L2P hints (no DOM, no ComfyUI): which model, which shift and which size the
// sampler actually gets, found on a plain snapshot of the graph. Unit-tested with `node --test js/tests`.
//
// A snapshot is { nodes: { [id]: { type, widgets: { name: value }, inputs: { name: originId | null } } } }
// (js/l2p.js builds it from the live graph). The figures themselves come from the Python route /l2p/hints;
// this module only says what to ask it: the size node's widgets, the L2P checkpoint the loader names, and
// what sets the shift (an L2PNoiseShift, a ModelSamplingAuraFlow / ModelSamplingSD3 on the sampler's model
// path, the model's own default when a sampler is wired with none, or "assumed" when no sampler is wired).

export const SHIFT_NODES = ["L2PNoiseShift", "ModelSamplingAuraFlow", "ModelSamplingSD3"];
// Loaders of an L2P file and the widget naming it (the route reads that file's header).
export const LOADERS = { L2PModelLoader: "ckpt_name", UNETLoader: "unet_name" };
export const NO_LATENT = "connect the latent from L2P Empty Image to see the shift";
const MAX_HOPS = 64;

function nodeOf(graph, id) {
  return id === null || id === undefined ? null : graph?.nodes?.[String(id)] ?? null;
}

// The id of the node feeding input `name` of node `id`, through legacy Reroute nodes; null when unconnected.
export function inputNode(graph, id, name) {
  let current = nodeOf(graph, id)?.inputs?.[name];
  for (let hops = 0; hops < MAX_HOPS; hops++) {
    const n = nodeOf(graph, current);
    if (!n) return null;
    if (n.type !== "Reroute") return String(current);
    current = Object.values(n.inputs ?? {})[0];
  }
  return null;
}

// Upstream along MODEL links from input `name` of node `id`: the first shift node met (the one the sampler
// gets: a later one overrides an earlier one) and the L2P loader at the start, with the file it names.
export function walkModel(graph, id, name = "model") {
  const found = { shiftNode: null, loader: null, ckptName: "" };
  const seen = new Set();
  let current = inputNode(graph, id, name);
  while (current !== null && !seen.has(current) && seen.size < MAX_HOPS) {
    seen.add(current);
    const n = nodeOf(graph, current);
    if (found.shiftNode === null && SHIFT_NODES.includes(n.type)) found.shiftNode = current;
    const widget = LOADERS[n.type];
    if (widget) {
      found.loader = current;
      found.ckptName = String(n.widgets?.[widget] ?? "");
      break;
    }
    current = inputNode(graph, current, "model");
  }
  return found;
}

// The samplers that take node `id`'s output as their latent_image (KSampler, KSamplerAdvanced, SamplerCustom,
// SamplerCustomAdvanced), through Reroutes; lowest id first.
export function samplersOf(graph, id) {
  const found = new Set();
  const seen = new Set([String(id)]);
  const frontier = [String(id)];
  while (frontier.length && seen.size < MAX_HOPS) {
    const source = frontier.shift();
    for (const [nid, n] of Object.entries(graph?.nodes ?? {})) {
      for (const [name, from] of Object.entries(n.inputs ?? {})) {
        if (from === null || from === undefined || String(from) !== source) continue;
        if (n.type === "Reroute") {
          if (!seen.has(nid)) {
            seen.add(nid);
            frontier.push(nid);
          }
        } else if (name === "latent_image") {
          found.add(nid);
        }
      }
    }
  }
  return [...found].sort((a, b) => Number(a) - Number(b) || a.localeCompare(b));
}

// The model path of a sampler: its model input, or its guider's (SamplerCustomAdvanced).
export function samplerModel(graph, samplerId) {
  const sampler = nodeOf(graph, samplerId);
  if (sampler?.inputs && "model" in sampler.inputs) return walkModel(graph, samplerId, "model");
  const guider = inputNode(graph, samplerId, "guider");
  return guider ? walkModel(graph, guider, "model") : { shiftNode: null, loader: null, ckptName: "" };
}

// What to ask /l2p/hints for the hint on node `id` (an L2PEmptyImage or an L2PNoiseShift):
// { params } or { missing: text to show instead }.
export function hintParams(graph, id) {
  const self = nodeOf(graph, id);
  if (!self) return { missing: "" };
  const params = {};
  let sizeId = String(id);
  let model;
  if (self.type === "L2PNoiseShift") {
    sizeId = inputNode(graph, id, "latent");
    if (nodeOf(graph, sizeId)?.type !== "L2PEmptyImage") return { missing: NO_LATENT };
    Object.assign(params, { shift_from: "L2PNoiseShift", mode: self.widgets?.mode, shift: self.widgets?.shift });
    model = walkModel(graph, id, "model");
  } else {
    const sampler = samplersOf(graph, id)[0];
    model = sampler === undefined ? walkModel(graph, id, "model") : samplerModel(graph, sampler);
    const shiftNode = sampler === undefined ? null : nodeOf(graph, model.shiftNode);
    if (shiftNode) {
      Object.assign(params, { shift_from: shiftNode.type, shift: shiftNode.widgets?.shift });
      if (shiftNode.type === "L2PNoiseShift") params.mode = shiftNode.widgets?.mode;
    } else {
      params.shift_from = sampler === undefined ? "assumed" : "model";
    }
  }
  const size = nodeOf(graph, sizeId).widgets ?? {};
  Object.assign(params, { width: size.width, height: size.height, batch: size.batch_size, preset: size.preset,
    fit: size.fit });
  params.ckpt_name = model.ckptName || walkModel(graph, sizeId, "model").ckptName;
  return { params };
}

// The query string for /l2p/hints: defined, non-empty values only, in a fixed order.
export function hintQuery(params) {
  const order = ["width", "height", "batch", "preset", "fit", "ckpt_name", "shift_from", "mode", "shift"];
  const entries = order.filter((k) => params[k] !== undefined && params[k] !== null && params[k] !== "")
    .map((k) => [k, String(params[k])]);
  return new URLSearchParams(entries).toString();
}
