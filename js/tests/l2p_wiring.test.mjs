import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { NO_LATENT, hintParams, hintQuery, samplersOf, walkModel } from "../l2p_wiring.js";

// Widget names of the node types the shipped workflows below use (a UI workflow stores values by position).
const WIDGETS = {
  L2PModelLoader: ["ckpt_name", "weight_dtype"],
  ModelSamplingAuraFlow: ["shift"],
  L2PNoiseShift: ["mode", "shift"],
  L2PEmptyImage: ["width", "height", "batch_size", "preset", "fit"],
  KSampler: ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
};

// The snapshot js/l2p.js builds from the live graph, here from a shipped workflow file.
function snapshotOf(name) {
  const wf = JSON.parse(readFileSync(new URL(`../../workflows/${name}.json`, import.meta.url), "utf8"));
  const origin = Object.fromEntries(wf.links.map(([id, from]) => [id, String(from)]));
  const nodes = {};
  for (const n of wf.nodes) {
    const names = WIDGETS[n.type] ?? [];
    nodes[n.id] = {
      type: n.type,
      inputs: Object.fromEntries((n.inputs ?? []).map((i) => [i.name, i.link === null ? null : origin[i.link]])),
      widgets: Object.fromEntries(names.map((w, i) => [w, n.widgets_values?.[i]])),
    };
  }
  return { nodes };
}

const idOf = (graph, type) => Object.keys(graph.nodes).find((id) => graph.nodes[id].type === type);

function node(type, inputs = {}, widgets = {}) {
  return { type, inputs, widgets };
}

test("shapes demo: the empty image's hint asks for the wired ModelSamplingAuraFlow shift and the loader's file", () => {
  const g = snapshotOf("l2p_shapes_demo");
  const { params } = hintParams(g, idOf(g, "L2PEmptyImage"));
  assert.deepEqual(params, {
    shift_from: "ModelSamplingAuraFlow", shift: 1, width: 64, height: 64, batch: 4,
    preset: "custom (width x height)", fit: "reject", ckpt_name: "l2p-shapes-demo.safetensors",
  });
  assert.equal(hintQuery(params), "width=64&height=64&batch=4&preset=custom+%28width+x+height%29&fit=reject&"
    + "ckpt_name=l2p-shapes-demo.safetensors&shift_from=ModelSamplingAuraFlow&shift=1");
});

test("4K workflow: both hints ask for L2PNoiseShift auto with the empty image's size", () => {
  const g = snapshotOf("l2p_zimage_4k");
  for (const type of ["L2PEmptyImage", "L2PNoiseShift"]) {
    const { params } = hintParams(g, idOf(g, type));
    assert.equal(params.shift_from, "L2PNoiseShift", type);
    assert.equal(params.mode, "auto", type);
    assert.equal(params.shift, 3, type);
    assert.equal(params.width, 3840, type);
    assert.equal(params.ckpt_name, "l2p-zimage-4k.safetensors", type);
  }
});

test("a sampler fed straight from the loader samples at the model's default shift", () => {
  const g = { nodes: {
    1: node("L2PModelLoader", {}, { ckpt_name: "a.safetensors" }),
    2: node("L2PEmptyImage", { model: "1" }, { width: 512, height: 256, batch_size: 1 }),
    3: node("KSampler", { model: "1", latent_image: "2", positive: null }),
  } };
  const { params } = hintParams(g, "2");
  assert.equal(params.shift_from, "model");
  assert.equal(params.shift, undefined);
  assert.equal(params.ckpt_name, "a.safetensors");
  assert.equal(hintQuery(params), "width=512&height=256&batch=1&ckpt_name=a.safetensors&shift_from=model");
});

test("no sampler wired: the shift is assumed, the checkpoint comes from the empty image's own model input", () => {
  const g = { nodes: {
    1: node("UNETLoader", {}, { unet_name: "u.safetensors" }),
    2: node("L2PEmptyImage", { model: "1" }, { width: 64, height: 64, batch_size: 2 }),
    3: node("ModelSamplingAuraFlow", { model: "1" }, { shift: 7 }),
  } };
  const { params } = hintParams(g, "2");
  assert.equal(params.shift_from, "assumed");
  assert.equal(params.shift, undefined); // a shift node not on a sampler's path says nothing
  assert.equal(params.ckpt_name, "u.safetensors");
  const bare = hintParams({ nodes: { 5: node("L2PEmptyImage", { model: null }, { width: 64, height: 64 }) } }, "5");
  assert.equal(hintQuery(bare.params), "width=64&height=64&shift_from=assumed");
});

test("the shift node nearest the sampler wins; pass-through nodes and Reroutes are followed", () => {
  const g = { nodes: {
    1: node("L2PModelLoader", {}, { ckpt_name: "m.safetensors" }),
    2: node("L2PNoiseShift", { model: "1", latent: "6" }, { mode: "auto", shift: 3 }),
    3: node("ModelSamplingAuraFlow", { model: "2" }, { shift: 2.5 }),
    4: node("L2PHeadTiling", { model: "3" }, { mode: "auto" }),
    5: node("Reroute", { "": "4" }),
    6: node("L2PEmptyImage", { model: "1" }, { width: 128, height: 128, batch_size: 1 }),
    7: node("Reroute", { "": "6" }),
    8: node("KSampler", { model: "5", latent_image: "7" }),
  } };
  assert.deepEqual(samplersOf(g, "6"), ["8"]);
  assert.deepEqual(walkModel(g, "8"), { shiftNode: "3", loader: "1", ckptName: "m.safetensors" });
  const { params } = hintParams(g, "6");
  assert.equal(params.shift_from, "ModelSamplingAuraFlow");
  assert.equal(params.shift, 2.5);
  assert.equal(params.mode, undefined);
});

test("SamplerCustomAdvanced: the model is found through its guider", () => {
  const g = { nodes: {
    1: node("L2PModelLoader", {}, { ckpt_name: "g.safetensors" }),
    2: node("L2PNoiseShift", { model: "1", latent: "4" }, { mode: "manual", shift: 4 }),
    3: node("CFGGuider", { model: "2", positive: null }),
    4: node("L2PEmptyImage", { model: null }, { width: 64, height: 64, batch_size: 1 }),
    5: node("SamplerCustomAdvanced", { guider: "3", latent_image: "4", noise: null }),
  } };
  const { params } = hintParams(g, "4");
  assert.equal(params.shift_from, "L2PNoiseShift");
  assert.equal(params.mode, "manual");
  assert.equal(params.shift, 4);
  assert.equal(params.ckpt_name, "g.safetensors");
});

test("L2PNoiseShift without the empty image's latent asks nothing; a model loop ends", () => {
  const g = { nodes: {
    1: node("L2PNoiseShift", { model: "2", latent: null }, { mode: "auto", shift: 3 }),
    2: node("LoraLoaderModelOnly", { model: "1" }),
    3: node("L2PEmptyImage", { model: "2" }, { width: 64, height: 64 }),
    4: node("KSampler", { model: "2", latent_image: "3" }),
  } };
  assert.deepEqual(hintParams(g, "1"), { missing: NO_LATENT });
  assert.deepEqual(walkModel(g, "4"), { shiftNode: "1", loader: null, ckptName: "" });
  const { params } = hintParams(g, "3");
  assert.equal(params.shift_from, "L2PNoiseShift");
  assert.equal(params.ckpt_name, "");
  assert.ok(!hintQuery(params).includes("ckpt_name"));
});
