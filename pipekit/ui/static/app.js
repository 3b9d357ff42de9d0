// pipekit ui: one page, routed by the URL hash.
//   #/runs  #/run/ID  #/run/ID/step/NAME  #/tasks  #/task/ID  #/compare?runs=A,B | ?tasks=A,B

import {
  h, clear, api, qs, enc, adoptToken, token, badge, lostBadge, idEl, timeEl, fmtDuration, fmtInt,
  elapsed, isFinal, reportError, clearError, COLOURS,
} from "./util.js";
import { RunPage } from "./run.js";
import { StepPanel } from "./panel.js";
import { compareCharts, destroyPlots } from "./charts.js";

const LIST_REFRESH_MS = 3000;
const PAGE_SIZE = 50;
const RUN_STATUSES = ["in_progress", "queued", "created", "completed", "failed", "stopped"];
const TASK_STATUSES = ["in_progress", "queued", "created", "completed", "failed", "stopped",
  "published"];

adoptToken();

let page = null; // the current page object: {kind, key, destroy(), …}
const main = () => document.getElementById("main");

/** The hash as {parts, query}: "#/run/abc/step/x?in=y" -> {parts: [run, abc, step, x], query}. */
function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const query = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
  const parts = path.split("/").filter((p) => p !== "").map((p) => {
    try { return decodeURIComponent(p); } catch (_) { return p; }
  });
  return { parts, query };
}

function route() {
  const { parts, query } = parseHash();
  const [kind = "runs", id, sub, name] = parts;
  navHighlight(kind);
  if (kind === "run" && id) {
    if (!(page && page.kind === "run" && page.key === id)) {
      swap({ kind: "run", key: id, obj: null });
      page.obj = new RunPage(main(), id);
    }
    if (sub === "step" && name !== undefined) page.obj.openStep(query.get("in"), name);
    else page.obj.closeStep();
    document.title = `run ${id.slice(0, 8)} · pipekit`;
    return;
  }
  if (kind === "task" && id) {
    swap({ kind: "task", key: id });
    taskPage(id);
    return;
  }
  if (kind === "tasks") {
    swap({ kind: "tasks", key: query.toString() });
    listPage("tasks", query);
    return;
  }
  if (kind === "compare") {
    swap({ kind: "compare", key: query.toString() });
    comparePage(query);
    return;
  }
  swap({ kind: "runs", key: query.toString() });
  listPage("runs", query);
}

/** Leave the current page (stop its timers) and start `next` on an empty main. */
function swap(next) {
  if (page) {
    page.alive = false;
    for (const t of page.timers || []) clearTimeout(t);
    if (page.obj) page.obj.destroy();
    for (const fn of page.cleanup || []) fn();
  }
  clearError();
  clear(main());
  page = { alive: true, timers: new Set(), cleanup: [], ...next };
}

function later(pg, fn, ms) {
  const t = setTimeout(() => { pg.timers.delete(t); if (pg.alive) fn(); }, ms);
  pg.timers.add(t);
}

function navHighlight(kind) {
  const section = kind === "tasks" || kind === "task" ? "tasks" : "runs";
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.getAttribute("data-nav") === section);
  }
}

function setQuery(base, params) {
  window.location.hash = base + qs(params);
}

// -- runs and tasks lists --------------------------------------------------------------------

const selected = { runs: new Set(), tasks: new Set() };

