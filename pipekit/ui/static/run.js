// The run page (#/run/ID and #/run/ID/step/NAME): header, parameters and outputs, the live DAG,
// the step panel, and the Abort / Resume / New run actions.

import {
  h, clear, api, enc, badge, lostBadge, idEl, timeEl, fmtDuration, elapsed, isFinal,
  reportError, clearError, showError,
} from "./util.js";
import { DagView } from "./dag.js";
import { StepPanel } from "./panel.js";

const POLL_MS = 1000;

export class RunPage {
  constructor(main, routeId) {
    this.main = main;
    this.routeId = routeId; // as in the URL (may be a prefix)
    this.id = null;
    this.view = null;
    this.alive = true;
    this.timers = new Set();
    this.panel = null;
    this.step = null; // {run, name} shown in the panel
    this.wanted = null;
    this.lastStructure = 0;
    this.onKey = (e) => {
      if (e.key === "Escape" && this.step && !document.querySelector(".modal-back")) {
        window.location.hash = `#/run/${enc(this.routeId)}`;
      }
    };
    document.addEventListener("keydown", this.onKey);
    this._build();
    this._load();
  }

  destroy() {
    this.alive = false;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    document.removeEventListener("keydown", this.onKey);
    if (this.panel) this.panel.destroy();
    if (this.dag) this.dag.destroy();
    const modal = document.querySelector(".modal-back");
    if (modal) modal.remove();
  }

  _later(fn, ms) {
    const t = setTimeout(() => { this.timers.delete(t); if (this.alive) fn(); }, ms);
    this.timers.add(t);
  }

  _build() {
    this.head = h("div", { class: "run-head" }, h("p", { class: "muted", text: "loading run…" }));
    this.dagHost = h("div", { class: "dag-host" });
    const zoom = h("div", { class: "dag-tools" },
      h("button", { type: "button", title: "zoom in", text: "+", onclick: () => this.dag.zoomBy(1.25) }),
      h("button", { type: "button", title: "zoom out", text: "−", onclick: () => this.dag.zoomBy(0.8) }),
      h("button", { type: "button", title: "fit the DAG in view (or double-click the background)",
        text: "fit", onclick: () => { this.dag.touched = false; this.dag.fit(); } }));
    const legend = h("div", { class: "dag-legend" },
      ["pending", "queued", "in_progress", "cached", "completed", "failed", "skipped", "stopped"]
        .map((st) => h("span", { class: "key", "data-status": st }, h("i"), st)));
    this.dagEmpty = h("div", { class: "dag-empty", hidden: true });
    this.dagWrap = h("div", { class: "dag-wrap" }, this.dagHost, this.dagEmpty, zoom, legend);
    this.bodyEl = h("div", { class: "run-body" }, this.dagWrap);
    this.page = h("div", { class: "run-page" }, this.head, this.bodyEl);
    this.main.append(this.page);
    this.dag = new DagView(this.dagHost, (run, name) => {
      window.location.hash = this._stepHref(run, name);
    });
  }

  _stepHref(run, name) {
    const base = `#/run/${enc(this.routeId)}/step/${enc(name)}`;
    return run && this.id && run !== this.id ? `${base}?in=${enc(run)}` : base;
  }

  async _load() {
    let view;
    try {
      view = await api(`/api/runs/${enc(this.routeId)}`);
    } catch (err) {
      if (!this.alive) return;
      reportError(err);
      clear(this.head).append(h("h1", { text: "Run not found" }),
        h("p", { class: "muted", text: err.message }));
      return;
    }
    if (!this.alive) return;
    this.id = view.id;
    this._render(view);
    this._draw(view);
    this._tick();
    if (this.wanted) this.openStep(this.wanted.run, this.wanted.name);
    if (!this._final(view)) this._later(() => this._poll(), POLL_MS);
  }

  _draw(view) {
    this.dag.render(view);
    const empty = !(view.nodes || []).length;
    this.dagEmpty.hidden = !empty;
    this.dagEmpty.textContent = !empty ? ""
      : isFinal(view.status) ? "This run has no steps."
        : "Waiting for the pipeline to start: its steps appear here as it adds them…";
  }

  _final(view) {
    const all = [view];
    while (all.length) {
      const v = all.pop();
      if (!isFinal(v.status)) return false;
      for (const n of v.nodes || []) all.push(...(n.runs || []));
    }
    return true;
  }

  // -- header --------------------------------------------------------------------------------

