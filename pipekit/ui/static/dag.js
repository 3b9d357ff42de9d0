// The run page's DAG: SVG drawn once from the server's layout, then updated in place.
//
// Each step is <g data-node=NAME data-status=STATUS> (its colours come from the stylesheet by
// data-status, so a status change is one attribute). A nested run is a labelled dashed frame
// <g data-group=RUN_ID> holding its own layout, below its parent run's DAG and linked to the step
// that started it. Pan by dragging, zoom with the wheel; the view fits the drawing at first.

import { s, clear, elapsed, fmtDuration, shownStatus, isFinal } from "./util.js";

const GROUP_PAD = 14;
const GROUP_HEAD = 30;
const GROUP_GAP = 36;
const MIN_ZOOM = 0.04;
const MAX_ZOOM = 3;

export class DagView {
  /**
   * @param {HTMLElement} host where the SVG goes (sized by the stylesheet)
   * @param {(runId: string, name: string) => void} onNode a click on a step
   */
  constructor(host, onNode) {
    this.host = host;
    this.onNode = onNode;
    this.blocks = new Map(); // run id -> {nodes: Map(name -> rec), group, label, view}
    this.running = new Set(); // recs whose duration ticks
    this.k = 1;
    this.tx = 0;
    this.ty = 0;
    this.width = 0;
    this.height = 0;
    this.touched = false; // the user panned or zoomed: do not refit on resize
    this.selected = null;
    this.frame = 0;

    this.svg = s("svg", { class: "dag", role: "img", "aria-label": "pipeline DAG" });
    const defs = s("defs", null,
      s("marker", { id: "dag-arrow", viewBox: "0 0 10 10", refX: "9", refY: "5",
        markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse",
        markerUnits: "userSpaceOnUse" },
      s("path", { d: "M0,1 L10,5 L0,9 z", class: "arrowhead" })));
    this.viewport = s("g", { class: "viewport" });
    this.svg.append(defs, this.viewport);
    host.append(this.svg);
    this._wire();
    this._resize = new ResizeObserver(() => {
      if (!this.touched && this.width) this.fit();
    });
    this._resize.observe(this.svg);
  }

  destroy() {
    this._resize.disconnect();
    this.svg.remove();
  }

  /** Draw a run view (with its nested runs) from scratch. */
  render(view) {
    clear(this.viewport);
    this.blocks.clear();
    this.running.clear();
    const block = this._block(view, null);
    this.viewport.append(block.g);
    this.width = block.width;
    this.height = block.height;
    if (this.selected) this.select(this.selected.run, this.selected.name);
    if (!this.touched) this.fit();
  }

  // -- drawing -------------------------------------------------------------------------------

  /** One run's layout and, below it, its nested runs; returns {g, width, height}. */
  _block(view, parentRun) {
    const layout = view.layout || { width: 0, height: 0, nodes: [], edges: [] };
    const nw = layout.node_width || 200;
    const nh = layout.node_height || 62;
    const lr = (layout.direction || "LR") === "LR";
    const g = s("g", { class: "run-block" });
    const record = { id: view.id, nodes: new Map(), view, parent: parentRun, group: null,
      label: null };
    this.blocks.set(view.id, record);

    const info = new Map((view.nodes || []).map((n) => [n.name, n]));
    const edges = s("g", { class: "edges" });
    for (const edge of layout.edges || []) {
      const d = edgePath(edge.points || [], lr);
      if (d) {
        edges.append(s("path", { d, class: "edge", "marker-end": "url(#dag-arrow)",
          "data-parent": edge.parent, "data-child": edge.child }));
      }
    }
    const nodes = s("g", { class: "nodes" });
    const boxes = new Map();
    for (const pos of layout.nodes || []) {
      const rec = this._node(pos, info.get(pos.name) || { name: pos.name }, nw, nh);
      record.nodes.set(pos.name, rec);
      boxes.set(pos.name, pos);
      nodes.append(rec.g);
    }
    g.append(edges, nodes);

    // nested runs: framed groups in a row under this run's DAG, each near its step
    let width = layout.width || 0;
    let height = layout.height || 0;
    const below = height + GROUP_GAP;
    let cursor = 0;
    let rowHeight = 0;
    const connectors = s("g", { class: "connectors" });
    for (const pos of layout.nodes || []) {
      const node = info.get(pos.name);
      for (const child of (node && node.runs) || []) {
        const inner = this._block(child, view.id);
        const frameW = inner.width + 2 * GROUP_PAD;
        const frameH = inner.height + GROUP_HEAD + GROUP_PAD;
        const x = Math.max(pos.x, cursor);
        const y = below;
        const status = child.status || "unknown";
        const group = s("g", { class: "group", "data-group": child.id, "data-status": status,
          transform: `translate(${x},${y})` });
        const label = s("text", { class: "group-label", x: 12, y: 20 });
        const title = s("tspan", { class: "group-name" });
        title.textContent = `${child.name || "nested run"}`;
        const state = s("tspan", { class: "group-status", dx: "8" });
        state.textContent = status;
        const ident = s("tspan", { class: "group-id", dx: "8" });
        ident.textContent = String(child.id || "").slice(0, 8);
        label.append(title, state, ident);
        inner.g.setAttribute("transform", `translate(${GROUP_PAD},${GROUP_HEAD})`);
        group.append(s("rect", { class: "group-frame", width: frameW, height: frameH, rx: 8 }),
          label, inner.g);
        g.append(group);
        const rec = this.blocks.get(child.id);
        rec.group = group;
        rec.label = state;
        // a dashed connector from the step's box to the frame's top edge, routed through
        // the gaps: left out of the box, down the gap before its layer, along the band
        // above the groups (boxes never sit in those)
        const sx = pos.x;
        const sy = pos.y + nh - 10; // below where edges come in (mid-height)
        const gx = pos.x - Math.min(16, GROUP_GAP / 2);
        const band = y - GROUP_GAP / 2;
        const ex = x + Math.min(40, frameW / 2);
        connectors.append(s("path", { class: "connector",
          d: `M${sx},${sy} H${gx} V${band} H${ex} V${y}` }));
        connectors.append(s("circle", { class: "connector-end", cx: sx, cy: sy, r: 3 }));
        cursor = x + frameW + GROUP_GAP;
        rowHeight = Math.max(rowHeight, frameH);
        width = Math.max(width, x + frameW);
      }
    }
    if (rowHeight) {
      height = below + rowHeight;
      g.append(connectors);
    }
    return { g, width, height };
  }

