// The step panel (#step-panel): one task's parameters, inputs, outputs, scalars, plots, log and
// code, in tabs. The run page shows it beside the DAG for a clicked step; a task page shows it
// full width. While the task runs, the log follows and the header, charts and outputs refresh.

import {
  h, clear, api, enc, badge, idEl, timeEl, fmtDuration, fmtBytes, fmtValue, elapsed, isFinal,
  atBottom, reportError, clearError, safeUrl,
} from "./util.js";
import { scalarCharts, plotRecords, destroyPlots, natural } from "./charts.js";

const TABS = [
  ["parameters", "Parameters"], ["inputs", "Inputs"], ["outputs", "Outputs"],
  ["scalars", "Scalars"], ["plots", "Plots"], ["log", "Log"], ["code", "Code"],
];
const TASK_POLL_MS = 2000;
const LOG_POLL_MS = 1000;

let lastTab = "parameters"; // the tab a new panel opens on: the one last chosen

export class StepPanel {
  /**
   * @param {{full?: boolean, closeHref?: string, header?: boolean}} options
   *   full: a task page's full-width panel; closeHref: where × goes; header: show the task's
   *   name and status at the top (the run page's side panel does).
   */
  constructor(options = {}) {
    this.options = options;
    this.gen = 0;
    this.timers = new Set();
    this.charts = { scalars: [], plots: [] };
    this.taskId = null;
    this.task = null;
    this.el = h("section", { id: "step-panel", class: options.full ? "panel full" : "panel side",
      "aria-label": "step details" });
    this.head = h("header", { class: "panel-head" });
    this.tabs = h("nav", { class: "tabs", role: "tablist" });
    this.body = h("div", { class: "panel-body" });
    this.panes = {};
    this.counts = {};
    for (const [key, label] of TABS) {
      const count = h("span", { class: "count" });
      this.counts[key] = count;
      const button = h("button", { type: "button", class: "tab", role: "tab", "data-tab": key,
        "aria-selected": "false", onclick: () => this.show(key, true) }, label, count);
      this.tabs.append(button);
      this.panes[key] = h("div", { class: `pane pane-${key}`, role: "tabpanel",
        "data-pane": key, hidden: true });
      this.body.append(this.panes[key]);
    }
    this.el.append(this.head, this.tabs, this.body);
    this.show(lastTab, false);
  }

  /** Show tab `key` (remembered for the next panel when the user chose it). */
  show(key, chosen) {
    if (!this.panes[key]) key = "parameters";
    this.active = key;
    if (chosen) lastTab = key;
    for (const button of this.tabs.children) {
      button.setAttribute("aria-selected", String(button.getAttribute("data-tab") === key));
    }
    for (const [name, pane] of Object.entries(this.panes)) pane.hidden = name !== key;
    if (key === "log" && this.logPre) this.logPre.scrollTop = this.logPre.scrollHeight;
    if (this.stale && this.stale.has(key)) this._reload(key);
  }

  destroy() {
    this._stop();
    this.el.remove();
  }

  _stop() {
    this.gen += 1;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    destroyPlots(this.charts.scalars);
    destroyPlots(this.charts.plots);
    this.charts = { scalars: [], plots: [] };
  }

  _later(fn, ms) {
    const t = setTimeout(() => { this.timers.delete(t); fn(); }, ms);
    this.timers.add(t);
  }

  /** A step that has no task yet (pending, or skipped before it ran). */
  empty(name, status, runId) {
    this._stop();
    this.taskId = null;
    this.task = null;
    this._header({ name, status }, name, runId);
    for (const [key, pane] of Object.entries(this.panes)) {
      clear(pane).append(h("p", { class: "empty",
        text: status === "skipped" ? "This step was skipped: it never ran."
          : "This step has not started yet." }));
      this.counts[key].textContent = "";
    }
    this.logPre = null;
  }

  /**
   * Load task `taskId` (named `name` in run `runId`, if it is a step); resolves to the task,
   * or null when it could not be read (the error is on the banner and in the panes).
   */
  async load(taskId, name, runId) {
    this._stop();
    const gen = this.gen;
    this.taskId = taskId;
    this.runId = runId || null;
    this.stale = new Set();
    for (const pane of Object.values(this.panes)) clear(pane).append(h("p", { class: "empty", text: "loading…" }));
    // the charts' data in parallel with the task's: a large task plots sooner
    const early = { scalars: this._get("scalars"), plots: this._get("plots") };
    let task;
    try {
      task = await api(this._taskUrl());
    } catch (err) {
      if (gen !== this.gen) return null;
      reportError(err);
      for (const pane of Object.values(this.panes)) clear(pane).append(h("p", { class: "empty", text: err.message }));
      return null;
    }
    if (gen !== this.gen) return null;
    this.task = task;
    this._header(task, name, runId || task.run);
    this._parameters(task);
    this._inputs(task, runId || task.run);
    this._outputs(task);
    this._code(task);
    this._log(gen);
    this._scalars(gen, early.scalars);
    this._plots(gen, early.plots);
    if (!isFinal(task.status)) this._later(() => this._poll(gen), TASK_POLL_MS);
    return task;
  }

