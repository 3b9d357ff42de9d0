"""What differs between the databases the store runs on, in one small frozen object.

:func:`dialect_for` picks the dialect from the peewee database class when the database opens
(:func:`pipekit.store.db.open_database`). Everything else in the store is written once, for
both: the queries peewee builds are already portable, and the hand-written statements of
:mod:`.statements` use ``?`` placeholders that :meth:`Dialect.sql` rewrites.

What differs:

* **begin mode** of a write transaction. SQLite needs ``BEGIN IMMEDIATE`` so that writers
  queue for the lock instead of failing to upgrade a read lock (DESIGN §2); PostgreSQL takes
  row locks as it goes, so a plain ``BEGIN`` (READ COMMITTED) is right, and a transaction
  that reads a row to decide what to write locks it first (:attr:`Dialect.row_lock`).
* **placeholders**: ``?`` (sqlite3) or ``%s`` (psycopg).
* **column types**: peewee's ``FloatField`` is single precision (``REAL``) on PostgreSQL and
  its ``IntegerField`` 32 bits; the store wants what SQLite gives, 64-bit integers and
  doubles (POSIX timestamps need the precision), so PostgreSQL gets ``field_types``.
* **which errors mean "retry the whole transaction"**: SQLite's ``database is locked`` /
  BUSY; PostgreSQL's serialization failure (SQLSTATE 40001), deadlock (40P01) and lock not
  available (55P03), found on the driver's exception that peewee wraps.
* **which errors mean "the connection is gone"** (PostgreSQL only: a server restarted, a
  backend terminated, a network cut): the store reconnects and retries.
* **the queue claim**: PostgreSQL locks the chosen queue entry with ``FOR UPDATE SKIP
  LOCKED`` so concurrent claimers take different entries; under SQLite the IMMEDIATE
  transaction already serializes claimers.
* **the migration lock**: an IMMEDIATE transaction on SQLite; a transaction-scoped advisory
  lock on PostgreSQL (DDL there is transactional, so an upgrade is still one transaction).
* **waking idle agents**: on PostgreSQL the transaction that queues a task also sends a
  ``NOTIFY``; SQLite has no such thing, and agents poll.

This module must not open connections or import a database driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from functools import cache
from typing import Any

import attrs
import peewee

import pipekit.store.statements as statements

from ..errors import StoreError

__all__ = ["POSTGRESQL", "SQLITE", "WORK_CHANNEL", "Dialect", "dialect_for"]

#: the PostgreSQL channel a queued task is announced on; the payload is the queue's name
WORK_CHANNEL = "pipekit_work"


@attrs.frozen
class Dialect:
    """The facts about one kind of database that the store's code depends on."""

    #: ``"sqlite"`` or ``"postgresql"``
    name: str
    #: the lock mode given to ``db.atomic()`` for a write (``None``: the database's default)
    begin: str | None
    #: the DB-API placeholder of the driver
    param: str
    #: a statement whose one row's first column is ``"ok"`` for a healthy database (on
    #: PostgreSQL, after :func:`pipekit.store.postgres.integrity_check`'s own checks)
    integrity_check: str
    #: lower-case fragments of an error message that mean "busy, retry the transaction"
    busy_messages: tuple[str, ...] = ()
    #: SQLSTATE codes that mean "retry the transaction"
    retry_sqlstates: tuple[str, ...] = ()
    #: appended to the claim ``SELECT`` to lock the chosen queue entry
    claim_lock: str = ""
    #: appended to a ``SELECT`` of rows a write transaction then changes based on what it read
    #: (empty where the begin mode already serializes writers)
    row_lock: str = ""
    #: SQLSTATE codes (or their two-character classes) that mean "the connection is gone"
    lost_sqlstates: tuple[str, ...] = ()
    #: lower-case fragments of a driver message that mean "the connection is gone"
    lost_messages: tuple[str, ...] = ()
    #: what "the disk is full" looks like: SQLSTATE codes and lower-case message fragments
    full_sqlstates: tuple[str, ...] = ()
    full_messages: tuple[str, ...] = ()
    #: the first statement of an upgrade's transaction, taking the migration lock (empty:
    #: the begin mode already locks)
    migration_lock: str = ""
    #: announce that a task was queued on the queue named by the parameter (``None``: no one
    #: can listen; agents poll)
    notify: str | None = None
    #: peewee field type -> the column type this database gets for it
    field_types: tuple[tuple[str, str], ...] = ()

    def atomic(self, db: peewee.Database) -> AbstractContextManager[Any]:
        """A write transaction on ``db`` in this dialect's begin mode."""
        return db.atomic(self.begin) if self.begin else db.atomic()

    def sql(self, statement: str) -> str:
        """``statement`` (written with ``?`` placeholders) in the driver's placeholder style."""
        return statement if self.param == "?" else _placeholders(statement, self.param)

    def claim(self, n_queues: int) -> str:
        """The ``SELECT`` that picks the next entry to claim from ``n_queues`` queues:
        ``(entry id, task id, queue name)`` of the highest-priority, oldest entry whose task
        is still queued.
        """
        return _claim(n_queues, self.claim_lock, self.param)

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` (raised inside a write transaction) is contention that a retry of
        the whole transaction may get past.
        """
        if self.busy_messages:
            text = str(exc).lower()
            if text == "busy" or any(fragment in text for fragment in self.busy_messages):
                return True
        return any(code in self.retry_sqlstates for code in _sqlstates(exc))

    def connection_lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the connection to the server is gone (or could not be made),
        so that a new one may succeed where it failed.
        """
        if not (self.lost_sqlstates or self.lost_messages):
            return False
        for error in _chain(exc):
            code = _sqlstate(error)
            if code and (code in self.lost_sqlstates or code[:2] in self.lost_sqlstates):
                return True
            text = str(error).lower()
            if any(fragment in text for fragment in self.lost_messages):
                return True
        return False

    def disk_full(self, exc: BaseException) -> bool:
        """Whether ``exc``, or an error it was raised while handling, says the disk is full."""
        for error in _chain(exc):
            if _sqlstate(error) in self.full_sqlstates:
                return True
            text = str(error).lower()
            if any(fragment in text for fragment in self.full_messages):
                return True
        return False


SQLITE = Dialect(
    name="sqlite",
    begin="IMMEDIATE",
    param="?",
    integrity_check="PRAGMA integrity_check",
    busy_messages=("database is locked", "database is busy"),
    full_messages=("database or disk is full",),
)

POSTGRESQL = Dialect(
    name="postgresql",
    begin=None,
    param="%s",
    integrity_check="SELECT 'ok'",
    # serialization_failure, deadlock_detected, lock_not_available
    retry_sqlstates=("40001", "40P01", "55P03"),
    claim_lock=" FOR UPDATE OF e SKIP LOCKED",
    row_lock=" FOR UPDATE",
    # connection_exception (class 08), admin_shutdown, crash_shutdown, cannot_connect_now
    lost_sqlstates=("08", "57P01", "57P02", "57P03"),
    lost_messages=("server closed the connection", "connection already closed",
                   "terminating connection", "could not receive data from server",
                   "could not send data to server", "no connection to the server",
                   "ssl connection has been closed", "ssl syscall error",
                   # (re)connecting while the server restarts
                   "connection refused", "timeout expired", "could not connect to server",
                   "connection to server on socket", "the database system is starting up",
                   "the database system is shutting down",
                   "the database system is in recovery mode"),
    full_sqlstates=("53100",),  # disk_full
    # one lock per database, held to the end of the upgrade's transaction
    migration_lock="SELECT pg_advisory_xact_lock(7364652089113001)",
    notify=f"SELECT pg_notify('{WORK_CHANNEL}', ?)",
    field_types=(("FLOAT", "DOUBLE PRECISION"), ("DOUBLE", "DOUBLE PRECISION"),
                 ("INT", "BIGINT"), ("AUTO", "BIGSERIAL")),
)


def dialect_for(db: peewee.Database) -> Dialect:
    """The dialect of an (opened or not) peewee database, by its class.

    :raises StoreError: a database pipekit does not support (e.g. MySQL).
    """
    if isinstance(db, peewee.SqliteDatabase):
        return SQLITE
    if isinstance(db, peewee.PostgresqlDatabase):
        return POSTGRESQL
    raise StoreError(f"pipekit stores run on SQLite or PostgreSQL, not {type(db).__name__}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every error behind it: the driver's error peewee wrapped (``orig``), the
    cause, and the error it was raised while handling (a failed ROLLBACK hides the error that
    made it roll back).
    """
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 16:
        error = todo.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        for behind in (getattr(error, "orig", None), error.__cause__, error.__context__):
            if isinstance(behind, BaseException):
                todo.append(behind)


def _sqlstate(error: BaseException) -> str | None:
    # psycopg2 names it ``pgcode``, psycopg 3 ``sqlstate``
    return getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)


def _sqlstates(exc: BaseException) -> Iterator[str]:
    for error in _chain(exc):
        code = _sqlstate(error)
        if code:
            yield code


@cache
def _placeholders(statement: str, param: str) -> str:
    return statement.replace("?", param)


@cache
def _claim(n_queues: int, lock: str, param: str) -> str:
    statement = statements.claim(n_queues) + lock
    return statement if param == "?" else _placeholders(statement, param)