  _node(pos, info, w, h) {
    const status = shownStatus(info.status, info.cached);
    const g = s("g", { class: "node", "data-node": pos.name, "data-status": status,
      transform: `translate(${pos.x},${pos.y})`, tabindex: "0", role: "button" });
    const tip = s("title");
    tip.textContent = pos.name;
    const name = s("text", { class: "name", x: 14, y: Math.round(h * 0.4) });
    name.textContent = truncate(pos.name, Math.floor((w - 24) / 7.2));
    const ys = Math.round(h * 0.78);
    const st = s("text", { class: "st", x: 26, y: ys });
    const dur = s("text", { class: "dur", x: w - 10, y: ys, "text-anchor": "end" });
    g.append(tip,
      s("rect", { class: "box", width: w, height: h, rx: 6 }),
      s("rect", { class: "stripe", width: 5, height: h - 2, x: 1, y: 1, rx: 2 }),
      name,
      s("circle", { class: "dot", cx: 17, cy: ys - 4, r: 4 }),
      st, dur);
    const rec = { g, st, dur, status, started: info.started ?? null, ended: info.ended ?? null,
      duration: info.duration ?? null, task: info.task ?? null, attempt: info.attempt ?? 1 };
    this._paint(rec);
    return rec;
  }

  _paint(rec) {
    rec.st.textContent = rec.attempt > 1 ? `${rec.status} · try ${rec.attempt}` : rec.status;
    const d = elapsed(rec.started, rec.ended, rec.ended != null ? rec.duration : null);
    rec.dur.textContent = d === null ? "" : fmtDuration(d);
    if (rec.status === "in_progress" && rec.started != null && rec.ended == null) {
      this.running.add(rec);
    } else {
      this.running.delete(rec);
    }
  }

  // -- live updates --------------------------------------------------------------------------

  /**
   * Apply /api/runs/{id}/status in place. Returns what the status names that is not drawn
   * (steps or nested runs, as "run/name" and "run" keys): when that is not empty the structure
   * grew, and the caller refetches the view and renders again.
   */
  update(status) {
    const missing = [];
    const main = this.blocks.get(status.id);
    if (main) this._apply(main, status.nodes || {}, missing);
    for (const [id, run] of Object.entries(status.runs || {})) {
      const rec = this.blocks.get(id);
      if (!rec) { missing.push(id); continue; }
      if (rec.group && run.status && rec.group.getAttribute("data-status") !== run.status) {
        rec.group.setAttribute("data-status", run.status);
        rec.label.textContent = run.status;
      }
      this._apply(rec, run.nodes || {}, missing);
    }
    return missing;
  }

  _apply(block, nodes, missing) {
    for (const [name, n] of Object.entries(nodes)) {
      const rec = block.nodes.get(name);
      if (!rec) { missing.push(`${block.id}/${name}`); continue; }
      const status = shownStatus(n.status, n.cached);
      const changed = status !== rec.status || n.started !== rec.started ||
        n.ended !== rec.ended || (n.attempt ?? 1) !== rec.attempt;
      rec.task = n.task ?? rec.task;
      if (!changed) continue;
      if (status !== rec.status) rec.g.setAttribute("data-status", status);
      rec.status = status;
      rec.started = n.started ?? null;
      rec.ended = n.ended ?? null;
      rec.duration = rec.started != null && rec.ended != null ? rec.ended - rec.started : null;
      rec.attempt = n.attempt ?? 1;
      this._paint(rec);
    }
  }

  /** Advance the durations of running steps (call each second). */
  tick() {
    const now = Date.now() / 1000;
    for (const rec of this.running) {
      rec.dur.textContent = fmtDuration(Math.max(0, now - rec.started));
    }
  }