  _render(view) {
    this.view = view;
    const head = clear(this.head);
    this.statusEl = badge(view.status, { id: "run-status" });
    this.lostEl = lostBadge();
    this.lostEl.hidden = !view.controller_lost;
    this.elapsedEl = h("span", { class: "elapsed mono", title: "elapsed" });
    this.abortBtn = h("button", { type: "button", id: "abort-run", class: "danger",
      text: "Abort", title: "stop this run and its running steps", onclick: () => this._abort() });
    this.resumeBtn = h("button", { type: "button", id: "resume-run",
      text: "Resume", title: "start a new controller that picks this run up where it stopped",
      onclick: () => this._resume() });
    const newBtn = h("button", { type: "button", id: "new-run", class: "primary",
      text: "New run", title: "clone this run with edited parameters and start it",
      onclick: () => this._newRun() });
    const title = h("div", { class: "title-row" },
      h("h1", { text: view.name || "pipeline", title: view.name || "" }),
      view.version ? h("span", { class: "chip version", text: `v${view.version}`, title: "version" }) : null,
      this.statusEl, this.lostEl, this.elapsedEl,
      h("div", { class: "actions" }, this.abortBtn, this.resumeBtn, newBtn));
    const meta = h("div", { class: "meta-row" },
      h("span", null, "run ", idEl(view.id)),
      view.project ? h("span", null, "project ", h("b", { text: view.project })) : null,
      h("span", null, "started ", timeEl(view.started || view.created)),
      view.user ? h("span", { title: "who ran it" }, "by ", h("b", { text: view.user })) : null,
      view.owner ? h("span", { title: "the controller process driving it (host:pid)" }, "controller ",
        h("b", { text: view.owner })) : null,
      view.origin ? h("span", { class: "muted", text: view.origin, title: "origin" }) : null,
      view.parent ? h("span", null, "inside ", idEl(view.parent, `#/task/${enc(view.parent)}`)) : null,
      ...(view.dashboards || []).map((d) => h("a", { href: d.url, target: "_blank",
        rel: "noopener noreferrer", "data-dashboard": d.name, title: `the ${d.name} dashboard of the cluster its steps ran on`,
        text: `${d.name} dashboard` })));
    this.reasonEl = h("div", { class: "reason", hidden: true });
    this.ioEl = this._io(view);
    head.append(title, meta, this.reasonEl, this.ioEl);
    this._status(view);
  }

  _io(view) {
    const params = Object.entries(view.parameters || {});
    const outputs = view.outputs || [];
    const box = h("div", { class: "run-io" });
    const pl = h("div", { class: "io params-list" }, h("span", { class: "io-label", text: "Parameters" }));
    if (!params.length) pl.append(h("span", { class: "muted", text: "none" }));
    for (const [name, value] of params) {
      pl.append(h("span", { class: "kvchip", "data-run-param": name, title: `${name} = ${value}` },
        h("span", { class: "k", text: name }), h("span", { class: "v mono", text: value ?? "" })));
    }
    box.append(pl);
    if (outputs.length) {
      const ol = h("div", { class: "io outputs-list" }, h("span", { class: "io-label", text: "Outputs" }));
      for (const o of outputs) {
        ol.append(h("span", { class: "kvchip", title: o.preview || o.name },
          h("span", { class: "k", text: o.name }),
          h("span", { class: "v mono", text: o.preview || o.type || "" })));
      }
      box.append(ol);
    }
    return box;
  }

  /** Header fields that change while the run goes. */
  _status(st) {
    this.statusEl.textContent = st.status;
    this.statusEl.setAttribute("data-status", st.status);
    this.lostEl.hidden = !st.controller_lost;
    this.abortBtn.hidden = !(st.status === "in_progress" || st.status === "queued");
    this.resumeBtn.hidden = !st.controller_lost;
    if (st.reason && st.status !== "completed") {
      this.reasonEl.textContent = st.reason;
      this.reasonEl.setAttribute("data-status", st.status);
      this.reasonEl.hidden = false;
    } else {
      this.reasonEl.hidden = true;
    }
    this.view = { ...this.view, status: st.status, ended: st.ended, duration: st.duration,
      controller_lost: st.controller_lost };
    this._elapsed();
  }

  _elapsed() {
    const v = this.view;
    const d = elapsed(v.started, v.ended, v.ended != null ? v.duration : null);
    this.elapsedEl.textContent = d === null ? "" : fmtDuration(d);
    this.elapsedEl.title = isFinal(v.status) ? "duration" : "elapsed";
  }

  /** Each second while anything runs: the elapsed time and running steps' durations. */
  _tick() {
    if (!this.alive || this.ticking) return;
    this._elapsed();
    this.dag.tick();
    if (!isFinal(this.view.status) || this.dag.running.size) {
      this.ticking = true;
      this._later(() => { this.ticking = false; this._tick(); }, 1000);
    }
  }

