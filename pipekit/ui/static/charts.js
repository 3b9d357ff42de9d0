// Charts: scalar series with uPlot (columnar arrays straight in, no per-point objects), and the
// plot records a task reports (histogram, scatter, confusion matrix, image, table, text).

/* global uPlot */
import { h, s, clear, fmtValue, safeUrl, COLOURS } from "./util.js";

const CHART_HEIGHT = 230;
const DASHES = [null, [6, 3], [2, 3], [10, 3, 2, 3], [1, 2]];

/** A chart box: div.chart[data-title] with a heading and a body for the plot. */
export function chartBox(title, subtitle) {
  const body = h("div", { class: "chart-body" });
  const box = h("div", { class: "chart", "data-title": title },
    h("div", { class: "chart-title", title },
      h("span", { text: title }),
      subtitle ? h("span", { class: "muted", text: subtitle }) : null),
    body);
  return { box, body };
}

/**
 * A uPlot chart in `body`.
 * @param {{label: string, x: number[], y: number[], colour: string, dash?: number[],
 *          mode?: string}[]} lines
 */
export function linePlot(body, lines, options = {}) {
  const tables = lines.map((l) => [numeric(l.x), l.y]);
  const data = tables.length ? uPlot.join(tables) : [[]];
  const points = data[0].length;
  const series = [{ label: options.xLabel || "iteration" }];
  for (const line of lines) {
    const mode = line.mode || "lines";
    const markers = mode.includes("markers");
    const drawLine = mode.includes("lines");
    const def = {
      label: line.label,
      stroke: line.colour,
      width: drawLine ? 1.5 : 0,
      spanGaps: true,
      points: markers ? { show: true, size: 5, fill: line.colour, stroke: line.colour }
        : { show: points < 60 },
    };
    if (line.dash) def.dash = line.dash;
    if (!drawLine) def.paths = () => null;
    series.push(def);
  }
  const opts = {
    width: widthOf(body, options.width),
    height: options.height || CHART_HEIGHT,
    scales: { x: { time: false } },
    series,
    axes: [
      { stroke: "#555", grid: { stroke: "#eceff3" }, ticks: { stroke: "#d0d5dd" },
        label: options.xTitle || undefined, labelSize: options.xTitle ? 18 : undefined,
        // iterations are whole numbers: no tick at 0.5
        incrs: options.integerX ? INTEGER_STEPS : undefined },
      { stroke: "#555", grid: { stroke: "#eceff3" }, ticks: { stroke: "#d0d5dd" },
        size: 56, label: options.yTitle || undefined, labelSize: options.yTitle ? 18 : undefined },
    ],
    cursor: { drag: { x: true, y: false, setScale: true }, points: { size: 6 } },
    legend: { live: true },
  };
  const plot = new uPlot(opts, data, body);
  watchWidth(body, plot, opts.height);
  return plot;
}

/** Tick spacings for an axis of whole numbers (iterations). */
const INTEGER_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2500, 5e3, 1e4,
  2e4, 25e3, 5e4, 1e5, 2e5, 25e4, 5e5, 1e6, 2e6, 5e6, 1e7];

/** One chart per title of /api/tasks/{id}/scalars' `charts`; returns the uPlot instances. */
export function scalarCharts(host, charts, options = {}) {
  options = { ...options, integerX: true };
  const plots = [];
  const titles = Object.keys(charts || {}).sort(natural);
  for (const title of titles) {
    const names = Object.keys(charts[title] || {}).sort(natural);
    const { box, body } = chartBox(title, names.length > 1 ? `${names.length} series` : "");
    host.append(box);
    const lines = names.map((name, i) => ({
      label: name, x: charts[title][name].x, y: charts[title][name].y,
      colour: COLOURS[i % COLOURS.length] }));
    plots.push(linePlot(body, lines, options));
  }
  return plots;
}

/**
 * Overlaid charts of /api/compare: one per title, one series per (item, series), one colour
 * per item (a dash per series name), the legend naming the item's label.
 */
