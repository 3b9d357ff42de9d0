"""The hot-path statements, written once as SQL.

peewee's query builder costs ~10x SQLite itself on the per-step path (PERFORMANCE.md), so
the few statements every step runs are kept here as parameterised SQL. The tables stay
defined in :mod:`tables`; every statement here runs in the store tests, so a column that
drifts from the schema fails them.
Placeholders are ``?``; :meth:`pipekit.store.dialect.Dialect.sql` rewrites them for
PostgreSQL's ``%s``. Statements here are plain SQL both databases run: a column whose name is
a reserved word in PostgreSQL (``user``) is quoted, and every column a grouped query selects
is grouped by.
"""

from __future__ import annotations

from functools import cache

TASK_COLUMNS = ("id", "project_id", "name", "type", "status", "status_reason", "parent",
                "script", "code_digest", "code", "created", "started", "last_update", "tags",
                "log_path", "archived", "comment", "log_size", "cache_key", '"user"')

INSERT_TASK = (f"INSERT INTO task ({', '.join(TASK_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(TASK_COLUMNS))})")

#: What a ``TaskInfo`` is read from, in its field order (``p.`` is the project table).
TASK_INFO_COLUMNS = ("t.id", "p.name", "t.name", "t.type", "t.status", "t.status_reason",
                     "t.parent", "t.script", "t.code_digest", "t.created", "t.started",
                     "t.ended", "t.last_update", "t.worker", "t.tags", "t.archived",
                     "t.comment", "t.log_path", "t.log_size", 't."user"')

SELECT_TASK = (f"SELECT {', '.join(TASK_INFO_COLUMNS)} "
               "FROM task t JOIN project p ON p.id = t.project_id WHERE t.id = ?")

TASK_EXISTS = "SELECT 1 FROM task WHERE id = ?"

SELECT_TAGS = "SELECT tags FROM task WHERE id = ?"
SELECT_STATUS = "SELECT status FROM task WHERE id = ?"

SELECT_PROJECT = "SELECT id FROM project WHERE name = ?"
INSERT_PROJECT = "INSERT INTO project (name, created) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"

UPSERT_PARAMETER = (
    "INSERT INTO parameter (task_id, section, name, value, type, description) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (task_id, section, name) DO UPDATE SET "
    "value = excluded.value, type = excluded.type, description = excluded.description"
)

UPSERT_ARTIFACT = (
    "INSERT INTO artifact (task_id, name, digest, size, serializer, type, filename, inline, "
    "metadata, preview, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (task_id, name) DO UPDATE SET digest = excluded.digest, "
    "size = excluded.size, serializer = excluded.serializer, type = excluded.type, "
    "filename = excluded.filename, inline = excluded.inline, metadata = excluded.metadata, "
    "preview = excluded.preview, created = excluded.created"
)

SELECT_ARTIFACT = ("SELECT name, digest, size, serializer, type, filename, inline, metadata, "
                   "preview, created FROM artifact WHERE task_id = ? AND name = ?")

SELECT_PARAMETERS = ("SELECT section, name, value, type, description FROM parameter "
                     "WHERE task_id = ? ORDER BY id")

#: the newest reusable task with a cache key (SPEC §3: completed or published, not archived)
SELECT_CACHED = ("SELECT id FROM task WHERE cache_key = ? AND status IN ('completed', "
                 "'published') AND archived = ? ORDER BY ended DESC, id LIMIT 1")

#: the objects a task's artifacts keep as files (inline ones live in their rows)
SELECT_ARTIFACT_FILES = "SELECT digest FROM artifact WHERE task_id = ? AND inline IS NULL"

#: ``(kind, name, digest, inline)`` of every object a task's artifacts and models point at
SELECT_OUTPUT_OBJECTS = ("SELECT 'artifact', name, digest, inline FROM artifact WHERE task_id = ? "
                         "UNION ALL SELECT 'model', name, digest, inline FROM model "
                         "WHERE task_id = ?")

TOUCH_TASK = "UPDATE task SET last_update = ? WHERE id = ?"

#: ``(title, series, min, max, last)`` of a task's scalars; "last" is at the highest iteration
#: a task's scalars grouped into charts, each series by iteration (the index's order)
SCALAR_COLUMNS = ("SELECT title, series, iteration, value FROM scalar WHERE task_id = ? "
                  "ORDER BY title, series, iteration, id")
COUNT_SCALARS = "SELECT COUNT(*) FROM scalar WHERE task_id = ?"

