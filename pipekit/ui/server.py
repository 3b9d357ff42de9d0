"""Starting the UI: the bind rules, the per-start token, the printed URL, and uvicorn.

The socket is bound here, before uvicorn starts, so that ``--port 0`` gets a free port whose
number the printed URL carries, and a port in use is one clear error line.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import sys
import webbrowser
from collections.abc import Iterable

from ..errors import PipekitError

__all__ = ["DEFAULT_PORT", "check_bind", "serve"]

DEFAULT_PORT = 8765


def check_bind(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback address unless ``allow_remote`` (RELIABILITY 20).

    :raises PipekitError: ``host`` is not a loopback address and remote access is not
        allowed.
    """
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise PipekitError(f"--host {host} would serve the UI beyond this machine: anyone who "
                           "reaches it can read every run; add --allow-remote to mean it")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise PipekitError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                           "(choose another --port)") from None
    sock.listen(128)
    return sock


def _remote_hosts(host: str, port: int, extra: Iterable[str]) -> set[str]:
    """Host headers to accept when serving beyond loopback: the address bound, this
    machine's names and addresses, and any ``--allow-host``.
    """
    names = {host, socket.gethostname(), socket.getfqdn(), *extra}
    try:
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    names.discard("0.0.0.0")
    names.discard("::")
    out = set()
    for name in names:
        shown = f"[{name}]" if ":" in name and not name.startswith("[") else name
        out.add(f"{shown}:{port}")
        if port == 80:
            out.add(shown)
    return out


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, allow_remote: bool = False,
          allow_hosts: Iterable[str] = (), open_browser: bool = False) -> None:
    """Serve the UI until interrupted; print ``pipekit ui: URL`` (with the token) first.

    :raises PipekitError: a non-loopback ``host`` without ``allow_remote``; the port is
        taken; the ``ui`` extra is not installed.
    """
    check_bind(host, allow_remote)
    try:
        import uvicorn  # lazy: the ui extra is optional

        from .app import create_app, local_hosts  # lazy: starlette comes with the extra
    except ImportError as exc:
        raise PipekitError(f"pipekit ui needs the ui extra ({exc.name} is missing): "
                           "pip install 'pipekit[ui]'") from None
    from .. import __version__  # lazy: pipekit/__init__ imports the whole API

    sock = _bind(host, port)
    port = sock.getsockname()[1]
    token = secrets.token_urlsafe(24)
    hosts = local_hosts(port)
    if allow_remote:
        hosts |= _remote_hosts(host, port, allow_hosts)
    app = create_app(token=token, hosts=hosts, version=__version__)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "localhost") else host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    url = f"http://{shown}:{port}/?token={token}"
    print(f"pipekit ui: {url}", flush=True)
    print("(the token in the URL lets this page change runs; Ctrl+C stops the server)",
          file=sys.stderr, flush=True)
    if open_browser:
        webbrowser.open(url)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