function listPage(kind, query) {
  const pg = page;
  const isRuns = kind === "runs";
  document.title = `${isRuns ? "Runs" : "Tasks"} · pipekit`;
  const offset = Math.max(0, parseInt(query.get("offset") || "0", 10) || 0);
  const limit = Math.min(500, Math.max(1, parseInt(query.get("limit") || String(PAGE_SIZE), 10) || PAGE_SIZE));
  const filters = {
    project: query.get("project") || "",
    pipeline: isRuns ? query.get("pipeline") || "" : "",
    status: query.get("status") || "",
    all: !isRuns && query.get("all") === "1",
  };
  const base = isRuns ? "#/runs" : "#/tasks";
  const go = (changes) => setQuery(base, {
    project: filters.project, pipeline: filters.pipeline, status: filters.status,
    all: filters.all ? "1" : "", limit: limit !== PAGE_SIZE ? limit : "", offset: 0, ...changes,
  });

  const projectSel = h("select", { name: "project", "aria-label": "project",
    onchange: (e) => go({ project: e.target.value }) }, h("option", { value: "", text: "all projects" }));
  const pipelineSel = isRuns ? h("select", { name: "pipeline", "aria-label": "pipeline",
    onchange: (e) => go({ pipeline: e.target.value }) }, h("option", { value: "", text: "all pipelines" })) : null;
  const statusSel = h("select", { name: "status", "aria-label": "status",
    onchange: (e) => go({ status: e.target.value }) }, h("option", { value: "", text: "any status" }),
  (isRuns ? RUN_STATUSES : TASK_STATUSES).map((st) => h("option", { value: st, text: st })));
  statusSel.value = filters.status;
  for (const [sel, value] of [[projectSel, filters.project], [pipelineSel, filters.pipeline]]) {
    if (sel && value) { sel.append(h("option", { value, text: value })); sel.value = value; }
  }
  const allBox = isRuns ? null : h("label", { class: "check" },
    h("input", { type: "checkbox", name: "all", checked: filters.all,
      onchange: (e) => go({ all: e.target.checked ? "1" : "" }) }), "include pipeline steps");

  const chosen = selected[kind];
  const compareBtn = h("button", { type: "button", id: isRuns ? "compare-runs" : "compare-tasks",
    class: "primary", disabled: true, onclick: () => {
      window.location.hash = `#/compare?${kind}=${[...chosen].map(enc).join(",")}`;
    } }, "Compare");
  const clearBtn = h("button", { type: "button", class: "link", hidden: true, text: "clear selection",
    onclick: () => { chosen.clear(); syncChecks(); } });
  const live = h("span", { class: "live-dot", hidden: true, title: "refreshing while runs are in progress" }, "live");
  const pager = h("div", { class: "pager" });
  const table = h("table", { class: `list ${kind}` });
  const tbody = h("tbody");
  const headers = isRuns
    ? ["", "pipeline", "version", "status", "started", "duration", "user", "run"]
    : ["", "name", "type", "project", "status", "started", "duration", "task"];
  table.append(h("thead", null, h("tr", null, headers.map((t, i) => h("th", { text: t, class: i === 0 ? "sel" : null })))), tbody);

  const toolbar = h("div", { class: "toolbar" },
    h("h1", { text: isRuns ? "Runs" : "Tasks" }),
    h("div", { class: "filters" }, projectSel, pipelineSel, statusSel, allBox),
    h("div", { class: "spacer" }), live, clearBtn, compareBtn);
  main().append(h("div", { class: "list-page" }, toolbar, h("div", { class: "table-wrap" }, table), pager));

  function syncChecks() {
    for (const box of tbody.querySelectorAll("input.pick")) box.checked = chosen.has(box.value);
    const n = chosen.size;
    compareBtn.disabled = n < 2 || n > 5;
    compareBtn.textContent = n ? `Compare (${n})` : "Compare";
    compareBtn.title = n < 2 ? "pick 2 to 5 to compare" : n > 5 ? "at most 5" : "";
    clearBtn.hidden = n === 0;
  }

  function fillSelect(sel, values, current) {
    if (!sel) return;
    const have = new Set([...sel.options].map((o) => o.value));
    for (const v of values || []) if (!have.has(v)) sel.append(h("option", { value: v, text: v }));
    sel.value = current;
  }

  async function load() {
    let data;
    const params = isRuns
      ? { project: filters.project, pipeline: filters.pipeline, status: filters.status, offset, limit }
      : { project: filters.project, status: filters.status, standalone: filters.all ? "" : "1", offset, limit };
    try {
      data = await api(`/api/${kind}${qs(params)}`);
      clearError("list");
    } catch (err) {
      if (!pg.alive) return;
      reportError(err, "list");
      later(pg, load, LIST_REFRESH_MS * 2);
      return;
    }
    if (!pg.alive) return;
    if (data.projects) fillSelect(projectSel, data.projects, filters.project);
    else if (!isRuns) projectsOnce().then((names) => fillSelect(projectSel, names, filters.project));
    fillSelect(pipelineSel, data.pipelines, filters.pipeline);
    const items = data[kind] || [];
    clear(tbody);
    for (const item of items) tbody.append(isRuns ? runRow(item) : taskRow(item));
    if (!items.length) {
      tbody.append(h("tr", { class: "empty" }, h("td", { colspan: String(headers.length),
        text: filters.project || filters.pipeline || filters.status ? "nothing matches these filters"
          : isRuns ? "no pipeline runs yet" : "no tasks yet" })));
    }
    syncChecks();
    pagerOf(pager, data.total, data.offset ?? offset, data.limit ?? limit, (o) => go({ offset: o }));
    const running = items.some((r) => !isFinal(r.status));
    live.hidden = !running;
    if (running) later(pg, load, LIST_REFRESH_MS);
  }

  function pick(id) {
    return h("td", { class: "sel" }, h("input", { type: "checkbox", class: "pick", value: id,
      "aria-label": "select for compare", onclick: (e) => e.stopPropagation(),
      onchange: (e) => {
        if (e.target.checked) chosen.add(id); else chosen.delete(id);
        syncChecks();
      } }));
  }

  function rowLink(tr, href) {
    tr.addEventListener("click", (e) => {
      if (e.target.closest("a, input, button, label, td.sel")) return;
      window.location.hash = href;
    });
  }

  function runRow(r) {
    const href = `#/run/${enc(r.id)}`;
    const tr = h("tr", { "data-run": r.id, "data-status": r.status },
      pick(r.id),
      h("td", { class: "name" }, h("a", { href, text: r.pipeline || "(unnamed)" }),
        r.parent ? h("span", { class: "nested", title: `inside ${r.parent}`, text: "nested" }) : null),
      h("td", { class: "mono", text: r.version ?? "" }),
      h("td", null, badge(r.status), r.controller_lost ? lostBadge() : null),
      h("td", null, timeEl(r.started || r.created)),
      h("td", { class: "num", text: fmtDuration(elapsed(r.started, r.ended, r.duration)) }),
      h("td", { text: r.user ?? "" }),
      h("td", null, idEl(r.id, href)));
    if (r.reason && r.status !== "completed") tr.title = r.reason;
    rowLink(tr, href);
    return tr;
  }

  function taskRow(t) {
    const href = `#/task/${enc(t.id)}`;
    const tr = h("tr", { "data-task": t.id, "data-status": t.status },
      pick(t.id),
      h("td", { class: "name" }, h("a", { href, text: t.name || "(unnamed)" })),
      h("td", { text: t.type ?? "" }),
      h("td", { text: t.project ?? "" }),
      h("td", null, badge(t.status)),
      h("td", null, timeEl(t.started || t.created)),
      h("td", { class: "num", text: fmtDuration(elapsed(t.started, t.ended, t.duration)) }),
      h("td", null, idEl(t.id, href)));
    if (t.reason && t.status !== "completed") tr.title = t.reason;
    rowLink(tr, href);
    return tr;
  }

  load();
}

