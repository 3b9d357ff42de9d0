// Starts the first page's API requests while the page's modules load: a classic script runs
// as soon as it is parsed, the modules only once the whole document is. util.js's api() takes
// each prefetched response once (window.__pkPrefetch); nothing else reads it.
(function () {
  "use strict";
  var prefetched = {};
  window.__pkPrefetch = prefetched;
  var found = /^#\/(run|task)\/([^/?]+)/.exec(window.location.hash);
  if (!found || !window.fetch) return;
  var id;
  try { id = encodeURIComponent(decodeURIComponent(found[2])); } catch (e) { return; }
  function get(path) {
    var pending = window.fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    pending.catch(function () { /* api() reports it when it takes it */ });
    prefetched[path] = pending;
  }
  if (found[1] === "run") {
    get("/api/runs/" + id);
  } else {
    get("/api/tasks/" + id);
    get("/api/tasks/" + id + "/scalars");
    get("/api/tasks/" + id + "/plots");
  }
})();