  /** The task's URL; as a step of a run, the run too (a cached step's task is older). */
  _taskUrl() {
    return `/api/tasks/${enc(this.taskId)}${this.runId ? `?run=${enc(this.runId)}` : ""}`;
  }

  /** Refresh what changes while the task runs; stop once it is final. */
  async _poll(gen) {
    if (gen !== this.gen) return;
    let task;
    try {
      task = await api(this._taskUrl());
      clearError("task-poll");
    } catch (err) {
      reportError(err, "task-poll");
      this._later(() => this._poll(gen), TASK_POLL_MS * 2);
      return;
    }
    if (gen !== this.gen) return;
    const before = this.task;
    this.task = task;
    this._status(task);
    const done = isFinal(task.status);
    if (done || task.scalars !== before.scalars) this._mark("scalars");
    if (done || task.plots !== before.plots) this._mark("plots");
    if (done || (task.artifacts || []).length !== (before.artifacts || []).length ||
        (task.models || []).length !== (before.models || []).length) this._outputs(task);
    if (done) this._code(task);
    if (!done) this._later(() => this._poll(gen), TASK_POLL_MS);
  }

  _mark(key) {
    if (this.active === key) this._reload(key);
    else this.stale.add(key);
  }

  _reload(key) {
    this.stale.delete(key);
    if (key === "scalars") this._scalars(this.gen);
    if (key === "plots") this._plots(this.gen);
  }

  // -- header --------------------------------------------------------------------------------

  _header(task, name, runId) {
    const head = clear(this.head);
    if (this.options.header === false) { head.hidden = true; return; }
    this.statusEl = badge(task.status || "unknown", { class: "badge panel-status" });
    this.durEl = h("span", { class: "dur mono" });
    const title = h("div", { class: "panel-title" },
      h("h2", { text: name || task.name || "task", title: name || task.name || "" }),
      this.statusEl, this.durEl);
    const close = this.options.closeHref ? h("a", { class: "close", href: this.options.closeHref,
      title: "close (Esc)", "aria-label": "close", text: "×" }) : null;
    const meta = h("div", { class: "panel-meta" });
    if (task.id) {
      meta.append(h("span", null, "task ", idEl(task.id, `#/task/${enc(task.id)}`)));
      if (task.type) meta.append(h("span", { text: task.type }));
      if (task.started) meta.append(h("span", null, "started ", timeEl(task.started)));
      if (task.worker) meta.append(h("span", { class: "mono", text: task.worker, title: "worker" }));
      meta.append(h("a", { href: `#/task/${enc(task.id)}`, text: "open task page" }));
    }
    this.reasonEl = h("div", { class: "reason", hidden: true });
    head.append(h("div", { class: "panel-top" }, title, close), meta, this.reasonEl);
    this._status(task);
  }

  _status(task) {
    if (!this.statusEl) return;
    const status = task.status || "unknown";
    this.statusEl.textContent = status;
    this.statusEl.setAttribute("data-status", status);
    const d = elapsed(task.started, task.ended, task.duration);
    this.durEl.textContent = d === null ? "" : fmtDuration(d);
    if (task.reason && status !== "completed") {
      this.reasonEl.textContent = task.reason;
      this.reasonEl.setAttribute("data-status", status);
      this.reasonEl.hidden = false;
    } else {
      this.reasonEl.hidden = true;
    }
    if (!isFinal(status) && task.started) {
      this._later(() => { if (this.task === task) this._status(task); }, 1000);
    }
  }

  // -- panes ---------------------------------------------------------------------------------

  _parameters(task) {
    const pane = clear(this.panes.parameters);
    const params = task.parameters || [];
    this.counts.parameters.textContent = params.length ? String(params.length) : "";
    if (!params.length) {
      pane.append(h("p", { class: "empty", text: "no parameters" }));
      return;
    }
    const table = h("table", { class: "params kv" });
    const bySection = new Map();
    for (const p of params) {
      const key = p.section || "";
      if (!bySection.has(key)) bySection.set(key, []);
      bySection.get(key).push(p);
    }
    for (const section of [...bySection.keys()].sort(natural)) {
      const body = h("tbody");
      body.append(h("tr", { class: "section" }, h("th", { colspan: "3", text: section || "(no section)" })));
      for (const p of bySection.get(section)) {
        const key = section ? `${section}/${p.name}` : String(p.name);
        body.append(h("tr", { "data-param": key },
          h("th", { class: "name", text: p.name, title: p.description || key }),
          h("td", { class: "value mono", text: p.value ?? "" }),
          h("td", { class: "type muted", text: p.type || "" })));
      }
      table.append(body);
    }
    pane.append(table);
  }

