"""What every section of the store stands on: one opened database with its dialect, the
settings it was opened with, and the helpers each section writes and reads through.

The sections (:mod:`.tasks`, :mod:`.outputs`, :mod:`.runs`, :mod:`.queues`) each subclass
:class:`StoreBase`; :class:`pipekit.store.Store` combines them. Nothing here knows a table
beyond ``project``, whose ids every section that files things under a project needs.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import peewee

import pipekit.store.migrate as migrate
import pipekit.store.statements as sql
import pipekit.store.tables as t

from ..config import Settings, get_settings, redact_url
from ..errors import ForkedHandleError, LeaseLost, StoreError, StoreTooNew
from ..models import Lease
from .blobs import BlobStore
from .db import open_database, read_schema_version, write
from .postgres import PostgresDatabase
from .postgres import integrity_check as postgres_integrity_check
from .remote import RemoteBlobStore

T = TypeVar("T")

__all__ = ["StoreBase", "new_id"]


def new_id() -> str:
    """A fresh task or model id: 32 lower-case hex digits."""
    return uuid.uuid4().hex


class StoreBase:
    """One opened store: a database and its ``artifacts/`` and ``logs/`` folders.

    :param settings: where the store is (default: the current :func:`~pipekit.config.get_settings`).
    :param upgrade: apply pending migrations (and sweep unfinished blob writes) on opening.
    :raises StoreTooNew: the store was written by a newer pipekit.
    """

    def __init__(self, settings: Settings | None = None, *, upgrade: bool = True) -> None:
        self.settings = settings or get_settings()
        self._pid = os.getpid()
        #: the database URL, its password masked
        self.location = redact_url(self.settings.db_url)
        sqlite_path = self.settings.sqlite_path
        home = self.settings.home
        if home.exists() and not home.is_dir():
            raise StoreError(f"PIPEKIT_HOME={home} is a file, not a folder: point it at a "
                             "folder (one that does not exist yet is created)")
        try:
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"cannot create the store's folder PIPEKIT_HOME={home}: "
                             f"{exc.strerror}") from exc
        #: the store's files cannot be written: it opens for reading, and writes are refused
        self.read_only = sqlite_path is not None and sqlite_path.exists() and not (
            os.access(sqlite_path, os.W_OK) and os.access(home, os.W_OK))
        if sqlite_path is not None:
            # Refuse a newer store before the first write-capable connection touches it.
            found = read_schema_version(sqlite_path, read_only=self.read_only)
            newest = migrate.newest_version()
            if found is not None and found > newest:
                raise StoreTooNew(str(sqlite_path), found, newest)
            if self.read_only and (found or 0) < newest:
                raise StoreError(f"the store {sqlite_path} is read-only and needs an upgrade "
                                 f"this pipekit cannot write (schema {found or 0}, this pipekit "
                                 f"uses {newest}): open it once where it is writable")
        self.db, self.dialect = open_database(self.settings, read_only=self.read_only)
        if sqlite_path is None:
            self._refuse_newer_server_store()
        t.proxy.initialize(self.db)
        self.blobs = (BlobStore(self.settings.artifacts_dir)
                      if self.settings.artifacts_url is None else
                      RemoteBlobStore(self.settings.artifacts_url, self.settings.artifacts_dir))
        self._projects: dict[str, int] = {}
        if upgrade and not self.read_only:
            self.upgrade()
            self.blobs.sweep_tmp()

    def _refuse_newer_server_store(self) -> None:
        """A database server's store: connect now (a wrong URL is one clear error here, not
        a traceback later) and refuse it, untouched, if a newer pipekit wrote it.
        """
        try:
            found = migrate.current_version(self.db)
        except Exception as exc:
            self.db.close()
            if not isinstance(exc, peewee.DatabaseError | peewee.InterfaceError):
                raise
            text = str(exc).strip()
            raise StoreError(f"cannot connect to the store {self.location}: "
                             f"{text.splitlines()[0] if text else type(exc).__name__}"
                             ) from exc
        newest = migrate.newest_version()
        if found > newest:
            self.db.close()
            raise StoreTooNew(self.location, found, newest)

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def where(self) -> str:
        """The store as its users know it: the SQLite file, or the database URL without its
        password.
        """
        path = self.settings.sqlite_path
        return str(path) if path is not None else self.location

    def _check(self) -> None:
        if os.getpid() != self._pid:
            raise ForkedHandleError(
                f"store handle opened in process {self._pid} used in process {os.getpid()}; "
                "call pipekit.store.get_store() in the new process instead"
            )

    def write(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in one short write transaction (``BEGIN IMMEDIATE`` on SQLite), retried
        whole when the database reports contention; returns what ``fn`` returns.
        """
        self._check()
        if self.read_only:
            raise StoreError(f"the store {self.where} is read-only: this needs to write to it "
                             "(ls, show, logs and export only read)")
        return write(self.db, fn, self.dialect)

    def upgrade(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""
        self._check()
        return migrate.upgrade(self.db, self.dialect, self.location)

    def schema_status(self) -> migrate.SchemaStatus:
        """Where the store's schema stands against the migrations this pipekit knows."""
        self._check()
        return migrate.status(self.db, self.location)

    def close(self) -> None:
        """Close this process's connection (a handle from another process is left alone); on
        PostgreSQL the pool's idle connections too.
        """
        if os.getpid() != self._pid:
            return
        if not self.db.is_closed():
            self.db.close()
        if isinstance(self.db, PostgresDatabase):
            self.db.close_idle()

    def integrity_check(self) -> str:
        """The database's own consistency check: ``"ok"``, or what it found wrong."""
        return self.check_database()[0]

    def check_database(self) -> tuple[str, str]:
        """The database's own consistency check: ``("ok" or what it found wrong, what was
        checked)``. SQLite runs ``PRAGMA integrity_check``; PostgreSQL reads every row and,
        with the ``amcheck`` extension, verifies the indexes
        (:func:`pipekit.store.postgres.integrity_check`).
        """
        self._check()
        if isinstance(self.db, PostgresDatabase):
            return postgres_integrity_check(self.db)
        return (self.db.execute_sql(self.dialect.integrity_check).fetchone()[0],
                self.dialect.integrity_check)

    # -- helpers for the sections -----------------------------------------------------------

    def _sql(self, statement: str, params: Sequence[Any] = ()) -> Any:
        """Run one of the hot-path statements of :mod:`.statements`; returns the cursor."""
        return self.db.execute_sql(self.dialect.sql(statement), params)

    def _fence(self, task_id: str, lease: Lease | None) -> None:
        """Inside a write: refuse it unless ``lease`` (if any) is still the task's current
        claim (on PostgreSQL the claim's row stays locked to the end of the transaction, so
        a reaper cannot take it away in between).

        :raises LeaseLost: it is not.
        """
        if lease is not None and not self._lease_held(task_id, lease):
            raise LeaseLost(task_id, lease)

    def _lease_held(self, task_id: str, lease: Lease) -> bool:
        """Inside a write: whether ``lease`` is the task's current claim (the row locked)."""
        return self._sql(sql.LEASE_HELD + self.dialect.row_lock,
                         (task_id, lease.worker, lease.attempt)).fetchone() is not None

    def _announce_work(self, queue: str) -> None:
        """Inside a write: tell listening agents that a task waits on ``queue`` (delivered
        when the transaction commits; nothing on SQLite, whose agents poll).
        """
        if self.dialect.notify is not None:
            self._sql(self.dialect.notify, (queue,))

    def _project_id(self, name: str) -> int:
        """The id of project ``name``, created if new (call inside a write transaction)."""
        # Projects are never deleted, so an id once seen committed stays valid. An id this
        # transaction inserts is not cached: a rollback would leave the cache pointing nowhere.
        project_id = self._projects.get(name)
        if project_id is not None:
            return project_id
        row = self._sql(sql.SELECT_PROJECT, (name,)).fetchone()
        if row is not None:
            self._projects[name] = row[0]
            return row[0]
        self._sql(sql.INSERT_PROJECT, (name, time.time()))
        return self._sql(sql.SELECT_PROJECT, (name,)).fetchone()[0]
