"""What differs between the databases the store runs on, in one small frozen object.

:func:`dialect_for` picks the dialect from the peewee database class when the database opens
(:func:`pipekit.store.db.open_database`). Everything else in the store is written once, for
both: the queries peewee builds are already portable, and the hand-written statements of
:mod:`.statements` use ``?`` placeholders that :meth:`Dialect.sql` rewrites.

What differs:

* **begin mode** of a write transaction. SQLite needs ``BEGIN IMMEDIATE`` so that writers
  queue for the lock instead of failing to upgrade a read lock (DESIGN §2); PostgreSQL takes
  row locks as it goes, so a plain ``BEGIN`` (READ COMMITTED) is right.
* **placeholders**: ``?`` (sqlite3) or ``%s`` (psycopg).
* **integrity check**: SQLite's ``PRAGMA integrity_check``; PostgreSQL has no equivalent
  without extensions (``amcheck``), so a query that answers ``ok`` when the server does.
* **which errors mean "retry the whole transaction"**: SQLite's ``database is locked`` /
  BUSY; PostgreSQL's serialization failure (SQLSTATE 40001), deadlock (40P01) and lock not
  available (55P03), found on the driver's exception that peewee wraps.
* **the queue claim**: PostgreSQL locks the chosen queue entry with ``FOR UPDATE SKIP
  LOCKED`` so concurrent claimers take different entries; under SQLite the IMMEDIATE
  transaction already serializes claimers.

This module must not open connections or import a database driver.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cache
from typing import Any

import attrs
import peewee

import pipekit.store.statements as statements

from ..errors import StoreError

__all__ = ["POSTGRESQL", "SQLITE", "Dialect", "dialect_for"]


@attrs.frozen
class Dialect:
    """The facts about one kind of database that the store's code depends on."""

    #: ``"sqlite"`` or ``"postgresql"``
    name: str
    #: the lock mode given to ``db.atomic()`` for a write (``None``: the database's default)
    begin: str | None
    #: the DB-API placeholder of the driver
    param: str
    #: a statement whose one row's first column is ``"ok"`` for a healthy database
    integrity_check: str
    #: lower-case fragments of an error message that mean "busy, retry the transaction"
    busy_messages: tuple[str, ...] = ()
    #: SQLSTATE codes that mean "retry the transaction"
    retry_sqlstates: tuple[str, ...] = ()
    #: appended to the claim ``SELECT`` to lock the chosen queue entry
    claim_lock: str = ""

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
        # peewee re-raises the driver's exception as its own, keeping the original as ``orig``
        # (and as the context it was raised in)
        for candidate in (getattr(exc, "orig", None), exc.__cause__, exc.__context__):
            code = getattr(candidate, "pgcode", None) or getattr(candidate, "sqlstate", None)
            if code in self.retry_sqlstates:
                return True
        return False


SQLITE = Dialect(
    name="sqlite",
    begin="IMMEDIATE",
    param="?",
    integrity_check="PRAGMA integrity_check",
    busy_messages=("database is locked", "database is busy"),
)

POSTGRESQL = Dialect(
    name="postgresql",
    begin=None,
    param="%s",
    integrity_check="SELECT 'ok'",
    # serialization_failure, deadlock_detected, lock_not_available
    retry_sqlstates=("40001", "40P01", "55P03"),
    claim_lock=" FOR UPDATE OF e SKIP LOCKED",
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


@cache
def _placeholders(statement: str, param: str) -> str:
    return statement.replace("?", param)


@cache
def _claim(n_queues: int, lock: str, param: str) -> str:
    statement = statements.claim(n_queues) + lock
    return statement if param == "?" else _placeholders(statement, param)