LAST_SCALARS = (
    "SELECT title, series, MIN(value), MAX(value), "
    "(SELECT s2.value FROM scalar s2 WHERE s2.task_id = s.task_id "
    " AND s2.title = s.title AND s2.series = s.series "
    " ORDER BY s2.iteration DESC, s2.id DESC LIMIT 1) "
    "FROM scalar s WHERE task_id = ? GROUP BY task_id, title, series"
)

#: ``(entry id, task id, worker, attempt, max attempts, queue)`` of each expired lease of a
#: running task; a dialect appends its row lock, so that two reapers take different ones
EXPIRED_LEASES = ("SELECT e.id, e.task_id, e.worker, e.attempt, e.max_attempts, q.name "
                  "FROM queue_entry e JOIN task t ON t.id = e.task_id "
                  "JOIN queue q ON q.id = e.queue_id "
                  "WHERE e.lease_expires < ? AND t.status = 'in_progress' ORDER BY e.id")

#: the queue a task's entry is on
QUEUE_OF_TASK = ("SELECT q.name FROM queue_entry e JOIN queue q ON q.id = e.queue_id "
                 "WHERE e.task_id = ?")

#: a claimed entry: who took it, which attempt this is, until when the lease holds
CLAIM_ENTRY = ("UPDATE queue_entry SET worker = ?, attempt = attempt + 1, lease_expires = ? "
               "WHERE id = ?")


@cache
def set_status(fields: tuple[str, ...], n_sources: int) -> str:
    """``UPDATE task SET <fields> WHERE id = ? [AND status IN (<n_sources>)]``."""
    sets = ", ".join(f"{f} = ?" for f in fields)
    where = f" AND status IN ({', '.join('?' * n_sources)})" if n_sources else ""
    return f"UPDATE task SET {sets} WHERE id = ?{where}"


#: appended to a status or output write made under a lease: it lands only while the task's
#: queue entry still names the same worker and attempt (the fencing check)
FENCE = (" AND EXISTS (SELECT 1 FROM queue_entry WHERE queue_entry.task_id = ? "
         "AND queue_entry.worker = ? AND queue_entry.attempt = ?)")
RUN_OWNER = "SELECT owner FROM run WHERE task_id = ?"
LEASE_HELD = ("SELECT 1 FROM queue_entry WHERE task_id = ? AND worker = ? AND attempt = ?")
EXTEND_LEASE = ("UPDATE queue_entry SET lease_expires = ? WHERE task_id = ? AND worker = ? "
                "AND attempt = ? AND task_id IN (SELECT id FROM task WHERE status = 'in_progress')")


@cache
def update_node(fields: tuple[str, ...]) -> str:
    """``UPDATE node SET <fields> WHERE run_id = ? AND name = ?``."""
    sets = ", ".join(f"{f} = ?" for f in fields)
    return f"UPDATE node SET {sets} WHERE run_id = ? AND name = ?"


@cache
def claim(n_queues: int) -> str:
    """``(entry id, task id, queue name)`` of the next entry to claim from ``n_queues`` queues
    named by the parameters: the highest priority first, then the oldest. A dialect appends
    its row lock (:attr:`pipekit.store.dialect.Dialect.claim_lock`).
    """
    names = ", ".join("?" * n_queues)
    return ("SELECT e.id, e.task_id, q.name FROM queue_entry e "
            "JOIN queue q ON q.id = e.queue_id JOIN task t ON t.id = e.task_id "
            f"WHERE q.name IN ({names}) AND t.status = 'queued' "
            "ORDER BY e.priority DESC, e.enqueued, e.id LIMIT 1")

# -- logs copied into a shared database (LogStore.ship_log / read_log) ---------------------------

SHIPPED_END = ("SELECT COALESCE(MAX(\"offset\" + size), 0) FROM log_chunk "
               "WHERE task = ? AND source = ?")
INSERT_LOG_CHUNK = ('INSERT INTO log_chunk (task, source, "offset", size, data, ts) '
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
LOG_CHUNK_SIZES = "SELECT id, size FROM log_chunk WHERE task = ? ORDER BY id"
LOG_CHUNK_DATA = "SELECT id, data FROM log_chunk WHERE task = ? AND id >= ? AND id <= ? ORDER BY id"
HAS_LOG_CHUNKS = "SELECT 1 FROM log_chunk WHERE task = ? LIMIT 1"

# -- a dynamic run's nodes (RunStore.add_node / get_run) -----------------------------------------

UPSERT_NODE = ("INSERT INTO node (run_id, name, parents, status, attempt) "
               "VALUES (?, ?, ?, 'pending', 0) "
               "ON CONFLICT (run_id, name) DO UPDATE SET parents = excluded.parents")
SELECT_NODE_PARENTS = "SELECT name, parents FROM node WHERE run_id = ? ORDER BY id"
