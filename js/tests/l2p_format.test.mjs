import assert from "node:assert/strict";
import { test } from "node:test";

import { chartPoints, etaSeconds, formatBytes, formatDuration, hintText, pushPoint, statusLine } from "../l2p_format.js";

test("formatBytes picks the unit", () => {
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(1536), "1.50 KiB");
  assert.equal(formatBytes(3 * 2 ** 30), "3.00 GiB");
  assert.equal(formatBytes(14.16 * 2 ** 30), "14.2 GiB");
  assert.equal(formatBytes(-1), "?");
});

test("formatDuration", () => {
  assert.equal(formatDuration(42), "42s");
  assert.equal(formatDuration(125), "2m 05s");
  assert.equal(formatDuration(3 * 3600 + 7 * 60), "3h 07m");
  assert.equal(formatDuration(NaN), "?");
});

test("etaSeconds is the remaining samples over the rate", () => {
  assert.equal(etaSeconds(10, 110, 4, 2), 50); // 100 steps x 2 samples at 4 samples/s
  assert.equal(etaSeconds(5, 5, 1, 1), 0);
  assert.ok(Number.isNaN(etaSeconds(1, 5, 0, 1)));
});

test("pushPoint caps the series and keeps the newest point", () => {
  const s = [];
  for (let i = 1; i <= 100; i++) pushPoint(s, i, 1 / i, 10);
  assert.ok(s.length <= 11);
  assert.deepEqual(s[s.length - 1], [100, 1 / 100]);
  assert.deepEqual(s[0], [1, 1]);
  pushPoint(s, 101, NaN, 10);
  assert.deepEqual(s[s.length - 1], [100, 1 / 100]);
});

test("chartPoints maps steps left to right and loss top-down", () => {
  const pts = chartPoints([[0, 2], [10, 1], [20, 0]], 104, 54, 2);
  assert.deepEqual(pts[0], [2, 2]);
  assert.deepEqual(pts[2], [102, 52]);
  assert.deepEqual(pts[1], [52, 27]);
  assert.deepEqual(chartPoints([], 10, 10), []);
  assert.deepEqual(chartPoints([[3, 1]], 10, 10, 0), [[5, 5]]);
});

test("statusLine", () => {
  const line = statusLine({ step: 10, steps: 110, loss: 0.123456, samplesPerS: 4, globalBatch: 2, memoryMb: 1024 });
  assert.equal(line, "step 10/110 · loss 0.1235 · 4.00 samples/s · ETA 50s · mem 1.00 GiB");
  assert.equal(statusLine({ step: 0, steps: 5, cachingDone: 3, cachingTotal: 8 }), "caching text conditioning 3/8");
  assert.equal(statusLine({ step: 1, steps: 5, cachingDone: 8, cachingTotal: 8, skipped: 2 }),
    "step 1/5 · 2 items skipped");
});

test("hintText shows the hint, or the message saying what is wrong", () => {
  assert.equal(hintText({ ok: true, text: "64x64 -> 4x4" }), "64x64 -> 4x4");
  assert.equal(hintText({ ok: false, message: "width must be ..." }), "width must be ...");
  assert.equal(hintText({ ok: false }), "hint unavailable");
  assert.equal(hintText(null), "hint unavailable");
});
