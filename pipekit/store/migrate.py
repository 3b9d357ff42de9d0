"""Apply the numbered migrations in ``migrations/`` (installed as ``pipekit_migrations``).

Applied versions are rows of ``schema_version``. Upgrading takes the write lock first (an
IMMEDIATE transaction on SQLite, an advisory lock on PostgreSQL, whose DDL is transactional
too), so of two processes upgrading at once one applies and the other waits, then finds
nothing to do. A store whose highest version is above the newest known migration is refused,
untouched.

The migrations are the same on both databases. On PostgreSQL the types peewee would pick are
adjusted twice: numbers when the database opens (:attr:`~.dialect.Dialect.field_types`:
64-bit integers and doubles, as SQLite stores them), and text after the migrations ran: every
``VARCHAR(n)`` column becomes ``TEXT``, since SQLite never enforced those lengths and a name
that fits one store must fit the other.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import time
from types import ModuleType

import attrs
import peewee
import pipekit_migrations

import pipekit.store.tables as t

from ..errors import StoreError, StoreTooNew
from .db import write
from .dialect import Dialect

_NAME = re.compile(r"^(\d{4})_(\w+)$")

VERSION_TABLE = "schema_version"


@attrs.frozen
class Migration:
    version: int
    name: str
    module: ModuleType


@attrs.frozen
class SchemaStatus:
    """``pipekit db status``: where a store stands."""

    location: str
    current: int
    newest: int
    pending: tuple[str, ...]

    @property
    def too_new(self) -> bool:
        return self.current > self.newest


def known_migrations() -> list[Migration]:
    """Every migration shipped with this pipekit, in order."""
    found = []
    for info in pkgutil.iter_modules(pipekit_migrations.__path__):
        match = _NAME.match(info.name)
        if match:
            module = importlib.import_module(f"pipekit_migrations.{info.name}")
            found.append(Migration(int(match.group(1)), info.name, module))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise StoreError(f"migrations are not numbered 1..N: {[m.name for m in found]}")
    return found


def newest_version() -> int:
    return known_migrations()[-1].version


def _ensure_version_table(db: peewee.Database) -> None:
    db.execute_sql(
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied DOUBLE PRECISION NOT NULL)"
    )


def current_version(db: peewee.Database) -> int:
    if VERSION_TABLE not in db.get_tables():
        return 0
    (version,) = db.execute_sql(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}"
                                ).fetchone()
    return int(version)


def status(db: peewee.Database, location: str) -> SchemaStatus:
    migrations = known_migrations()
    current = current_version(db)
    return SchemaStatus(location=location, current=current, newest=migrations[-1].version,
                        pending=tuple(m.name for m in migrations if m.version > current))


def upgrade(db: peewee.Database, dialect: Dialect, location: str, *,
            to: int | None = None) -> list[str]:
    """Apply every pending migration; returns the names applied (empty when up to date).

    :param to: stop after this version (tests build older schemas with it).
    """
    migrations = known_migrations()
    newest = migrations[-1].version
    target = newest if to is None else to
    if current_version(db) == target:
        return []  # the common case: no write lock taken
    # lazy: playhouse.migrate is only needed when a store is actually upgraded
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator

    migrator = SqliteMigrator(db) if dialect.name == "sqlite" else PostgresqlMigrator(db)
    record = dialect.sql(f"INSERT INTO {VERSION_TABLE} (version, name, applied) VALUES (?, ?, ?)")

    def apply() -> list[str]:
        if dialect.migration_lock:
            db.execute_sql(dialect.migration_lock)
        _ensure_version_table(db)
        current = current_version(db)  # re-read under the lock: another process may have won
        if current > newest:
            raise StoreTooNew(location, current, newest)
        applied = []
        for migration in migrations:
            if current < migration.version <= target:
                migration.module.up(migrator, db)
                db.execute_sql(record, (migration.version, migration.name, time.time()))
                applied.append(migration.name)
        if applied and dialect.name == "postgresql":
            _widen_text_columns(db)
        return applied

    return write(db, apply, dialect)


def _widen_text_columns(db: peewee.Database) -> None:
    """PostgreSQL: every ``VARCHAR(n)`` column of the store becomes ``TEXT`` (in place: the
    two are stored alike, so no row is rewritten).
    """
    ours = {model._meta.table_name for model in t.ALL_TABLES}
    columns = db.execute_sql(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND data_type = 'character varying' "
        "ORDER BY table_name, ordinal_position").fetchall()
    for table, column in columns:
        if table not in ours:
            continue  # (not the store's: the database may hold other things)
        db.execute_sql(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE TEXT')