  // -- polling -------------------------------------------------------------------------------

  async _poll() {
    let st;
    try {
      st = await api(`/api/runs/${enc(this.id)}/status`);
      clearError("run-poll");
    } catch (err) {
      if (!this.alive) return;
      reportError(err, "run-poll");
      this._later(() => this._poll(), POLL_MS * 3);
      return;
    }
    if (!this.alive) return;
    this._status(st);
    this.lastStatus = st;
    const missing = this.dag.update(st).sort().join("\n");
    this._tick();
    this._followStep();
    const nestedLive = Object.values(st.runs || {}).some((r) => !isFinal(r.status));
    const done = isFinal(st.status) && !nestedLive;
    if (done) {
      // once more, whole, when the run ends: its final shape and outputs
      await this._restructure();
      return;
    }
    // the DAG grew (a dynamic pipeline adds steps as it calls them; a step starts a nested
    // run): draw it again, at most every 1.5 s, never twice for the same missing pieces
    // (the view may not draw everything the status names)
    if (missing && missing !== this.missing && Date.now() - this.lastStructure > 1500) {
      this.missing = missing;
      this.lastStructure = Date.now();
      await this._restructure();
      if (!this.alive) return;
    }
    this._later(() => this._poll(), POLL_MS);
  }

  /** The DAG gained steps or nested runs: fetch the view again and redraw. */
  async _restructure() {
    try {
      const view = await api(`/api/runs/${enc(this.id)}`);
      if (!this.alive) return;
      this.view = view;
      this._draw(view);
      // what the newest status names that even this view does not draw: not worth a redraw
      if (this.lastStatus) this.missing = this.dag.update(this.lastStatus).sort().join("\n");
      this._status(view);
      const io = this._io(view);
      this.ioEl.replaceWith(io);
      this.ioEl = io;
      this._followStep();
    } catch (err) {
      reportError(err, "run-poll");
    }
  }

  // -- the step panel ------------------------------------------------------------------------

  /** Show step `name` of run `run` (this run, or a nested one) in the panel. */
  openStep(run, name) {
    this.wanted = { run, name };
    if (!this.id) return; // after the view loads
    const runId = run || this.id;
    if (!this.panel) {
      this.panel = new StepPanel({ closeHref: `#/run/${enc(this.routeId)}` });
      this.bodyEl.append(this.panel.el);
      this.page.classList.add("with-panel");
    }
    this.step = { run: runId, name, task: undefined };
    this.dag.select(runId, name);
    this._followStep();
  }

  closeStep() {
    this.wanted = null;
    this.step = null;
    this.dag.select(null, null);
    if (this.panel) {
      this.panel.destroy();
      this.panel = null;
      this.page.classList.remove("with-panel");
    }
  }

  /** Load the panel when the open step's task appears or changes (a retry). */
  _followStep() {
    if (!this.step || !this.panel) return;
    const rec = this.dag.node(this.step.run, this.step.name);
    if (!rec) {
      if (this.step.task !== null) {
        this.step.task = null;
        this.panel.empty(this.step.name, "unknown", this.step.run);
        showError(`no step named ${this.step.name} in this run`, "step");
      }
      return;
    }
    clearError("step");
    const task = rec.task || null;
    if (task === this.step.task) return;
    this.step.task = task;
    if (task) this.panel.load(task, this.step.name, this.step.run);
    else this.panel.empty(this.step.name, rec.status, this.step.run);
  }

  // -- actions -------------------------------------------------------------------------------

  async _abort() {
    this.abortBtn.disabled = true;
    this.abortBtn.textContent = "Aborting…";
    try {
      const r = await api(`/api/runs/${enc(this.id)}/abort`, { method: "POST" });
      clearError();
      if (r && r.status) this._status({ ...this.view, status: r.status });
    } catch (err) {
      reportError(err);
    } finally {
      this.abortBtn.disabled = false;
      this.abortBtn.textContent = "Abort";
    }
    if (this.alive) this._poll();
  }

  async _resume() {
    this.resumeBtn.disabled = true;
    try {
      await api(`/api/runs/${enc(this.id)}/resume`, { method: "POST" });
      clearError();
      this.resumeBtn.textContent = "Resuming…";
      this._later(() => { this.resumeBtn.disabled = false; this.resumeBtn.textContent = "Resume"; }, 5000);
      this._later(() => this._poll(), POLL_MS);
    } catch (err) {
      reportError(err);
      this.resumeBtn.disabled = false;
    }
  }

