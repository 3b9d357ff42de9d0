"""The ASGI app behind ``pipekit ui``: the pages, the JSON API's routes, and the guards.

Guards, outermost first (RELIABILITY 20):

- the ``Host`` header must name this server (``127.0.0.1:PORT``, ``localhost:PORT``,
  ``[::1]:PORT``, or what ``--allow-remote`` adds), else 421: a DNS-rebinding page that
  points its own host name at 127.0.0.1 cannot read the API;
- every ``POST`` must carry the per-start token in ``X-Pipekit-Token``, else 403; a page of
  another origin cannot send that header without a CORS preflight, which this server never
  grants;
- every response forbids framing, sniffing and referrers, and the pages run only this
  server's own scripts (``Content-Security-Policy``).

Routes only parse the request and call :mod:`pipekit.ui.api` (reads) or
:mod:`pipekit.ui.actions` (changes); errors become ``{"error": "..."}`` with a status.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Collection, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..artifacts import open_verified
from ..errors import ArtifactCorrupt, BadRequest, NotFound, PipekitError, RunBusy
from ..store import Store, get_store
from . import actions, api

__all__ = ["STATIC", "create_app", "local_hosts"]

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
HEADERS = [(b"content-security-policy", CSP.encode()),
           (b"x-content-type-options", b"nosniff"),
           (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"no-referrer"),
           (b"cross-origin-opener-policy", b"same-origin"),
           (b"cross-origin-resource-policy", b"same-origin")]
#: How large a POST body may be: a New run's parameters, never a file.
MAX_BODY = 1 << 20

Handler = Callable[[Request], Any]


def local_hosts(port: int) -> set[str]:
    """``Host`` header values a browser sends for this machine's loopback on ``port``."""
    names = ["127.0.0.1", "localhost", "[::1]"]
    hosts = {f"{name}:{port}" for name in names}
    if port == 80:
        hosts.update(names)
    return hosts


class Guard:
    """The Host check and the security headers, around every request (pure ASGI)."""

    def __init__(self, app: Any, hosts: Collection[str]) -> None:
        self.app, self.hosts = app, {h.lower() for h in hosts}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")

        async def secured(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + HEADERS
            await send(message)

        if host.lower() not in self.hosts:
            response = JSONResponse({"error": f"host {host!r} is not allowed: open the URL "
                                              "`pipekit ui` printed"}, status_code=421)
            await response(scope, receive, secured)
            return
        await self.app(scope, receive, secured)


def _error(exc: Exception, status: int) -> JSONResponse:
    return JSONResponse({"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__},
                        status_code=status)


def _reading(fn: Callable[[Request, Store], Any]) -> Handler:
    """A GET route: ``fn``'s result as JSON; not found 404, bad input 400."""
    def route(request: Request) -> Response:
        try:
            result = fn(request, get_store())
        except NotFound as exc:
            return _error(exc, 404)
        except ArtifactCorrupt as exc:  # the store's fault, not the request's
            return _error(exc, 500)
        except (PipekitError, ValueError) as exc:
            return _error(exc, 400)
        if isinstance(result, Response):
            return result
        return JSONResponse(result, headers={"cache-control": "no-store"})
    return route


def _changing(token: str, fn: Callable[[Request, Store, dict[str, Any]], Any]
              ) -> Callable[[Request], Awaitable[Response]]:
    """A POST route: the token first, then ``fn(request, store, body)``; a state the change
    is refused in is 409.
    """
    async def route(request: Request) -> Response:
        given = request.headers.get("x-pipekit-token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"error": "this needs the token from the URL `pipekit ui` "
                                          "printed (header X-Pipekit-Token)"}, status_code=403)
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return JSONResponse({"error": "request body too large"}, status_code=413)
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
        except ValueError as exc:
            return _error(BadRequest(f"the request body is not JSON: {exc}"), 400)
        try:
            # in a thread, as GET routes are: the store's calls block
            result = await run_in_threadpool(fn, request, get_store(), body)
        except NotFound as exc:
            return _error(exc, 404)
        except (BadRequest, ValueError) as exc:
            return _error(exc, 400)
        except (RunBusy, PipekitError) as exc:
            return _error(exc, 409)
        return JSONResponse(result)
    return route


def _ids(request: Request, key: str) -> list[str]:
    value = request.query_params.get(key, "")
    return [part for part in value.split(",") if part]


def _int(request: Request, key: str, default: int) -> int:
    value = request.query_params.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{key}={value!r}: not a whole number") from None


def _artifact(request: Request, store: Store) -> Response:
    task_id = store.resolve_task_id(request.path_params["task"])
    name = unquote(request.path_params["name"])
    info = store.get_artifact(task_id, name)
    with open_verified(store, info.ref, name) as fh:
        data = fh.read()
    filename = info.ref.filename or name
    return Response(data, media_type="application/octet-stream", headers={
        "content-disposition": _attachment(filename), "cache-control": "no-store"})


def _model(request: Request, store: Store) -> Response:
    info = store.get_model(request.path_params["model"])
    with open_verified(store, info.ref, info.name) as fh:
        data = fh.read()
    return Response(data, media_type="application/octet-stream", headers={
        "content-disposition": _attachment(info.ref.filename or info.name),
        "cache-control": "no-store"})


def _attachment(filename: str) -> str:
    # lazy: only downloads name files
    from urllib.parse import quote

    ascii_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename) or "artifact"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def _image(request: Request, store: Store) -> Response:
    mime, data = api.image_of(store, request.path_params["task"], request.path_params["digest"])
    headers = {"cache-control": "private, max-age=3600"}
    if mime == "image/svg+xml":  # an SVG opened on its own must not run its scripts
        headers["content-security-policy"] = "default-src 'none'; style-src 'unsafe-inline'; " \
                                              "sandbox"
    return Response(data, media_type=mime, headers=headers)


