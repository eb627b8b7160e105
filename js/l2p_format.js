// Pure helpers of the L2P frontend (no DOM, no ComfyUI): formatting, ETA, the loss series and its chart
// geometry, the hint box's text. Unit-tested with `node --test js/tests`. Sizes, shifts and memory figures
// are never computed here: they come from the Python route /l2p/hints.

export function formatBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) {
    bytes /= 1024;
    i += 1;
  }
  return `${bytes.toFixed(i === 0 ? 0 : bytes < 10 ? 2 : 1)} ${units[i]}`;
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m > 0) return `${m}m ${String(r).padStart(2, "0")}s`;
  return `${r}s`;
}

// Seconds left: the steps still to do at the measured rate (the trainer reports samples/s and the
// global batch; a step is global_batch samples).
export function etaSeconds(step, steps, samplesPerS, globalBatch) {
  if (!(samplesPerS > 0) || !(globalBatch > 0) || step >= steps) return step >= steps ? 0 : NaN;
  return ((steps - step) * globalBatch) / samplesPerS;
}

// Keeps at most `cap` points by dropping every other one when full, so long runs stay cheap to draw
// while the curve keeps its shape; the newest point is always kept.
export function pushPoint(series, step, loss, cap = 512) {
  if (!Number.isFinite(loss)) return series;
  series.push([step, loss]);
  if (series.length > cap) {
    const kept = series.filter((_, i) => i % 2 === 0);
    if (kept[kept.length - 1] !== series[series.length - 1]) kept.push(series[series.length - 1]);
    series.length = 0;
    series.push(...kept);
  }
  return series;
}

// Canvas coordinates of the series in a width x height box with `pad` pixels of margin (y grows down).
export function chartPoints(series, width, height, pad = 4) {
  if (series.length === 0) return [];
  const xs = series.map((p) => p[0]);
  const ys = series.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (width - 2 * pad) / Math.max(x1 - x0, 1e-12);
  const sy = (height - 2 * pad) / Math.max(y1 - y0, 1e-12);
  return series.map(([x, y]) => [
    pad + (x1 === x0 ? (width - 2 * pad) / 2 : (x - x0) * sx),
    height - pad - (y1 === y0 ? (height - 2 * pad) / 2 : (y - y0) * sy),
  ]);
}

export function statusLine(state) {
  if (state.cachingTotal > 0 && state.cachingDone < state.cachingTotal) {
    return `caching text conditioning ${state.cachingDone ?? 0}/${state.cachingTotal}`;
  }
  const parts = [`step ${state.step ?? 0}/${state.steps ?? "?"}`];
  if (state.skipped > 0) parts.push(`${state.skipped} items skipped`);
  if (Number.isFinite(state.loss)) parts.push(`loss ${state.loss.toPrecision(4)}`);
  if (state.samplesPerS > 0) parts.push(`${state.samplesPerS.toFixed(2)} samples/s`);
  const eta = etaSeconds(state.step ?? 0, state.steps ?? 0, state.samplesPerS, state.globalBatch);
  if (Number.isFinite(eta)) parts.push(`ETA ${formatDuration(eta)}`);
  if (state.memoryMb > 0) parts.push(`mem ${formatBytes(state.memoryMb * 2 ** 20)}`);
  return parts.join(" · ");
}

// The text a hint box shows for an answer of /l2p/hints: the hint, or the message saying what is wrong.
export function hintText(data) {
  if (data?.ok === true && typeof data.text === "string") return data.text;
  if (typeof data?.message === "string" && data.message) return data.message;
  return "hint unavailable";
}