  _inputs(task, runId) {
    const pane = clear(this.panes.inputs);
    const inputs = task.inputs || [];
    this.counts.inputs.textContent = inputs.length ? String(inputs.length) : "";
    if (!inputs.length) {
      pane.append(h("p", { class: "empty", text: "no inputs from other steps" }));
      return;
    }
    const table = h("table", { class: "grid inputs" },
      h("thead", null, h("tr", null, h("th", { text: "input" }), h("th", { text: "reference" }),
        h("th", { text: "from step" }), h("th", { text: "artifact" }))));
    const body = h("tbody");
    for (const input of inputs) {
      let from = h("span", { class: "muted", text: "—" });
      if (input.step && runId) {
        from = h("a", { href: `#/run/${enc(runId)}/step/${enc(input.step)}`, text: input.step });
      } else if (input.task) {
        from = h("a", { href: `#/task/${enc(input.task)}`, text: input.step || String(input.task).slice(0, 8) });
      }
      body.append(h("tr", { "data-input": input.name },
        h("td", { class: "mono", text: input.name }),
        h("td", { class: "mono ref", text: input.reference ?? "" }),
        h("td", null, from),
        h("td", { class: "mono", text: input.artifact ?? "" })));
    }
    table.append(body);
    pane.append(table);
  }

  _outputs(task) {
    const pane = clear(this.panes.outputs);
    const artifacts = task.artifacts || [];
    const models = task.models || [];
    const n = artifacts.length + models.length;
    this.counts.outputs.textContent = n ? String(n) : "";
    if (!n) {
      pane.append(h("p", { class: "empty", text: "no artifacts or models" }));
      return;
    }
    for (const a of artifacts) {
      const url = safeUrl(a.url);
      pane.append(h("div", { class: "artifact", "data-artifact": a.name },
        h("div", { class: "artifact-head" },
          h("span", { class: "mono name", text: a.name }),
          a.type ? h("span", { class: "chip", text: a.type }) : null,
          a.size !== null && a.size !== undefined ? h("span", { class: "muted", text: fmtBytes(a.size) }) : null,
          a.digest ? h("span", { class: "mono muted", title: a.digest, text: String(a.digest).slice(0, 12) }) : null,
          url ? h("a", { class: "download", href: url, download: "", text: "download" }) : null),
        a.preview ? h("pre", { class: "preview", text: a.preview }) : null));
    }
    if (models.length) {
      pane.append(h("h3", { text: "Models" }));
      const table = h("table", { class: "grid" },
        h("thead", null, h("tr", null, h("th", { text: "name" }), h("th", { text: "framework" }),
          h("th", { text: "id" }), h("th", { text: "url" }))));
      const body = h("tbody");
      for (const m of models) {
        const url = safeUrl(m.url);
        body.append(h("tr", null, h("td", { class: "mono", text: m.name ?? "" }),
          h("td", { text: m.framework ?? "" }), h("td", null, idEl(m.id)),
          h("td", null, url ? h("a", { href: url, text: "download" })
            : h("span", { class: "mono muted", text: m.url ?? "" }))));
      }
      table.append(body);
      pane.append(table);
    }
  }

  _code(task) {
    const pane = clear(this.panes.code);
    const cache = task.cache || {};
    const rows = h("dl", { class: "cache kv-list" },
      h("dt", { text: "cache key" }), h("dd", { class: "mono", text: cache.key || "—" }),
      h("dt", { text: "cached" }), h("dd", null, h("span", { class: cache.cached ? "yes" : "no",
        text: cache.cached ? "yes" : "no" })),
      h("dt", { text: "source task" }), h("dd", null, cache.source
        ? idEl(cache.source, `#/task/${enc(cache.source)}`) : h("span", { class: "muted", text: "—" })),
      h("dt", { text: "reason" }), h("dd", { text: cache.reason || "—" }));
    pane.append(h("h3", { text: "Cache" }), rows);
    const script = task.script && typeof task.script === "object" ? task.script : null;
    if (script && Object.keys(script).length) {
      const list = h("dl", { class: "kv-list script" });
      for (const key of Object.keys(script).sort(natural)) {
        const value = script[key];
        if (value === null || value === undefined || value === "" || key === "code") continue;
        list.append(h("dt", { text: key }), h("dd", { class: "mono", text: typeof value === "string" ? value : JSON.stringify(value) }));
      }
      if (list.children.length) pane.append(h("h3", { text: "Script" }), list);
    }
    pane.append(h("h3", { text: "Code" }));
    pane.append(task.code ? h("pre", { class: "code", text: task.code })
      : h("p", { class: "empty", text: "no code recorded" }));
  }

