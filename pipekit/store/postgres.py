"""What only a PostgreSQL store needs: its database class, listening for queued work, its
integrity check, and keeping connections from crossing ``fork()``.

A PostgreSQL store is shared by processes on many machines (DESIGN §2–§3). In each process:

* **a bounded pool**: peewee gives each thread its own connection; here they come from a pool
  of at most ``max_connections`` (default 16, ``?max_connections=N`` in the URL); a thread
  that needs one while all are in use waits up to ``timeout`` seconds (default 30). The
  connection of a thread that ended goes back to the pool (an agent starts a thread per task;
  peewee alone would keep each one open for ever).
* **reconnecting**: a connection the server dropped (a restart, ``pg_terminate_backend``, a
  network cut) is thrown away with the idle ones, and a read (a ``SELECT`` outside a
  transaction) is retried on a new one, for up to ``reconnect_window`` seconds (default 30)
  while the server comes back. A write transaction is retried whole by
  :func:`pipekit.store.db.write`. Only a store that connected once reconnects: a wrong URL
  fails at once.
* **listening**: :class:`WorkListener` listens on a connection of its own, outside
  the pool, so an idle agent wakes as soon as a task is queued (the transaction that queues
  it sends a ``NOTIFY``).
* **fork**: a child process must never talk on its parent's connections. Closing an inherited
  libpq connection sends the server a goodbye on the shared socket, which ends the *parent's*
  session; so right after ``fork()`` every connection this process holds is pointed at
  ``/dev/null`` before anything can close it, and forgotten.

The driver (psycopg2, the ``postgres`` extra) is imported only when a store connects. This
module knows no table of the store.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import select
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from playhouse.db_url import parse
from playhouse.pool import PooledPostgresqlDatabase

from .dialect import POSTGRESQL, WORK_CHANNEL

__all__ = ["PostgresDatabase", "WorkListener", "integrity_check", "open_postgres"]

log = logging.getLogger("pipekit.store")

#: connection settings a URL may override (``?max_connections=32&connect_timeout=5``)
DEFAULTS: Mapping[str, Any] = {
    "max_connections": 16,  # per process
    "timeout": 30,  # seconds a thread waits for a free pooled connection
    "connect_timeout": 10,  # seconds libpq waits for the server
    "application_name": "pipekit",
    # notice a server or network that vanished without closing the connection
    "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
}
#: statements retried on a new connection when the old one was lost: reads only
_READ = re.compile(r"\s*(SELECT|SHOW)\b", re.IGNORECASE)


def open_postgres(url: str) -> PostgresDatabase:
    """A (not yet connected) database for ``postgresql://user:password@host:port/name?…``.

    The query string sets connection options: the pool's (``max_connections``, ``timeout``),
    ``reconnect_window``, and any of libpq's (``sslmode``, ``connect_timeout`` …).
    """
    params = {**DEFAULTS, **parse(url, unquote_password=True, unquote_user=True)}
    database = params.pop("database")
    return PostgresDatabase(database, field_types=dict(POSTGRESQL.field_types), **params)


class PostgresDatabase(PooledPostgresqlDatabase):
    """peewee's pooled PostgreSQL database, made to survive lost connections and dead threads.

    :param reconnect_window: seconds a read or write keeps trying to reconnect.
    """

    def __init__(self, database: str, *, reconnect_window: float = 30.0,
                 **kwargs: Any) -> None:
        self.reconnect_window = float(reconnect_window)
        #: who checked each in-use connection out (by the pool's key)
        self._owners: dict[int, weakref.ref[threading.Thread]] = {}
        self._connected_once = False
        super().__init__(database, **kwargs)
        _OPEN.add(self)

    # -- the pool -----------------------------------------------------------------------------

    def _connect(self) -> Any:
        with self._pool_lock:
            self._reclaim()
            conn = super()._connect()
            self._owners[self.conn_key(conn)] = weakref.ref(threading.current_thread())
        self._connected_once = True
        return conn

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        with self._pool_lock:
            self._owners.pop(self.conn_key(conn), None)
            super()._close(conn, close_conn)

    def _reclaim(self) -> None:
        """Take back the connections of threads that ended (call under the pool lock)."""
        for key, pooled in list(self._in_use.items()):
            ref = self._owners.get(key)
            owner = ref() if ref is not None else None
            if owner is None or not owner.is_alive():
                self._close(pooled.connection)  # back to the pool, or closed if unusable

    def in_use(self) -> int:
        """How many connections threads of this process hold now (the pool's gauge)."""
        with self._pool_lock:
            self._reclaim()
            return len(self._in_use)

    # -- lost connections ---------------------------------------------------------------------

    def may_reconnect(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a lost connection that a new one may get past (only once this
        database has connected: a wrong address or password fails at once).
        """
        return self._connected_once and POSTGRESQL.connection_lost(exc)

    def drop_connection(self) -> None:
        """Throw away this thread's connection (never back to the pool) and the idle ones:
        when one was lost, the others probably were too (the server restarted).
        """
        with self._lock:
            conn = None if self._state.closed else self._state.conn
            self._state.reset()
        with self._pool_lock:
            if conn is not None:
                key = self.conn_key(conn)
                self._in_use.pop(key, None)
                self._owners.pop(key, None)
                self._close_raw(conn)
            self._pool_available.notify()
        self.close_idle()

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        if self.in_transaction() or not _READ.match(sql):
            return super().execute_sql(sql, params)
        deadline = None
        for attempt in itertools.count():
            try:
                return super().execute_sql(sql, params)
            except Exception as exc:
                if not self.may_reconnect(exc):
                    raise
                deadline = deadline or time.monotonic() + self.reconnect_window
                if time.monotonic() >= deadline:
                    raise
                log.warning("lost the connection to PostgreSQL (%s); reconnecting",
                            str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
                self.drop_connection()
                time.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    # -- fork ---------------------------------------------------------------------------------

    def _forget_inherited(self) -> None:
        """In a forked child: every connection is the parent's. Detach and forget them all."""
        conns = [conn for _, _, conn in self._connections]
        conns += [pooled.connection for pooled in self._in_use.values()]
        if not self._state.closed:
            conns.append(self._state.conn)
        for conn in conns:
            _detach(conn)
        # (locks another thread of the parent held at fork() would never be released here)
        self._lock = threading.Lock()
        self._pool_lock = threading.RLock()
        self._pool_available = threading.Condition(self._pool_lock)
        self._connections, self._in_use, self._owners = [], {}, {}
        self._state.reset()


def backoff(attempt: int) -> float:
    """Seconds to wait before reconnect attempt ``attempt + 1``: none at first (a dropped
    connection is usually replaced at once), then doubling up to one second.
    """
    return 0.0 if attempt == 0 else min(1.0, 0.05 * 2 ** (attempt - 1))


class WorkListener:
    """Call ``wake`` from a thread of its own soon after a task is queued on one of
    ``queues`` in any process (``LISTEN`` on a connection of its own, outside the pool).

    ``wake`` is also called after each (re)connection, since announcements made while nobody
    listened are lost; a caller that polls as well (the agent does) misses nothing while the
    server is away. :meth:`close` stops the thread and closes the connection.
    """

    def __init__(self, db: PostgresDatabase, queues: Iterable[str],
                 wake: Callable[[], None]) -> None:
        self._connect_params = {"dbname": db.database, **db.connect_params,
                                "application_name": "pipekit-listen"}
        self.queues = frozenset(queues)
        self._wake = wake
        self._stop = threading.Event()
        self._read_end, self._write_end = os.pipe()
        self._conn: Any = None
        #: set once the first ``LISTEN`` is in place (tests wait for it)
        self.listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipekit-listen", daemon=True)
        _LISTENERS.add(self)
        self._thread.start()

    def _run(self) -> None:
        import psycopg2  # lazy: the optional driver, needed only on PostgreSQL

        attempt = 0
        while not self._stop.is_set():
            try:
                self._conn = psycopg2.connect(**self._connect_params)
                self._conn.autocommit = True
                with self._conn.cursor() as cur:
                    cur.execute(f"LISTEN {WORK_CHANNEL}")
                attempt = 0
                self.listening.set()
                self._wake()  # whatever was queued before we listened
                self._listen()
            except psycopg2.Error as exc:
                log.debug("work listener: %s; reconnecting", exc)
                self._wake()  # the caller polls meanwhile
            finally:
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.close()
            attempt += 1
            self._stop.wait(max(0.1, backoff(attempt)))

    def _listen(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._conn, self._read_end], [], [], 30)
            if self._read_end in ready:
                return
            if not ready:
                continue
            self._conn.poll()
            payloads = {note.payload for note in self._conn.notifies}
            self._conn.notifies.clear()
            if payloads & self.queues or "" in payloads:
                self._wake()

    def close(self) -> None:
        """Stop listening (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        os.write(self._write_end, b"x")
        self._thread.join(timeout=10)
        os.close(self._read_end)
        os.close(self._write_end)

    def _forget_inherited(self) -> None:
        # In a forked child: the thread is gone, the connection is the parent's.
        self._stop.set()
        if self._conn is not None:
            _detach(self._conn)
            self._conn = None


def integrity_check(db: PostgresDatabase) -> tuple[str, str]:
    """PostgreSQL's nearest thing to SQLite's ``PRAGMA integrity_check``.

    Every row of every table in the store's schema is read, whole (a damaged page or TOAST
    value fails the read; so does a checksum, when the cluster has them), and, when the
    ``amcheck`` extension is installed in the database, every B-tree index of those tables
    is verified with ``bt_index_check``. Then a round trip answers ``ok``.

    :returns: ``("ok" or what failed, what was checked)``.
    """
    problems = []
    tables = db.get_tables()
    for table in tables:
        try:
            db.execute_sql(f'SELECT count(t) FROM "{table}" AS t').fetchone()
        except Exception as exc:  # report it, check the rest
            problems.append(f"table {table}: {_first_line(exc)}")
    how = f"{len(tables)} tables read in full"
    if db.execute_sql("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone():
        indexes = db.execute_sql(
            "SELECT c.oid, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_class r ON r.oid = i.indrelid JOIN pg_am a ON a.oid = c.relam "
            "WHERE a.amname = 'btree' AND r.relnamespace = current_schema()::regnamespace "
            "ORDER BY c.relname").fetchall()
        for oid, name in indexes:
            try:
                db.execute_sql("SELECT bt_index_check(%s)", (oid,)).fetchone()
            except Exception as exc:
                problems.append(f"index {name}: {_first_line(exc)}")
        how += f", {len(indexes)} indexes verified with amcheck"
    else:
        how += " (amcheck is not installed in the database: indexes not verified)"
    if problems:
        return "; ".join(problems), how
    return db.execute_sql(POSTGRESQL.integrity_check).fetchone()[0], how


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- fork -----------------------------------------------------------------------------------------

_OPEN: weakref.WeakSet[PostgresDatabase] = weakref.WeakSet()
_LISTENERS: weakref.WeakSet[WorkListener] = weakref.WeakSet()


def _detach(conn: Any) -> None:
    """Point ``conn``'s socket at ``/dev/null`` in this process, so that closing it here says
    nothing to the server (the parent's session on the same socket lives on).
    """
    try:
        fd = conn.fileno()
    except Exception:  # already closed
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def _after_fork_in_child() -> None:
    for db in list(_OPEN):
        db._forget_inherited()
    for listener in list(_LISTENERS):
        listener._forget_inherited()


# Registered when the store package is first imported, before pipekit.store's own hook (which
# drops the process's store): hooks run in registration order in the child.
os.register_at_fork(after_in_child=_after_fork_in_child)
