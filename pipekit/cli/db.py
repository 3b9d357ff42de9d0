"""``pipekit db``: schema status and upgrades of the store; verifying its objects."""

from __future__ import annotations

import click

from .render import emit_json, json_option


@click.group("db")
def db() -> None:
    """Inspect and upgrade the store's schema; verify its objects."""


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


@db.command("check")
@click.option("--repair", is_flag=True,
              help="Move each corrupt object file to PIPEKIT_HOME/quarantine/ (nothing that "
                   "verifies is moved, nothing is deleted).")
@json_option
def check(repair: bool, as_json: bool) -> None:
    """Check the database, and verify every stored object against its digest.

    First the database's own check: SQLite's PRAGMA integrity_check; on PostgreSQL every
    row of the store's tables is read and, when the amcheck extension is installed in the
    database, every index is verified with bt_index_check. Then each object the store
    references (artifacts, models, function steps' pickles, plot images) and every object
    file under artifacts/, one line per bad one: corrupt or missing, its digest, and what
    references it (task and artifact name). Exits with status 1 if anything is bad.

    With --repair, corrupt files are moved to PIPEKIT_HOME/quarantine/<digest>; the
    artifacts that used them then read as missing until the same content is written again
    (a cached step whose output is gone runs again, which does that).
    """
    # lazy: `pipekit --help` and other commands load only what they use
    from ..store import get_store
    from ..store.check import check_objects

    store = get_store()
    verdict, checked = store.check_database()
    report = check_objects(store, repair=repair)
    if as_json:
        emit_json({"database": {"result": verdict, "checked": checked},
                   "objects": report.objects, "files": report.files,
                   "problems": list(report.problems)})
    else:
        click.echo(f"database {store.where}: {verdict} ({checked})")
        for problem in report.problems:
            click.echo(problem.line())
        moved = [p for p in report.problems if p.moved_to]
        click.echo(f"checked {report.objects} object(s), {report.files} file(s) in "
                   f"{store.blobs.where}: "
                   + (f"{len(report.problems)} bad" if report.problems else "all verify"))
        if moved:
            click.echo(f"moved {len(moved)} corrupt object(s) to "
                       f"{store.settings.quarantine_dir}")
    if not report.ok or verdict != "ok":
        raise click.exceptions.Exit(1)


def register(cli: click.Group) -> None:
    cli.add_command(db)