  // -- log -----------------------------------------------------------------------------------

  _log(gen) {
    const pane = clear(this.panes.log);
    const pre = h("pre", { id: "log", class: "log", tabindex: "0" });
    const state = h("div", { class: "log-state muted" });
    pane.append(pre, state);
    this.logPre = pre;
    this.counts.log.textContent = "";
    let offset = 0;
    const id = this.taskId;
    const step = async () => {
      if (gen !== this.gen) return;
      let r;
      try {
        r = await api(`/api/tasks/${enc(id)}/log?offset=${offset}`);
        clearError("log");
      } catch (err) {
        if (gen !== this.gen) return;
        reportError(err, "log");
        this._later(step, LOG_POLL_MS * 3);
        return;
      }
      if (gen !== this.gen) return;
      if (r.text) {
        const stick = atBottom(pre);
        pre.append(r.text);
        if (stick) pre.scrollTop = pre.scrollHeight;
      }
      offset = typeof r.offset === "number" ? r.offset : offset;
      state.textContent = r.final ? `${fmtBytes(r.size ?? offset)} · end of log`
        : `${fmtBytes(r.size ?? offset)} · following…`;
      state.classList.toggle("live", !r.final);
      if (typeof r.size === "number" && offset < r.size) this._later(step, 0);
      else if (!r.final) this._later(step, LOG_POLL_MS);
    };
    step();
  }

  // -- scalars and plots ---------------------------------------------------------------------

  /** GET /api/tasks/{id}/WHAT, as a promise that is never left unhandled. */
  _get(what) {
    const promise = api(`/api/tasks/${enc(this.taskId)}/${what}`);
    promise.catch(() => {});
    return promise;
  }

  async _scalars(gen, pending) {
    const pane = this.panes.scalars;
    const task = this.task;
    let data;
    try {
      data = await (pending || this._get("scalars"));
    } catch (err) {
      if (gen !== this.gen) return;
      reportError(err);
      clear(pane).append(h("p", { class: "empty", text: err.message }));
      return;
    }
    if (gen !== this.gen) return;
    destroyPlots(this.charts.scalars);
    clear(pane);
    const values = task.single_values || {};
    const names = Object.keys(values).sort(natural);
    if (names.length) {
      const table = h("table", { class: "kv single-values" });
      for (const name of names) {
        table.append(h("tr", { "data-value": name }, h("th", { text: name }),
          h("td", { class: "mono", text: fmtValue(values[name]) })));
      }
      pane.append(h("h3", { text: "Single values" }), table);
    }
    const charts = (data && data.charts) || {};
    const titles = Object.keys(charts);
    this.counts.scalars.textContent = titles.length ? String(titles.length) : "";
    if (!titles.length) {
      if (!names.length) pane.append(h("p", { class: "empty", text: "no scalars reported" }));
      this.charts.scalars = [];
      return;
    }
    const grid = h("div", { class: "charts" });
    pane.append(grid);
    this.charts.scalars = scalarCharts(grid, charts, { width: this._chartWidth(grid) });
  }

  async _plots(gen, pending) {
    const pane = this.panes.plots;
    let data;
    try {
      data = await (pending || this._get("plots"));
    } catch (err) {
      if (gen !== this.gen) return;
      reportError(err);
      clear(pane).append(h("p", { class: "empty", text: err.message }));
      return;
    }
    if (gen !== this.gen) return;
    destroyPlots(this.charts.plots);
    clear(pane);
    const plots = (data && data.plots) || [];
    this.counts.plots.textContent = plots.length ? String(plots.length) : "";
    if (!plots.length) {
      pane.append(h("p", { class: "empty", text: "no plots reported" }));
      this.charts.plots = [];
      return;
    }
    const grid = h("div", { class: "charts" });
    pane.append(grid);
    this.charts.plots = plotRecords(grid, plots);
  }

  /** A chart's width before its pane is shown (a hidden pane measures 0). */
  _chartWidth(grid) {
    const w = grid.clientWidth || this.body.clientWidth || this.el.clientWidth;
    if (!w) return 480;
    return this.options.full && w > 900 ? Math.floor(w / 2) - 24 : w - 16;
  }
}