  async _newRun() {
    const args = this.view.args || Object.entries(this.view.parameters || {})
      .map(([name, value]) => ({ name, value, type: "str", description: "" }));
    const form = newRunForm(this.view, args);
    const back = h("div", { class: "modal-back" }, form);
    const close = () => { back.remove(); document.removeEventListener("keydown", esc); };
    const esc = (e) => { if (e.key === "Escape") close(); };
    document.addEventListener("keydown", esc);
    back.addEventListener("mousedown", (e) => { if (e.target === back) close(); });
    form.querySelector("button.cancel").addEventListener("click", close);
    document.body.append(back);
    const first = form.querySelector("input, select");
    if (first) first.focus();
    loadQueues(form.querySelector("select[name=queue]"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const submit = form.querySelector("button[type=submit]");
      const errorEl = form.querySelector(".form-error");
      const params = {};
      for (const arg of args) {
        const input = form.querySelector(`[data-arg-index="${args.indexOf(arg)}"]`);
        if (!input) continue;
        if (input.type === "checkbox") {
          if (input.checked !== truthy(arg.value)) params[arg.name] = input.checked ? "True" : "False";
        } else if (input.value !== String(arg.value ?? "")) {
          params[arg.name] = input.value;
        }
      }
      const queue = form.querySelector("select[name=queue]").value || null;
      submit.disabled = true;
      submit.textContent = "Starting…";
      errorEl.textContent = "";
      try {
        const r = await api(`/api/runs/${enc(this.id)}/rerun`, { method: "POST", body: { params, queue } });
        clearError();
        close();
        window.location.hash = `#/run/${enc(r.id)}`;
      } catch (err) {
        errorEl.textContent = err.message;
        reportError(err);
        submit.disabled = false;
        submit.textContent = "Start run";
      }
    });
  }
}

function truthy(value) {
  return ["true", "1", "yes", "on"].includes(String(value ?? "").trim().toLowerCase());
}

/** form#new-run-form: one input per Args item, typed by its type, and the queue. */
function newRunForm(view, args) {
  const fields = h("div", { class: "fields" });
  args.forEach((arg, i) => {
    const type = String(arg.type || "str").toLowerCase();
    const value = arg.value === null || arg.value === undefined ? "" : String(arg.value);
    let input;
    if (type === "bool") {
      input = h("input", { type: "checkbox", name: arg.name, "data-arg-index": i, value: "True",
        checked: truthy(value) });
    } else if ((type === "int" || type === "float") && (value === "" || Number.isFinite(Number(value)))) {
      input = h("input", { type: "number", name: arg.name, "data-arg-index": i, value,
        step: type === "int" ? "1" : "any", inputmode: type === "int" ? "numeric" : "decimal" });
    } else {
      input = h("input", { type: "text", name: arg.name, "data-arg-index": i, value,
        spellcheck: "false", autocomplete: "off" });
    }
    const id = `arg-${i}`;
    input.id = id;
    fields.append(h("div", { class: `field field-${type === "bool" ? "bool" : "text"}` },
      h("label", { for: id }, h("span", { class: "mono", text: arg.name }),
        h("span", { class: "type muted", text: type })),
      input,
      arg.description ? h("div", { class: "help muted", text: arg.description }) : null));
  });
  if (!args.length) fields.append(h("p", { class: "muted", text: "This pipeline has no parameters." }));
  const queue = h("select", { name: "queue", id: "new-run-queue" },
    h("option", { value: "", text: "run here" }));
  return h("form", { id: "new-run-form", class: "modal", autocomplete: "off" },
    h("h2", null, "New run of ", h("span", { text: view.name || "pipeline" })),
    h("p", { class: "muted" }, "Clones run ", h("span", { class: "mono", text: String(view.id).slice(0, 8) }),
      " with these parameters and starts it."),
    fields,
    h("div", { class: "field" }, h("label", { for: "new-run-queue" }, "Run on"), queue,
      h("div", { class: "help muted", text: "here: started by this server; a queue: picked up by a live agent" })),
    h("div", { class: "form-error", role: "alert" }),
    h("div", { class: "form-actions" },
      h("button", { type: "button", class: "cancel", text: "Cancel" }),
      h("button", { type: "submit", class: "primary", text: "Start run" })));
}

async function loadQueues(select) {
  try {
    const meta = await api("/api/meta");
    for (const q of (meta && meta.queues) || []) {
      if (!(q.agents > 0)) continue;
      select.append(h("option", { value: q.name,
        text: `${q.name} (${q.agents} agent${q.agents === 1 ? "" : "s"}, ${q.pending} waiting)` }));
    }
  } catch (err) {
    reportError(err);
  }
}
