"""``pipekit ui``: the web UI over the store."""

from __future__ import annotations

import click

#: keep in step with pipekit.ui.server.DEFAULT_PORT (not imported: `--help` stays light)
DEFAULT_PORT = 8765


@click.command("ui")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --allow-remote.")
@click.option("--allow-remote", is_flag=True,
              help="Allow a non-loopback --host: anyone who reaches it can read every run.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="With --allow-remote, another host name browsers use to reach this "
                   "machine (repeatable).")
@click.option("--open", "open_browser", is_flag=True, help="Open the UI in a browser.")
def ui(port: int, host: str, allow_remote: bool, allow_hosts: tuple[str, ...],
       open_browser: bool) -> None:
    """Serve the web UI: runs, live DAGs, step details, plots, compare and New run.

    Prints the URL to open, carrying a token made for this start: pages opened from it may
    abort, resume and start runs; without it the UI is read-only. Listens on 127.0.0.1
    only, unless --host with --allow-remote. Needs the ui extra: pip install 'pipekit[ui]'.
    """
    # lazy: `pipekit --help` and other commands load only what they use
    from ..ui.server import serve

    try:
        serve(host, port, allow_remote=allow_remote, allow_hosts=allow_hosts,
              open_browser=open_browser)
    except KeyboardInterrupt:
        pass


def register(cli: click.Group) -> None:
    cli.add_command(ui)
