"""Opening the database the one right way, and writing to it in short IMMEDIATE transactions.

Rules (DESIGN §2): ``busy_timeout`` is set before WAL; every write is one short
``BEGIN IMMEDIATE`` transaction retried whole on BUSY; nothing slow (user code, file I/O,
network) runs inside a transaction; a connection never crosses ``fork()``. What differs on
PostgreSQL (begin mode, which errors to retry, a lost connection) comes from the
:mod:`.dialect` chosen here; its database class is in :mod:`.postgres`.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import peewee

from ..config import Settings, redact_url
from ..errors import StoreError
from .dialect import Dialect, dialect_for
from .postgres import PostgresDatabase, open_postgres
from .postgres import backoff as pg_backoff

log = logging.getLogger("pipekit.store")
T = TypeVar("T")

BUSY_TIMEOUT_MS = 60_000
SQLITE_PRAGMAS = [
    ("busy_timeout", BUSY_TIMEOUT_MS),  # first: every later pragma may need to wait
    ("journal_mode", "wal"),
    ("synchronous", "normal"),
    ("foreign_keys", 1),
    ("journal_size_limit", 64 * 1024 * 1024),
    ("cache_size", -16000),
]
WRITE_ATTEMPTS = 8


def open_database(settings: Settings, *, read_only: bool = False
                  ) -> tuple[peewee.Database, Dialect]:
    """A peewee database for ``settings.db_url`` and its dialect; SQLite files are created
    mode 0600.

    :param read_only: the SQLite file cannot be written (a read-only mount or permissions):
        open it as immutable, for reading only (WAL needs to write even to read).
    """
    path = settings.sqlite_path
    if path is None:
        try:
            import psycopg2  # noqa: F401 - lazy: the optional driver, checked for a clear error
        except ImportError as exc:
            raise StoreError(f"cannot open {redact_url(settings.db_url)}: PostgreSQL needs "
                             "the 'postgres' extra (pip install 'pipekit[postgres]')") from exc
        try:
            db = open_postgres(settings.db_url)
        except Exception as exc:
            raise StoreError(f"cannot open database {redact_url(settings.db_url)}: "
                             f"{exc}") from exc
        return db, dialect_for(db)
    if read_only:
        db = peewee.SqliteDatabase(f"file:{path}?{read_only_mode(path)}", uri=True,
                                   pragmas=[("query_only", 1)], check_same_thread=False)
        return db, dialect_for(db)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    db = peewee.SqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS,
                               timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    return db, dialect_for(db)


def write(db: peewee.Database, fn: Callable[[], T], dialect: Dialect) -> T:
    """Run ``fn`` in one write transaction (``BEGIN IMMEDIATE`` on SQLite), retried whole
    when the database reports contention (:meth:`Dialect.is_retryable`), or when the
    connection was lost before the transaction asked to commit
    (:meth:`Dialect.connection_lost`: the server restarted, the backend was killed).

    ``busy_timeout`` already waits for the lock; a retry only happens when SQLite gives up
    early (e.g. a WAL snapshot conflict), so the attempts back off with jitter. A lost
    connection is retried on a new one for the database's ``reconnect_window``.

    :raises StoreError: the disk is full; the database is read-only; or the connection was
        lost while committing, so whether the write landed is unknown (it is not retried: a
        retry could apply it twice).
    """
    lost_until = None
    for attempt in itertools.count(1):
        committing = False

        def body() -> T:
            nonlocal committing
            result = fn()
            committing = True
            return result

        try:
            with dialect.atomic(db):
                return body()
        except Exception as exc:
            if dialect.disk_full(exc):
                # (SQLite rolled the transaction back itself; the error peewee then raises,
                # "cannot rollback - no transaction is active", would hide why)
                raise StoreError(f"the disk is full: cannot write to the store "
                                 f"{_where(db)} (nothing was written; free some space and "
                                 "run the command again)") from exc
            if _read_only(exc):
                raise StoreError(f"the store {_where(db)} is read-only here: {exc}".strip()
                                 ) from exc
            if dialect.is_retryable(exc) and attempt < WRITE_ATTEMPTS:
                delay = min(0.5, 0.005 * 2 ** attempt) * (0.5 + random.random())
                log.debug("store busy (attempt %d), retrying in %.3fs", attempt, delay)
                time.sleep(delay)
                continue
            if not (isinstance(db, PostgresDatabase) and db.may_reconnect(exc)):
                raise
            db.drop_connection()
            if committing:
                raise StoreError(f"lost the connection to the store {_where(db)} while "
                                 "committing: the write may or may not have been applied "
                                 f"({exc})") from exc
            lost_until = lost_until or time.monotonic() + db.reconnect_window
            if time.monotonic() >= lost_until:
                raise
            log.warning("lost the connection to the store (%s); retrying the write", exc)
            time.sleep(pg_backoff(attempt - 1))
    raise AssertionError("unreachable")


def _where(db: peewee.Database) -> str:
    return str(db.database)


def _read_only(exc: BaseException) -> bool:
    # PostgreSQL's read_only_sql_transaction (a standby, or default_transaction_read_only)
    return getattr(getattr(exc, "orig", exc), "pgcode", None) == "25006"


def read_only_mode(path: Path) -> str:
    """How to open a SQLite store whose files cannot be written: ``mode=ro`` while its WAL
    index (``-shm``) exists (SQLite reads the log through it), else ``immutable=1`` (a
    store closed cleanly: everything is in the main file).

    :raises StoreError: a write-ahead log with no index: it cannot be read without writing.
    """
    if Path(f"{path}-shm").exists():
        return "mode=ro"
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size:
        raise StoreError(f"the store {path} is read-only and its last writes are still in "
                         f"{wal.name}, which cannot be read without writing: open it once "
                         "where it is writable")
    return "immutable=1"


def read_schema_version(path: Path, *, read_only: bool = False) -> int | None:
    """The highest applied migration of an existing SQLite store, read without writing.

    :param read_only: the file cannot be written (see :func:`open_database`).
    :returns: ``None`` when the file does not exist or holds no version table yet.
    """
    if not path.exists() or path.stat().st_size == 0:
        return None
    mode = read_only_mode(path) if read_only else "mode=ro"
    try:
        conn = sqlite3.connect(f"file:{path}?{mode}", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open store {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        row = conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
        ).fetchone()
        if row is None:
            return None
        (version,) = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return version
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a pipekit store: {exc}") from exc
    finally:
        conn.close()