  /** Whether every drawn run is final. */
  allFinal() {
    for (const rec of this.blocks.values()) {
      if (rec.group && !isFinal(rec.group.getAttribute("data-status"))) return false;
    }
    return true;
  }

  node(runId, name) {
    const block = this.blocks.get(runId);
    return block ? block.nodes.get(name) || null : null;
  }

  select(runId, name) {
    if (this.selectedEl) this.selectedEl.classList.remove("selected");
    this.selected = runId && name != null ? { run: runId, name } : null;
    const rec = this.selected ? this.node(runId, name) : null;
    this.selectedEl = rec ? rec.g : null;
    if (rec) rec.g.classList.add("selected");
  }

  // -- pan and zoom --------------------------------------------------------------------------

  fit() {
    const cw = this.svg.clientWidth;
    const ch = this.svg.clientHeight;
    if (!cw || !ch || !this.width || !this.height) return;
    const k = clamp(Math.min((cw - 24) / this.width, (ch - 24) / this.height), MIN_ZOOM, 1);
    this.k = k;
    this.tx = (cw - this.width * k) / 2;
    this.ty = Math.max(12, (ch - this.height * k) / 2);
    this._apply_transform();
  }

  zoomBy(factor, cx, cy) {
    const k = clamp(this.k * factor, MIN_ZOOM, MAX_ZOOM);
    if (cx === undefined) { cx = this.svg.clientWidth / 2; cy = this.svg.clientHeight / 2; }
    this.tx = cx - (cx - this.tx) * (k / this.k);
    this.ty = cy - (cy - this.ty) * (k / this.k);
    this.k = k;
    this.touched = true;
    this._apply_transform();
  }

  _apply_transform() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.viewport.setAttribute("transform",
        `translate(${this.tx.toFixed(1)},${this.ty.toFixed(1)}) scale(${this.k.toFixed(4)})`);
    });
  }

  _wire() {
    const svg = this.svg;
    svg.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = svg.getBoundingClientRect();
      const unit = e.deltaMode === 1 ? 0.05 : e.deltaMode === 2 ? 1 : 0.0015;
      this.zoomBy(Math.exp(-e.deltaY * unit), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });

    let drag = null;
    let suppress = false;
    svg.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      drag = { x: e.clientX, y: e.clientY, tx: this.tx, ty: this.ty, id: e.pointerId,
        moving: false };
    });
    svg.addEventListener("pointermove", (e) => {
      if (!drag || e.pointerId !== drag.id) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      if (!drag.moving && Math.hypot(dx, dy) < 4) return;
      if (!drag.moving) {
        drag.moving = true;
        svg.setPointerCapture(e.pointerId);
        svg.classList.add("panning");
      }
      this.tx = drag.tx + dx;
      this.ty = drag.ty + dy;
      this.touched = true;
      this._apply_transform();
    });
    const end = (e) => {
      if (!drag || e.pointerId !== drag.id) return;
      if (drag.moving) {
        suppress = true;
        svg.classList.remove("panning");
        if (svg.hasPointerCapture(e.pointerId)) svg.releasePointerCapture(e.pointerId);
      }
      drag = null;
    };
    svg.addEventListener("pointerup", end);
    svg.addEventListener("pointercancel", end);
    svg.addEventListener("click", (e) => {
      if (suppress) { suppress = false; return; }
      this._clicked(e.target);
    });
    svg.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        this._clicked(e.target);
      }
    });
    svg.addEventListener("dblclick", (e) => {
      if (!e.target.closest("[data-node]")) { this.touched = false; this.fit(); }
    });
  }

  _clicked(target) {
    const node = target.closest && target.closest("[data-node]");
    if (!node) return;
    const group = node.parentNode.closest("[data-group]");
    const runId = group ? group.getAttribute("data-group") : this._mainId();
    this.onNode(runId, node.getAttribute("data-node"));
  }

  _mainId() {
    for (const rec of this.blocks.values()) if (!rec.parent) return rec.id;
    return null;
  }
}

/** SVG path data of an edge: curves between layers, straight through each dummy vertex. */
export function edgePath(points, lr) {
  if (points.length < 2) return "";
  const f = (v) => (Math.round(v * 10) / 10).toString();
  let d = `M${f(points[0][0])},${f(points[0][1])}`;
  for (let i = 0; i < points.length - 1; i++) {
    const [x0, y0] = points[i];
    const [x1, y1] = points[i + 1];
    if (i % 2) {
      d += ` L${f(x1)},${f(y1)}`;
    } else if (lr) {
      const m = (x0 + x1) / 2;
      d += ` C${f(m)},${f(y0)} ${f(m)},${f(y1)} ${f(x1)},${f(y1)}`;
    } else {
      const m = (y0 + y1) / 2;
      d += ` C${f(x0)},${f(m)} ${f(x1)},${f(m)} ${f(x1)},${f(y1)}`;
    }
  }
  return d;
}

function truncate(text, max) {
  text = String(text);
  return text.length > max ? text.slice(0, Math.max(1, max - 1)) + "…" : text;
}

function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}