let projectNames = null;

/** The store's projects, for a list whose response does not name them (the tasks list). */
function projectsOnce() {
  if (!projectNames) {
    projectNames = api("/api/runs?limit=1").then((r) => (r && r.projects) || [])
      .catch(() => { projectNames = null; return []; });
  }
  return projectNames;
}

function pagerOf(el, total, offset, limit, go) {
  clear(el);
  total = total || 0;
  const first = total ? offset + 1 : 0;
  const last = Math.min(total, offset + limit);
  el.append(
    h("button", { type: "button", class: "prev", disabled: offset <= 0, text: "‹ prev",
      onclick: () => go(Math.max(0, offset - limit)) }),
    h("span", { class: "range", text: `${fmtInt(first)}–${fmtInt(last)} of ${fmtInt(total)}` }),
    h("button", { type: "button", class: "next", disabled: last >= total, text: "next ›",
      onclick: () => go(offset + limit) }));
}

// -- a task page -----------------------------------------------------------------------------

async function taskPage(id) {
  const pg = page;
  document.title = `task ${id.slice(0, 8)} · pipekit`;
  const head = h("div", { class: "run-head task-head" }, h("p", { class: "muted", text: "loading task…" }));
  const panel = new StepPanel({ full: true, header: false });
  pg.obj = panel;
  main().append(h("div", { class: "task-page" }, head, panel.el));
  const task = await panel.load(id); // the panel fetches the task (and its charts) once
  if (!pg.alive) return;
  if (!task) {
    clear(head).append(h("h1", { text: "Task not found" }));
    return;
  }
  const status = badge(task.status, { id: "task-status" });
  const dur = h("span", { class: "elapsed mono" });
  const abort = h("button", { type: "button", id: "abort-task", class: "danger", text: "Abort",
    hidden: isFinal(task.status), onclick: async () => {
      abort.disabled = true;
      try {
        const r = await api(`/api/tasks/${enc(task.id)}/abort`, { method: "POST" });
        if (r && r.status) { status.textContent = r.status; status.setAttribute("data-status", r.status); }
      } catch (err) { reportError(err); }
      abort.disabled = false;
    } });
  const reason = h("div", { class: "reason", "data-status": task.status,
    hidden: !task.reason || task.status === "completed", text: task.reason || "" });
  const where = [];
  if (task.run && task.node) {
    where.push(h("span", null, "step ", h("a", { href: `#/run/${enc(task.run)}/step/${enc(task.node)}`, text: task.node }),
      " of run ", idEl(task.run, `#/run/${enc(task.run)}`)));
  } else if (task.run) {
    where.push(h("span", null, "run ", idEl(task.run, `#/run/${enc(task.run)}`)));
  }
  if (task.parent && task.parent !== task.run) where.push(h("span", null, "parent ", idEl(task.parent, `#/task/${enc(task.parent)}`)));
  clear(head).append(
    h("div", { class: "title-row" }, h("h1", { text: task.name || "task", title: task.name || "" }),
      task.type ? h("span", { class: "chip", text: task.type }) : null, status, dur,
      h("div", { class: "actions" }, abort)),
    h("div", { class: "meta-row" }, h("span", null, "task ", idEl(task.id)),
      task.project ? h("span", null, "project ", h("b", { text: task.project })) : null,
      h("span", null, "created ", timeEl(task.created)),
      task.started ? h("span", null, "started ", timeEl(task.started)) : null,
      task.worker ? h("span", { class: "mono", title: "worker", text: task.worker }) : null, where),
    reason);
  const tick = () => {
    const t = panel.task || task;
    status.textContent = t.status;
    status.setAttribute("data-status", t.status);
    abort.hidden = isFinal(t.status);
    const d = elapsed(t.started, t.ended, t.duration);
    dur.textContent = d === null ? "" : fmtDuration(d);
    if (t.reason && t.status !== "completed") {
      reason.textContent = t.reason;
      reason.setAttribute("data-status", t.status);
      reason.hidden = false;
    }
    if (!isFinal(t.status)) later(pg, tick, 1000);
  };
  tick();
}

