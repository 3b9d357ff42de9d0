"""The ``pipekit`` command: a thin click layer over the library.

Errors are handled in one place, :meth:`PipekitGroup.invoke`: a :class:`PipekitError`
becomes one line on stderr and exit status 1; a traceback is shown only with ``--debug``.
Plugins add commands through the ``pipekit_register_commands`` hook.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import click

from ..errors import PipekitError


class PipekitGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:
            # Whoever read stdout stopped (`pipekit runs ls | head -1`): not an error. End as
            # a program killed by SIGPIPE would, quietly (Python's docs, "Note on SIGPIPE"):
            # stdout now goes to /dev/null, so flushing it at exit cannot fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(128 + signal.SIGPIPE)
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            if isinstance(exc, PipekitError):
                click.echo(f"Error: {exc}", err=True)
            else:
                click.echo(f"Error: {type(exc).__name__}: {exc} (run with --debug for the "
                           "traceback)", err=True)
            ctx.exit(1)


@click.group(cls=PipekitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logging.")
@click.version_option(package_name="pipekit")
def cli(debug: bool) -> None:
    """pipekit: ClearML-style pipelines of tasks on an embedded SQLite store.

    The store lives in PIPEKIT_HOME (default ~/.pipekit); PIPEKIT_DB overrides the database.
    """
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    # lazy: `pipekit --help` and other commands load only what they use
    from . import agents, cache, db, logs, plugins, queues, runs, tasks, ui

    for module in (runs, tasks, logs, cache, db, plugins, queues, agents, ui):
        module.register(cli)


def _register_plugin_commands() -> None:
    # lazy: `pipekit --help` and other commands load only what they use
    from ..plugin_manager import call_each, third_party_plugins

    # pipekit's own plugins add no command (a test holds that): with no other plugin
    # installed, no plugin is imported before the arguments are parsed
    if third_party_plugins():
        call_each("pipekit_register_commands", cli=cli)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        _register_plugin_commands()
    except PipekitError as exc:
        if debug:
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    cli.main(args=argv, prog_name="pipekit")