export function compareCharts(host, charts, items, options = {}) {
  options = { ...options, integerX: true };
  const plots = [];
  const index = new Map(items.map((item, i) => [item.id, i]));
  for (const title of Object.keys(charts || {}).sort(natural)) {
    const bySeries = charts[title] || {};
    const names = Object.keys(bySeries).sort(natural);
    const { box, body } = chartBox(title, "");
    host.append(box);
    const lines = [];
    names.forEach((name, si) => {
      for (const line of bySeries[name] || []) {
        const i = index.has(line.item) ? index.get(line.item) : items.length;
        const item = items[i];
        const label = (item && item.label) || String(line.item).slice(0, 8);
        lines.push({ label: names.length > 1 ? `${label} · ${name}` : label,
          x: line.x, y: line.y, colour: COLOURS[i % COLOURS.length],
          dash: DASHES[si % DASHES.length] });
      }
    });
    plots.push(linePlot(body, lines, options));
  }
  return plots;
}

// -- plot records ----------------------------------------------------------------------------

/** The element drawing one record of /api/tasks/{id}/plots. */
export function plotRecord(plot) {
  const record = plot.data;
  const kind = kindOf(plot.kind, record);
  const traces = tracesOf(record);
  const layout = (record && typeof record === "object" && !Array.isArray(record) &&
    record.layout && typeof record.layout === "object") ? record.layout : {};
  const sub = [plot.series, plot.iteration !== null && plot.iteration !== undefined
    ? `iteration ${plot.iteration}` : null].filter((x) => x !== null && x !== undefined && x !== "")
    .join(" · ");
  const { box, body } = chartBox(plot.title || (kind === "text" ? "text" : "(untitled)"), sub);
  box.classList.add("plot", `plot-${kind}`);
  box.setAttribute("data-kind", plot.kind || kind);
  try {
    if (layout.comment) body.append(h("div", { class: "muted comment", text: layout.comment }));
    if (kind === "histogram") body.append(barChart(traces, layout));
    else if (kind === "scatter") {
      box.linePlot = () => scatterPlot(body, traces, layout);
    } else if (kind === "confusion") body.append(heatTable(traces[0] || {}, layout));
    else if (kind === "image") body.append(imageOf(plot, record));
    else if (kind === "table") body.append(dataTable(record));
    else if (kind === "text") body.append(h("pre", { class: "text", text: textOf(record) }));
    else body.append(h("pre", { class: "text", text: JSON.stringify(record, null, 2) }));
  } catch (err) {
    body.append(h("div", { class: "muted", text: `cannot draw this ${kind}: ${err.message}` }));
  }
  return box;
}

function kindOf(kind, record) {
  const k = String(kind || "").toLowerCase();
  if (["histogram", "bar", "vector"].includes(k)) return "histogram";
  if (["scatter", "scatter2d", "line_plot", "line", "lines", "scatter3d"].includes(k)) return "scatter";
  if (["confusion", "confusion_matrix", "matrix", "heatmap", "surface"].includes(k)) return "confusion";
  if (["image", "matplotlib", "debug_image"].includes(k)) return "image";
  if (k === "table") return "table";
  if (k === "text") return "text";
  const first = tracesOf(record)[0];
  if (first && first.type === "bar") return "histogram";
  if (first && (first.type === "heatmap" || first.z)) return "confusion";
  if (first && first.type === "scatter") return "scatter";
  return k || "unknown";
}

function tracesOf(record) {
  if (Array.isArray(record)) return record.filter((t) => t && typeof t === "object");
  if (record && typeof record === "object" && Array.isArray(record.data)) {
    return record.data.filter((t) => t && typeof t === "object" && !Array.isArray(t));
  }
  return [];
}

function axisTitle(axis) {
  if (!axis) return "";
  if (typeof axis.title === "string") return axis.title;
  if (axis.title && typeof axis.title.text === "string") return axis.title.text;
  return "";
}

function scatterPlot(body, traces, layout) {
  const lines = traces.map((t, i) => ({
    label: String(t.name ?? `series ${i + 1}`), x: t.x || [], y: t.y || [],
    colour: COLOURS[i % COLOURS.length], mode: t.mode || "lines" }));
  const reversed = layout.xaxis && layout.xaxis.autorange === "reversed";
  const plot = linePlot(body, lines, { xLabel: axisTitle(layout.xaxis) || "x",
    xTitle: axisTitle(layout.xaxis), yTitle: axisTitle(layout.yaxis) });
  if (reversed) plot.setScale("x", { min: plot.scales.x.max, max: plot.scales.x.min });
  return plot;
}

