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
from urllib.parse import urlsplit, urlunsplit

import pipekit.store.migrate as migrate
import pipekit.store.statements as sql
import pipekit.store.tables as t

from ..config import Settings, get_settings
from ..errors import ForkedHandleError, LeaseLost, StoreError, StoreTooNew
from ..models import Lease
from .blobs import BlobStore
from .db import open_database, read_schema_version, write

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
        self.location = self.settings.db_url
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
        t.proxy.initialize(self.db)
        self.blobs = BlobStore(self.settings.artifacts_dir)
        self._projects: dict[str, int] = {}
        if upgrade and not self.read_only:
            self.upgrade()
            self.blobs.sweep_tmp()

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def where(self) -> str:
        """The store as its users know it: the SQLite file, or the database URL without its
        password.
        """
        path = self.settings.sqlite_path
        if path is not None:
            return str(path)
        parts = urlsplit(self.location)
        if parts.password is None:
            return self.location
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port
                                                              else "")
        return urlunsplit(parts._replace(netloc=netloc))

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
        """Close this process's connection (a handle from another process is left alone)."""
        if os.getpid() == self._pid and not self.db.is_closed():
            self.db.close()

    def integrity_check(self) -> str:
        """The database's own consistency check: ``"ok"``, or what it found wrong."""
        self._check()
        return self.db.execute_sql(self.dialect.integrity_check).fetchone()[0]

    # -- helpers for the sections -----------------------------------------------------------

    def _sql(self, statement: str, params: Sequence[Any] = ()) -> Any:
        """Run one of the hot-path statements of :mod:`.statements`; returns the cursor."""
        return self.db.execute_sql(self.dialect.sql(statement), params)

    def _fence(self, task_id: str, lease: Lease | None) -> None:
        """Inside a write: refuse it unless ``lease`` (if any) is still the task's current
        claim.

        :raises LeaseLost: it is not.
        """
        if lease is not None and self._sql(
                sql.LEASE_HELD, (task_id, lease.worker, lease.attempt)).fetchone() is None:
            raise LeaseLost(task_id, lease)

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