def create_app(*, token: str, hosts: Iterable[str], version: str) -> Any:
    """The app: pages, API and guards (see the module's docstring)."""
    def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    def token_ok(request: Request) -> bool:
        return hmac.compare_digest(request.query_params.get("token", "").encode(),
                                   token.encode())

    q = _ids
    routes = [
        Route("/", index),
        Route("/api/meta", _reading(lambda r, s: api.meta(s, version=version,
                                                          token_ok=token_ok(r)))),
        Route("/api/runs", _reading(lambda r, s: api.list_runs(
            s, project=r.query_params.get("project") or None,
            pipeline=r.query_params.get("pipeline") or None,
            status=r.query_params.getlist("status"), offset=_int(r, "offset", 0),
            limit=_int(r, "limit", 50)))),
        Route("/api/runs/{run}", _reading(lambda r, s: api.run_page(s, r.path_params["run"]))),
        Route("/api/runs/{run}/status",
              _reading(lambda r, s: api.run_status(s, api.require_run(s, r.path_params["run"])))),
        Route("/api/tasks", _reading(lambda r, s: api.list_tasks(
            s, project=r.query_params.get("project") or None,
            status=r.query_params.getlist("status"),
            standalone=r.query_params.get("standalone") in ("1", "true"),
            offset=_int(r, "offset", 0), limit=_int(r, "limit", 50)))),
        Route("/api/tasks/{task}", _reading(lambda r, s: api.task_page(
            s, r.path_params["task"], r.query_params.get("run") or None))),
        Route("/api/tasks/{task}/scalars",
              _reading(lambda r, s: api.task_scalars(s, r.path_params["task"]))),
        Route("/api/tasks/{task}/plots",
              _reading(lambda r, s: api.task_plots(s, r.path_params["task"]))),
        Route("/api/tasks/{task}/log", _reading(lambda r, s: api.task_log(
            s, r.path_params["task"], _int(r, "offset", 0)))),
        Route("/api/tasks/{task}/artifacts/{name:path}", _reading(_artifact)),
        Route("/api/tasks/{task}/images/{digest}", _reading(_image)),
        Route("/api/models/{model}", _reading(_model)),
        Route("/api/compare", _reading(lambda r, s: api.compare(
            s, runs=q(r, "runs"), tasks=q(r, "tasks")))),
        Route("/api/runs/{run}/abort", _changing(
            token, lambda r, s, b: actions.stop_run(s, r.path_params["run"])), methods=["POST"]),
        Route("/api/runs/{run}/resume", _changing(
            token, lambda r, s, b: actions.resume_run(s, api.require_run(s, r.path_params["run"]))),
            methods=["POST"]),
        Route("/api/runs/{run}/rerun", _changing(
            token, lambda r, s, b: actions.new_run(
                s, r.path_params["run"], b.get("params") or {}, b.get("queue") or None)),
            methods=["POST"]),
        Route("/api/tasks/{task}/abort", _changing(
            token, lambda r, s, b: actions.abort_task(s, r.path_params["task"])),
            methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    return Guard(app, hosts)