/** Bars already counted, as SVG: traces grouped (or stacked) per category. */
function barChart(traces, layout) {
  const W = 640;
  const H = 250;
  const m = { l: 54, r: 12, t: 12, b: 46 };
  const cats = (traces[0] && traces[0].x) || [];
  const n = Math.max(cats.length, ...traces.map((t) => (t.y || []).length), 0);
  const stack = layout.barmode === "stack" || layout.barmode === "relative";
  let lo = 0;
  let hi = 0;
  for (let i = 0; i < n; i++) {
    let pos = 0;
    let neg = 0;
    for (const t of traces) {
      const v = Number((t.y || [])[i]) || 0;
      if (stack) { if (v >= 0) pos += v; else neg += v; } else { hi = Math.max(hi, v); lo = Math.min(lo, v); }
    }
    if (stack) { hi = Math.max(hi, pos); lo = Math.min(lo, neg); }
  }
  if (hi === lo) hi = lo + 1;
  const ticks = niceTicks(lo, hi, 5);
  lo = Math.min(lo, ticks[0]);
  hi = Math.max(hi, ticks[ticks.length - 1]);
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const y = (v) => m.t + ph - ((v - lo) / (hi - lo)) * ph;
  const svg = s("svg", { class: "bars", viewBox: `0 0 ${W} ${H}`, role: "img" });
  for (const t of ticks) {
    svg.append(s("line", { class: "grid", x1: m.l, x2: W - m.r, y1: y(t), y2: y(t) }));
    const label = s("text", { class: "tick", x: m.l - 6, y: y(t) + 4, "text-anchor": "end" });
    label.textContent = fmtValue(t);
    svg.append(label);
  }
  const slot = pw / Math.max(n, 1);
  const groupW = slot * 0.8;
  const barW = stack ? groupW : groupW / Math.max(traces.length, 1);
  const base = [];
  traces.forEach((t, ti) => {
    const colour = (t.marker && typeof t.marker.color === "string" && /^#[0-9a-f]{3,8}$/i.test(t.marker.color))
      ? t.marker.color : COLOURS[ti % COLOURS.length];
    for (let i = 0; i < n; i++) {
      const v = Number((t.y || [])[i]);
      if (!Number.isFinite(v)) continue;
      const x0 = m.l + slot * i + (slot - groupW) / 2 + (stack ? 0 : barW * ti);
      let from = 0;
      if (stack) {
        const b = base[i] || (base[i] = { pos: 0, neg: 0 });
        from = v >= 0 ? b.pos : b.neg;
        if (v >= 0) b.pos += v; else b.neg += v;
      }
      const top = y(Math.max(from, from + v));
      const bottom = y(Math.min(from, from + v));
      const bar = s("rect", { class: "bar", x: x0, y: top, width: Math.max(barW - 1, 0.5),
        height: Math.max(bottom - top, 0.5) });
      bar.style.fill = colour;
      const tip = s("title");
      tip.textContent = `${t.name ?? ""} ${cats[i] ?? i}: ${fmtValue(v)}`.trim();
      bar.append(tip);
      svg.append(bar);
    }
  });
  svg.append(s("line", { class: "axis", x1: m.l, x2: W - m.r, y1: y(0), y2: y(0) }));
  const every = Math.max(1, Math.ceil(n / 16));
  for (let i = 0; i < n; i += every) {
    const label = s("text", { class: "tick", x: m.l + slot * (i + 0.5), y: H - m.b + 16,
      "text-anchor": "middle" });
    label.textContent = String(cats[i] ?? i).slice(0, 12);
    svg.append(label);
  }
  const xt = axisTitle(layout.xaxis);
  const yt = axisTitle(layout.yaxis);
  if (xt) {
    const t = s("text", { class: "axis-title", x: m.l + pw / 2, y: H - 6, "text-anchor": "middle" });
    t.textContent = xt;
    svg.append(t);
  }
  if (yt) {
    const t = s("text", { class: "axis-title", x: 12, y: m.t + ph / 2, "text-anchor": "middle",
      transform: `rotate(-90 12 ${m.t + ph / 2})` });
    t.textContent = yt;
    svg.append(t);
  }
  const wrap = h("div", { class: "bar-chart" }, svg);
  if (traces.length > 1) wrap.append(legend(traces.map((t, i) => [String(t.name ?? i), COLOURS[i % COLOURS.length]])));
  return wrap;
}

function legend(entries) {
  return h("div", { class: "legend" }, entries.map(([label, colour]) => {
    const swatch = h("span", { class: "swatch" });
    swatch.style.background = colour;
    return h("span", { class: "legend-item" }, swatch, label);
  }));
}

/** A confusion matrix as an HTML table heat-map, with its axis labels. */
function heatTable(trace, layout) {
  const z = Array.isArray(trace.z) ? trace.z : [];
  const rows = z.length;
  const cols = rows ? Math.max(...z.map((r) => (Array.isArray(r) ? r.length : 0))) : 0;
  const xl = Array.isArray(trace.x) ? trace.x : Array.from({ length: cols }, (_, i) => i);
  const yl = Array.isArray(trace.y) ? trace.y : Array.from({ length: rows }, (_, i) => i);
  let lo = Infinity;
  let hi = -Infinity;
  for (const row of z) for (const v of row || []) {
    if (typeof v === "number") { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  const topDown = layout.yaxis && layout.yaxis.autorange === "reversed";
  const order = Array.from({ length: rows }, (_, i) => (topDown ? i : rows - 1 - i));
  const table = h("table", { class: "heat" });
  const yTitle = axisTitle(layout.yaxis);
  const body = h("tbody");
  order.forEach((r, idx) => {
    const tr = h("tr");
    if (idx === 0) {
      tr.append(h("th", { class: "axis-y", rowspan: String(rows), text: yTitle }));
    }
    tr.append(h("th", { class: "row-label", text: String(yl[r] ?? r) }));
    for (let c = 0; c < cols; c++) {
      const v = (z[r] || [])[c];
      const td = h("td", { text: v === null || v === undefined ? "" : fmtValue(v),
        title: `${yl[r] ?? r} / ${xl[c] ?? c}: ${fmtValue(v)}` });
      if (typeof v === "number" && hi > lo) {
        const a = 0.06 + 0.94 * ((v - lo) / (hi - lo));
        td.style.backgroundColor = `rgba(21, 101, 192, ${a.toFixed(3)})`;
        if (a > 0.55) td.classList.add("dark");
      }
      tr.append(td);
    }
    body.append(tr);
  });
  const foot = h("tr", null, h("th"), h("th"),
    ...Array.from({ length: cols }, (_, c) => h("th", { class: "col-label", text: String(xl[c] ?? c) })));
  const xTitle = axisTitle(layout.xaxis);
  table.append(body, h("tfoot", null, foot,
    xTitle ? h("tr", null, h("th"), h("th"), h("th", { class: "axis-x", colspan: String(cols), text: xTitle })) : null));
  return h("div", { class: "heat-wrap" }, table);
}

function imageOf(plot, record) {
  // only this server's images: the page's Content-Security-Policy would block any other
  const url = typeof plot.image === "string" && plot.image.startsWith("/") &&
    !plot.image.startsWith("//") ? plot.image : null;
  const info = record && typeof record === "object" ? record.image || {} : {};
  if (url) {
    const img = h("img", { src: url, alt: `${plot.title} ${plot.series}`, loading: "lazy" });
    return h("a", { href: url, target: "_blank", rel: "noopener", class: "image-link" }, img);
  }
  const external = safeUrl(plot.image) || safeUrl(info && info.url);
  if (external) {
    return h("div", { class: "muted" }, "image at ",
      h("a", { href: external, target: "_blank", rel: "noopener noreferrer", class: "mono", text: external }));
  }
  if (info && typeof info.url === "string") {
    return h("div", { class: "muted" }, "image at ", h("span", { class: "mono", text: info.url }));
  }
  return h("div", { class: "muted", text: "no image" });
}

function textOf(record) {
  if (typeof record === "string") return record;
  if (record && typeof record.text === "string") return record.text;
  return JSON.stringify(record, null, 2);
}

const TABLE_ROWS = 1000;

/** A reported table: pandas "split" JSON ({columns, index, data}), {data} or rows. */
export function dataTable(record) {
  let rec = record;
  if (typeof rec === "string") {
    try { rec = JSON.parse(rec); } catch (_) { return h("pre", { class: "text", text: rec }); }
  }
  const rows = Array.isArray(rec) ? rec : (rec && Array.isArray(rec.data) ? rec.data : []);
  const columns = rec && Array.isArray(rec.columns) ? rec.columns : null;
  const index = rec && Array.isArray(rec.index) ? rec.index : null;
  const table = h("table", { class: "grid" });
  if (columns) {
    table.append(h("thead", null, h("tr", null, index ? h("th") : null,
      columns.map((c) => h("th", { text: Array.isArray(c) ? c.join(" / ") : String(c) })))));
  }
  const body = h("tbody");
  rows.slice(0, TABLE_ROWS).forEach((row, i) => {
    const cells = Array.isArray(row) ? row : [row];
    body.append(h("tr", null, index ? h("th", { text: String(index[i] ?? "") }) : null,
      cells.map((v) => h("td", { text: fmtValue(v) }))));
  });
  table.append(body);
  const wrap = h("div", { class: "table-wrap" }, table);
  if (rows.length > TABLE_ROWS) {
    wrap.append(h("div", { class: "muted", text: `first ${TABLE_ROWS} of ${rows.length} rows` }));
  }
  return wrap;
}

const MAX_PLOTS = 300;

/** Draw the records of /api/tasks/{id}/plots into `host`, by title; returns uPlot instances. */
export function plotRecords(host, plots) {
  const made = [];
  const sorted = (plots || []).slice().sort((a, b) => natural(a.title, b.title) ||
    natural(a.series, b.series) || (a.iteration || 0) - (b.iteration || 0));
  for (const plot of sorted.slice(0, MAX_PLOTS)) {
    const box = plotRecord(plot);
    host.append(box);
    if (box.linePlot) made.push(box.linePlot());
  }
  if (sorted.length > MAX_PLOTS) {
    host.append(h("div", { class: "muted", text: `first ${MAX_PLOTS} of ${sorted.length} plots` }));
  }
  return made;
}

// -- helpers ---------------------------------------------------------------------------------

/** x values uPlot can place: numbers as they are, anything else by its position. */
function numeric(xs) {
  if (!Array.isArray(xs)) return [];
  for (let i = 0; i < xs.length; i++) {
    if (typeof xs[i] !== "number") return xs.map((_, j) => j);
  }
  return xs;
}

function widthOf(el, fallback) {
  const w = el.clientWidth || (el.parentNode && el.parentNode.clientWidth) || fallback || 480;
  return Math.max(200, Math.floor(w));
}

/** Resize a uPlot chart with its box (also when a hidden tab becomes visible). */
function watchWidth(body, plot, height) {
  let last = 0;
  const ro = new ResizeObserver((entries) => {
    const w = Math.floor(entries[0].contentRect.width);
    if (w > 0 && w !== last && Math.abs(w - plot.width) > 1) {
      last = w;
      plot.setSize({ width: Math.max(200, w), height });
    }
  });
  ro.observe(body);
  plot._ro = ro;
}

export function destroyPlots(plots) {
  for (const p of plots || []) {
    if (p._ro) p._ro.disconnect();
    p.destroy();
  }
}

function niceTicks(lo, hi, count) {
  const span = hi - lo;
  const step0 = span / Math.max(count, 1);
  const mag = 10 ** Math.floor(Math.log10(step0));
  const norm = step0 / mag;
  const step = (norm >= 5 ? 10 : norm >= 2 ? 5 : norm >= 1 ? 2 : 1) * mag;
  const start = Math.floor(lo / step) * step;
  const out = [];
  for (let v = start; v <= hi + step * 0.5 && out.length < 50; v += step) out.push(+v.toPrecision(12));
  return out;
}

export function natural(a, b) {
  return String(a).localeCompare(String(b), undefined, { numeric: true });
}

export { clear };
