"""``pipekit db``: schema status and upgrades of the store."""

from __future__ import annotations

import click

from .render import emit_json, json_option


@click.group("db")
def db() -> None:
    """Inspect and upgrade the store's schema."""


@db.command("status")
@json_option
def status(as_json: bool) -> None:
    """Show the store's location, schema version and pending migrations."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..store import Store

    store = Store(upgrade=False)
    st = store.schema_status()
    if as_json:
        emit_json({"location": st.location, "current": st.current, "newest": st.newest,
                   "pending": list(st.pending)})
        return
    click.echo(f"store     {st.location}\nschema    {st.current} (newest known {st.newest})")
    click.echo("pending   " + (", ".join(st.pending) if st.pending else "none (up to date)"))


@db.command("upgrade")
def upgrade() -> None:
    """Apply pending migrations to the store (creating it if needed)."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..store import Store

    store = Store(upgrade=False)
    applied = store.upgrade()
    if applied:
        click.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        click.echo(f"store {store.location} is up to date")


def register(cli: click.Group) -> None:
    cli.add_command(db)
