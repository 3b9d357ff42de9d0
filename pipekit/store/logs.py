"""Task logs: where each one is written, and the copy kept in a shared database.

A task's output is always appended to a file on the machine that runs it
(``PIPEKIT_HOME/logs/<task id>.log``): cheap, and readable while the task runs. When machines
share the store through a database server, that file is on one machine only, so the bytes are
copied into the database as they are written (:meth:`LogStore.ship_log`, called by
:func:`pipekit.capture.ship_while_open` every half second and once more by
:func:`pipekit.finish.finish_task`), and :meth:`LogStore.read_log` reads them from there on
every machine. On SQLite, whose processes all share one machine, the file is the log.

A copy is a compare-and-set: a chunk goes in only at the end of what its file (``source``)
has shipped so far, so processes copying the same file race harmlessly, and a file read
happens before the short write transaction, never inside it.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import attrs

import pipekit.store.statements as sql

from .base import StoreBase

__all__ = ["LogRead", "LogStore"]

#: the most bytes one shipped chunk holds
SHIP_CHUNK = 1 << 20


@attrs.frozen
class LogRead:
    """Bytes of a task's log from some offset, and how long the log is now."""

    data: bytes
    size: int


class LogStore(StoreBase):
    """Task logs: the local file, and its copy in a shared database."""

    def log_path(self, task_id: str) -> Path:
        """The task's log file (created with its folder, mode 0600, on first write)."""
        return self.settings.logs_dir / f"{task_id}.log"

    def ship_log(self, task_id: str) -> int:
        """Copy the bytes this machine's log file of ``task_id`` gained since the last copy
        into the database (a shared store only); returns how many were copied.
        """
        if not self.settings.shared or self.read_only:
            return 0
        self._check()
        path = self.log_path(task_id)
        source = f"{socket.gethostname()}:{path}"
        copied = 0
        for _ in range(64):  # bounded: a file that grows without end is copied next time
            shipped = int(self._sql(sql.SHIPPED_END, (task_id, source)).fetchone()[0])
            try:
                with open(path, "rb") as fh:
                    fh.seek(shipped)
                    data = fh.read(SHIP_CHUNK)
            except FileNotFoundError:
                return copied
            if not data:
                return copied
            row = (task_id, source, shipped, len(data), data, time.time())
            inserted = self.write(lambda row=row: self._sql(sql.INSERT_LOG_CHUNK, row).rowcount)
            if inserted:  # else another process copied from there first: read its end again
                copied += len(data)
        return copied

    def read_log(self, task_id: str, offset: int = 0, limit: int | None = None) -> LogRead:
        """Up to ``limit`` bytes (all, by default) of the task's log from byte ``offset``.

        From the database when it holds a copy of the log (a shared store), else from this
        machine's log file; a task with no log reads as empty.
        """
        self._check()
        if self.settings.shared:
            read = self._read_chunks(task_id, offset, limit)
            if read is not None:
                return read
        try:
            with open(self.log_path(task_id), "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(min(offset, size))
                return LogRead(fh.read() if limit is None else fh.read(limit), size)
        except FileNotFoundError:
            return LogRead(b"", 0)

    def _read_chunks(self, task_id: str, offset: int, limit: int | None) -> LogRead | None:
        sizes = self._sql(sql.LOG_CHUNK_SIZES, (task_id,)).fetchall()
        if not sizes:
            return None
        total = sum(size for _, size in sizes)
        end = total if limit is None else min(total, offset + limit)
        wanted: list[tuple[int, int]] = []  # (chunk id, where it starts in the log)
        at = 0
        for chunk_id, size in sizes:
            if at + size > offset and at < end:
                wanted.append((chunk_id, at))
            at += size
        if not wanted:
            return LogRead(b"", total)
        starts = dict(wanted)
        parts = []
        for chunk_id, data in self._sql(sql.LOG_CHUNK_DATA,
                                        (task_id, wanted[0][0], wanted[-1][0])):
            if chunk_id in starts:
                start = starts[chunk_id]
                data = bytes(data)
                parts.append(data[max(0, offset - start):max(0, end - start)])
        return LogRead(b"".join(parts), total)
