// The overview's charts, drawn as inline SVG built with the DOM (no library, nothing from another
// origin). Colours come from classes in app.css; every bar and point carries a <title> with its
// figures, and every chart has a text summary for screen readers.

const SVG = "http://www.w3.org/2000/svg";
// Each chart is drawn in its own coordinates, about as wide as it shows on a desktop, so its text
// keeps its size; on a narrower screen the whole drawing scales down.
const H = 220;
const PAD = { left: 44, right: 12, top: 12, bottom: 28 };

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** A round maximum for the y axis, at least `min`. */
function niceMax(v, min) {
  const x = Math.max(v, min || 1);
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

function frame(W, label, max) {
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart-svg", preserveAspectRatio: "xMidYMid meet" });
  const plotH = H - PAD.top - PAD.bottom;
  for (const f of [0, 0.5, 1]) {
    const y = PAD.top + plotH * (1 - f);
    svg.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: f === 0 ? "axis" : "grid" }));
    const v = max * f;
    svg.append(s("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end", class: "tick" }, formatTick(v)));
  }
  return svg;
}

function formatTick(v) {
  if (v >= 10000) return Math.round(v / 1000) + "k";
  if (v >= 1000) return (v / 1000).toFixed(1).replace(/\.0$/, "") + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

/**
 * Stacked bars: `buckets` in time order, `series` = [{label, cls, value(bucket)}], `xLabel(bucket, i)`
 * gives the axis label (or null to skip one).
 */
export function stackedBars({ label, buckets, series, xLabel, title, width }) {
  const W = width || 640;
  const totals = buckets.map((b) => series.reduce((n, ser) => n + ser.value(b), 0));
  const max = niceMax(Math.max(0, ...totals), 4);
  const svg = frame(W, label, max);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = plotW / Math.max(buckets.length, 1);
  const barW = Math.max(2, step * 0.72);
  buckets.forEach((b, i) => {
    const x = PAD.left + i * step + (step - barW) / 2;
    let y = PAD.top + plotH;
    const g = s("g", { class: "bar", "data-total": totals[i] });
    for (const ser of series) {
      const v = ser.value(b);
      if (!v) continue;
      const hgt = (v / max) * plotH;
      y -= hgt;
      g.append(s("rect", { x: x.toFixed(1), y: y.toFixed(1), width: barW.toFixed(1), height: Math.max(hgt, 0.5).toFixed(1), class: ser.cls }));
    }
    g.append(s("title", {}, title(b, totals[i])));
    // A transparent column over the whole height, so the tooltip is easy to reach.
    g.append(s("rect", { x: (PAD.left + i * step).toFixed(1), y: PAD.top, width: step.toFixed(1), height: plotH, class: "hit" }));
    svg.append(g);
    const xl = xLabel(b, i);
    if (xl) svg.append(s("text", { x: (x + barW / 2).toFixed(1), y: H - 8, "text-anchor": "middle", class: "tick" }, xl));
  });
  return svg;
}

/** Lines over time: `lines` = [{label, cls, value(bucket) → number|null}]; null leaves a gap. The
 * chart's caption names the unit. */
export function lineChart({ label, buckets, lines, xLabel, title, width }) {
  const W = width || 640;
  const all = buckets.flatMap((b) => lines.map((l) => l.value(b))).filter((v) => v !== null && v !== undefined);
  const max = niceMax(Math.max(0, ...all), 10);
  const svg = frame(W, label, max);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = plotW / Math.max(buckets.length, 1);
  const xOf = (i) => PAD.left + i * step + step / 2;
  const yOf = (v) => PAD.top + plotH * (1 - v / max);
  for (const l of lines) {
    let d = "";
    let open = false;
    buckets.forEach((b, i) => {
      const v = l.value(b);
      if (v === null || v === undefined) {
        open = false;
        return;
      }
      d += `${open ? "L" : "M"}${xOf(i).toFixed(1)} ${yOf(v).toFixed(1)} `;
      open = true;
    });
    if (d) svg.append(s("path", { d: d.trim(), class: `line ${l.cls}` }));
    buckets.forEach((b, i) => {
      const v = l.value(b);
      if (v === null || v === undefined) return;
      svg.append(s("circle", { cx: xOf(i).toFixed(1), cy: yOf(v).toFixed(1), r: 3, class: `point ${l.cls}` }, s("title", {}, title(b, l, v))));
    });
  }
  buckets.forEach((b, i) => {
    const xl = xLabel(b, i);
    if (xl) svg.append(s("text", { x: xOf(i).toFixed(1), y: H - 8, "text-anchor": "middle", class: "tick" }, xl));
  });
  return svg;
}
