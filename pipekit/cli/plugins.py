"""``pipekit plugins``: what is loaded and from where."""

from __future__ import annotations

import click

from .render import json_option, listing


@click.command("plugins")
@json_option
def plugins(as_json: bool) -> None:
    """List loaded plugins: name, distribution, version and implemented hooks."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..plugin_manager import list_plugins

    listing(list_plugins(), as_json, "plugins", ["name", "dist", "version", "module", "hooks"],
            lambda p: [p.name, p.dist, p.version, p.module, ", ".join(p.hooks)],
            "no plugins loaded")


def register(cli: click.Group) -> None:
    cli.add_command(plugins)