// -- compare ---------------------------------------------------------------------------------

async function comparePage(query) {
  const pg = page;
  const kind = query.has("tasks") ? "tasks" : "runs";
  const ids = (query.get(kind) || "").split(",").filter(Boolean);
  document.title = `Compare ${kind} · pipekit`;
  const wrap = h("div", { class: "compare-page" }, h("p", { class: "muted", text: "loading…" }));
  main().append(wrap);
  let data;
  try {
    data = await api(`/api/compare?${kind}=${ids.map(enc).join(",")}`);
  } catch (err) {
    if (!pg.alive) return;
    reportError(err);
    clear(wrap).append(h("h1", { text: `Compare ${kind}` }), h("p", { class: "muted", text: err.message }));
    return;
  }
  if (!pg.alive) return;
  const items = data.items || [];
  const href = (id) => (kind === "runs" ? `#/run/${enc(id)}` : `#/task/${enc(id)}`);
  const swatch = (i) => { const sw = h("span", { class: "swatch" }); sw.style.background = COLOURS[i % COLOURS.length]; return sw; };
  const onlyDiffs = h("input", { type: "checkbox", id: "only-diffs" });
  const params = data.parameters || [];
  const ndiff = params.filter((p) => p.differs).length;
  const table = h("table", { id: "compare-params", class: "grid compare" });
  table.append(h("thead", null, h("tr", null, h("th", { text: "parameter" }),
    items.map((item, i) => h("th", { "data-item": item.id },
      h("div", { class: "item-head" }, swatch(i), h("a", { href: href(item.id), text: item.label || String(item.id).slice(0, 8) })),
      h("div", { class: "item-sub" }, idEl(item.id), badge(item.status)))))));
  const body = h("tbody");
  for (const p of params) {
    const values = p.values || [];
    body.append(h("tr", { "data-param": p.name, class: p.differs ? "differs" : null },
      h("th", { class: "mono", text: p.name, title: p.differs ? "values differ" : "" }),
      items.map((_, i) => {
        const v = values[i];
        return h("td", { class: v === null || v === undefined ? "mono missing" : "mono",
          text: v === null || v === undefined ? "—" : String(v) });
      })));
  }
  if (!params.length) body.append(h("tr", { class: "empty" }, h("td", { colspan: String(items.length + 1), text: "no parameters" })));
  table.append(body);
  onlyDiffs.addEventListener("change", () => {
    table.classList.toggle("only-diffs", onlyDiffs.checked);
    for (const tr of body.querySelectorAll("tr[data-param]")) tr.hidden = onlyDiffs.checked && !tr.classList.contains("differs");
  });
  const chartsEl = h("div", { class: "charts compare-charts" });
  clear(wrap).append(
    h("div", { class: "toolbar" }, h("h1", { text: `Compare ${items.length} ${kind}` }),
      h("div", { class: "chips" }, items.map((item, i) => h("a", { class: "item-chip", href: href(item.id) },
        swatch(i), h("span", { text: item.label || String(item.id).slice(0, 8) }))))),
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h2", { text: "Parameters" }),
        h("span", { class: "muted", text: `${ndiff} of ${params.length} differ` }),
        h("label", { class: "check" }, onlyDiffs, "only differences")),
      h("div", { class: "table-wrap" }, table)),
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h2", { text: "Scalars" })), chartsEl));
  const charts = data.charts || {};
  if (!Object.keys(charts).length) chartsEl.append(h("p", { class: "empty", text: "no scalars reported" }));
  const plots = compareCharts(chartsEl, charts, items, { width: Math.floor((chartsEl.clientWidth || 1100) / 2) - 24 });
  pg.cleanup.push(() => destroyPlots(plots));
}

// -- start -----------------------------------------------------------------------------------

function start() {
  const box = document.getElementById("error");
  box.querySelector(".close").addEventListener("click", () => clearError());
  window.addEventListener("hashchange", route);
  route();
  api(`/api/meta${qs({ token: token() })}`).then((meta) => {
    const el = document.getElementById("store-info");
    if (el && meta) {
      el.textContent = meta.store || "";
      el.title = `pipekit ${meta.version || ""} · store ${meta.store || ""}`;
    }
    const ro = document.getElementById("read-only");
    if (ro && meta) ro.hidden = !!meta.token_ok;
  }).catch(() => {});
}

start();
