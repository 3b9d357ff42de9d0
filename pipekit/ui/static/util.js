// Shared helpers: DOM building (never innerHTML), the JSON API client, the error banner,
// statuses and human-readable numbers. Every string from the API is untrusted: it only ever
// reaches the page through textContent, setAttribute or a text node.

const TOKEN_KEY = "pipekit-token";

/** Read ?token= from the page URL, keep it for this tab, and take it out of the address bar. */
export function adoptToken() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token !== null) {
    try { window.sessionStorage.setItem(TOKEN_KEY, token); } catch (_) { /* storage off */ }
    url.searchParams.delete("token");
    window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
  }
}

export function token() {
  try { return window.sessionStorage.getItem(TOKEN_KEY) || ""; } catch (_) { return ""; }
}

/** An element: h("a", {href: "#/x", class: "c", text: "t", onclick: fn}, child, "text", …). */
export function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  setProps(el, props);
  appendKids(el, kids);
  return el;
}

const SVGNS = "http://www.w3.org/2000/svg";

/** An SVG element, with attributes as h(). */
export function s(tag, props, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  setProps(el, props);
  appendKids(el, kids);
  return el;
}

function setProps(el, props) {
  if (!props) return;
  for (const key of Object.keys(props)) {
    const value = props[key];
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") el.textContent = String(value);
    else if (key === "class") el.setAttribute("class", value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
}

function appendKids(el, kids) {
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** A URL from the API that may go in href/src: same-origin paths and http(s) only. */
export function safeUrl(url) {
  if (typeof url !== "string" || !url) return null;
  if (url.startsWith("/") && !url.startsWith("//")) return url;
  if (/^https?:\/\//i.test(url)) return url;
  return null;
}

// -- the API ---------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** GET (or POST with a JSON body and the token) a JSON endpoint; throws ApiError. */
export async function api(path, options = {}) {
  const method = options.method || "GET";
  const init = { method, headers: { Accept: "application/json" }, cache: "no-store" };
  if (method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    init.headers["X-Pipekit-Token"] = token();
    init.body = JSON.stringify(options.body === undefined ? {} : options.body);
  }
  if (options.signal) init.signal = options.signal;
  let response;
  try {
    response = await (takePrefetched(method, path) || fetch(path, init));
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "cannot reach the pipekit ui server: is it still running?");
  }
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    let message = data && typeof data.error === "string" ? data.error
      : `${response.status} ${response.statusText || "error"} from ${path.split("?")[0]}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

/** The response boot.js started for GET `path` before the modules loaded, once. */
function takePrefetched(method, path) {
  const early = window.__pkPrefetch;
  if (method !== "GET" || !early || !early[path]) return null;
  const pending = early[path];
  delete early[path];
  return pending;
}

export function qs(params) {
  const out = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => out.append(key, v));
    else out.append(key, String(value));
  }
  const text = out.toString();
  return text ? "?" + text : "";
}

export const enc = encodeURIComponent;

// -- the error banner ------------------------------------------------------------------------

let errorSource = null;

/** Show `message` in #error; `source` names who showed it, so only they clear it. */
export function showError(message, source = "page") {
  const box = document.getElementById("error");
  if (!box) return;
  box.querySelector(".msg").textContent = String(message);
  box.hidden = false;
  errorSource = source;
}

export function clearError(source) {
  const box = document.getElementById("error");
  if (!box || box.hidden) return;
  if (source !== undefined && source !== errorSource) return;
  box.hidden = true;
  box.querySelector(".msg").textContent = "";
  errorSource = null;
}

export function reportError(err, source = "page") {
  if (err && err.name === "AbortError") return;
  showError(err && err.message ? err.message : String(err), source);
  if (!(err instanceof ApiError)) console.error(err); // eslint-disable-line no-console
}

// -- statuses --------------------------------------------------------------------------------

export const STATUSES = ["pending", "created", "queued", "in_progress", "cached", "completed",
  "published", "failed", "skipped", "stopped"];
const FINAL = new Set(["completed", "published", "failed", "stopped", "skipped", "cached",
  "closed"]);

export function isFinal(status) {
  return FINAL.has(status);
}

/** What a node shows: a completed node whose outputs came from the cache shows as cached. */
export function shownStatus(status, cached) {
  if (cached && (status === "completed" || !status)) return "cached";
  return status || "unknown";
}

/** A coloured status badge; the colour comes from the stylesheet, by data-status. */
export function badge(status, props = {}) {
  return h("span", { class: "badge", "data-status": status, text: status, ...props });
}

export function lostBadge() {
  return h("span", { class: "badge lost", "data-status": "lost", text: "controller lost",
    title: "the run is in_progress but its controller stopped sending heartbeats" });
}

// -- numbers and times -----------------------------------------------------------------------

const timeFmt = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  hourCycle: "h23" });
const timeFmtYear = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  second: "2-digit", hourCycle: "h23" });

/** Unix seconds as local time, e.g. "Dec 2, 17:27:03" (with the year when not this year). */
export function fmtTime(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const date = new Date(seconds * 1000);
  return (date.getFullYear() === new Date().getFullYear() ? timeFmt : timeFmtYear).format(date);
}

export function isoTime(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return new Date(seconds * 1000).toISOString();
}

/** A time element: local time, full ISO time on hover. */
export function timeEl(seconds) {
  return h("time", { datetime: isoTime(seconds) || null, title: isoTime(seconds) || null,
    text: fmtTime(seconds) });
}

/** Seconds as "850 ms", "12.3 s", "3m 05s", "2h 04m", "3d 2h". */
export function fmtDuration(sec) {
  if (sec === null || sec === undefined || !Number.isFinite(sec)) return "";
  if (sec < 0) sec = 0;
  if (sec < 1) return `${Math.round(sec * 1000)} ms`;
  if (sec < 60) return `${sec < 10 ? sec.toFixed(1) : Math.floor(sec)} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m}m ${String(Math.floor(sec % 60)).padStart(2, "0")}s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(hrs / 24)}d ${hrs % 24}h`;
}

/** The duration of something that may still be going: ended - started, or now - started. */
export function elapsed(started, ended, duration) {
  if (duration !== null && duration !== undefined) return duration;
  if (started === null || started === undefined) return null;
  const end = ended === null || ended === undefined ? Date.now() / 1000 : ended;
  return Math.max(0, end - started);
}

export function fmtBytes(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "";
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let v = n;
  let i = -1;
  do { v /= 1024; i += 1; } while (v >= 1024 && i < units.length - 1);
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function fmtInt(n) {
  return Number(n || 0).toLocaleString("en-US");
}

/** A short form of a 32-character id, with the full id on hover. */
export function idEl(id, href) {
  if (!id) return h("span", { class: "mono muted", text: "—" });
  const props = { class: "mono id", title: id, text: String(id).slice(0, 8) };
  return href ? h("a", { ...props, href }) : h("span", props);
}

export function fmtValue(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    const abs = Math.abs(value);
    return abs !== 0 && (abs < 1e-3 || abs >= 1e6) ? value.toExponential(4) : String(+value.toPrecision(6));
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** Whether the element is scrolled to (within a few pixels of) its bottom. */
export function atBottom(el) {
  return el.scrollHeight - el.scrollTop - el.clientHeight < 8;
}

export const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
