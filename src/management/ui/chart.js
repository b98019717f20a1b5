// Time-series line charts in plain SVG, and the history they plot: seeded from the API's
// sample series (RabbitMQ's `…_details.samples`) when it sends them, otherwise built up
// from each poll's current values.

import { h, svg, clock } from './dom.js';

export const COLORS = ['#1d5c63', '#e07a1f', '#3f8f3a', '#b23a48', '#6b4fa3', '#c9a227', '#2a7ab0', '#7a7a7a'];

const WINDOW = 600_000; // ten minutes of history, as the API's samples

// Points per key, oldest first, at most ten minutes old.
export class History {
  constructor() {
    this.series = new Map();
  }

  add(key, t, v) {
    if (typeof v !== 'number' || Number.isNaN(v)) return;
    const list = this.series.get(key) || [];
    list.push([t, v]);
    this.series.set(key, list.filter(([at]) => at >= t - WINDOW));
  }

  // Replace a key's points (from the API's samples).
  seed(key, points) {
    this.series.set(key, points.slice());
  }

  points(key) {
    return this.series.get(key) || [];
  }
}

// RabbitMQ's samples `[{sample, timestamp}]` (newest first there) as [[t, v]] oldest first.
export function levels(samples) {
  return samples
    .filter((s) => typeof s.sample === 'number' && typeof s.timestamp === 'number')
    .map((s) => [s.timestamp, s.sample])
    .sort((a, b) => a[0] - b[0]);
}

// Samples of a counter as per-second rates between neighbouring samples.
export function ratesOf(samples) {
  const pts = levels(samples);
  const out = [];
  for (let i = 1; i < pts.length; i++) {
    const dt = (pts[i][0] - pts[i - 1][0]) / 1000;
    if (dt > 0) out.push([pts[i][0], Math.max(0, (pts[i][1] - pts[i - 1][1]) / dt)]);
  }
  return out;
}

// A round upper bound for the y axis and its step.
function niceScale(max) {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const raw = max / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  return { top: step * Math.ceil(max / step), step };
}

const TIME_STEPS = [5, 10, 15, 30, 60, 120, 300].map((s) => s * 1000);

// series: [{label, points: [[t, v]], value (shown in the legend)}]; format(v) for the legend and
// axis. Returns a <div class="chart"> holding the SVG and its legend.
export function lineChart({ title, series, format = String, id }) {
  const W = 720;
  const H = 220;
  const pad = { l: 56, r: 12, t: 12, b: 26 };
  const all = series.flatMap((s) => s.points);
  const total = all.length;
  const end = total ? Math.max(...all.map((p) => p[0])) : Date.now();
  const first = total ? Math.min(...all.map((p) => p[0])) : end;
  const span = Math.max(60_000, Math.min(WINDOW, end - first));
  const start = end - span;
  const { top, step } = niceScale(Math.max(0, ...all.map((p) => p[1])));
  const x = (t) => pad.l + ((t - start) / span) * (W - pad.l - pad.r);
  const y = (v) => H - pad.b - (v / top) * (H - pad.t - pad.b);

  const parts = [svg('title', null, title)];
  for (let v = 0; v <= top + step / 2; v += step) {
    parts.push(svg('line', { class: 'grid', x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v) }));
    parts.push(svg('text', { x: pad.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, format(v)));
  }
  const tStep = TIME_STEPS.find((s) => span / s <= 6) || 600_000;
  for (let t = Math.ceil(start / tStep) * tStep; t <= end; t += tStep) {
    parts.push(svg('line', { class: 'grid', x1: x(t), x2: x(t), y1: pad.t, y2: H - pad.b }));
    parts.push(svg('text', { x: x(t), y: H - 8, 'text-anchor': 'middle' }, clock(t)));
  }
  parts.push(svg('line', { class: 'axis', x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b }));
  parts.push(svg('line', { class: 'axis', x1: pad.l, x2: pad.l, y1: pad.t, y2: H - pad.b }));
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    const pts = s.points.filter(([t]) => t >= start);
    if (!pts.length) return;
    const d = pts.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    parts.push(svg('polyline', { class: 'line', points: d, stroke: color, dataset: { series: s.label, count: pts.length } }));
    const [lt, lv] = pts[pts.length - 1];
    parts.push(svg('circle', { cx: x(lt), cy: y(lv), r: 3, fill: color }));
  });
  if (!total) {
    parts.push(svg('text', { class: 'nodata', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'Waiting for data…'));
  }
  const legend = h(
    'div',
    { class: 'legend' },
    series.map((s, i) => {
      const sw = h('span', { class: 'swatch' });
      sw.style.background = s.color || COLORS[i % COLORS.length];
      return h('span', { dataset: { series: s.label } }, sw, s.label, h('span', { class: 'value' }, format(s.value ?? 0)));
    }),
  );
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title, dataset: { points: total } }, parts);
  return h('div', { class: 'chart', id }, chart, legend);
}

// Record an API object's levels (`obj[key]`, with `obj[key + '_details'].samples` when sent)
// in `history` under `prefix + key`.
export function trackLevels(history, prefix, obj, keys, now) {
  for (const key of keys) {
    const samples = obj && obj[`${key}_details`] && obj[`${key}_details`].samples;
    if (Array.isArray(samples) && samples.length) history.seed(prefix + key, levels(samples));
    else if (obj) history.add(prefix + key, now, obj[key]);
  }
}

// Record the rates of a `message_stats` object (counters' samples, else each poll's `rate`).
export function trackRates(history, prefix, stats, keys, now) {
  for (const key of keys) {
    const d = stats && stats[`${key}_details`];
    if (!d) continue;
    if (Array.isArray(d.samples) && d.samples.length > 1) history.seed(prefix + key, ratesOf(d.samples));
    else history.add(prefix + key, now, d.rate);
  }
}
