"""The frozen vocabulary shared by every layer and handed to hooks.

These are values, not handles: the store returns them, hooks receive them, and nothing here
does I/O. Plugins may rely on every field; fields may be added, never renamed or dropped.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any

import attrs

from .errors import InvalidName


class Status(str, enum.Enum):
    """A task's status, as ClearML names them."""

    created = "created"
    queued = "queued"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    stopped = "stopped"
    published = "published"

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({Status.completed, Status.failed, Status.stopped, Status.published})

#: status -> the statuses a task may move to from it. A final status only moves on by an
#: explicit reset (``created``, e.g. before re-enqueueing a failed task) or publishing.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.created: frozenset({Status.queued, Status.in_progress, Status.stopped,
                               Status.failed, Status.completed}),
    Status.queued: frozenset({Status.in_progress, Status.created, Status.stopped,
                              Status.failed}),
    Status.in_progress: frozenset({Status.completed, Status.failed, Status.stopped}),
    Status.completed: frozenset({Status.published, Status.created}),
    Status.failed: frozenset({Status.created, Status.queued}),
    Status.stopped: frozenset({Status.created, Status.queued}),
    Status.published: frozenset(),
}


def sources_of(target: Status) -> frozenset[Status]:
    """Every status from which ``target`` may be reached."""
    return frozenset(s for s, nexts in TRANSITIONS.items() if target in nexts)


class TaskType(str, enum.Enum):
    training = "training"
    testing = "testing"
    inference = "inference"
    data_processing = "data_processing"
    application = "application"
    monitor = "monitor"
    controller = "controller"
    optimizer = "optimizer"
    service = "service"
    qc = "qc"
    custom = "custom"

    def __str__(self) -> str:
        return self.value


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(kind: str, name: object) -> str:
    """Return ``name`` if it is safe to use where a name becomes part of a path.

    :raises InvalidName: naming ``kind`` and the offending value.
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in {".", ".."}:
        raise InvalidName(kind, name)
    return name


#: ``script["kind"]`` of a task whose code is a Python function (:mod:`pipekit.functions`)
FUNCTION_KIND = "function"


@attrs.frozen
class TaskInfo:
    """One task as stored."""

    id: str
    project: str
    name: str
    type: str
    status: str
    status_reason: str = ""
    parent: str | None = None
    script: dict[str, Any] = attrs.field(factory=dict)
    code_digest: str | None = None
    created: float | None = None
    started: float | None = None
    ended: float | None = None
    last_update: float | None = None
    worker: str | None = None
    tags: tuple[str, ...] = ()
    archived: bool = False
    comment: str = ""
    log_path: str | None = None
    log_size: int = 0
    #: the login name of who created it (``None`` when the system has none)
    user: str | None = None

    @property
    def is_function(self) -> bool:
        """Whether the task calls a Python function (in the executing process) rather than
        running a script as a child process.
        """
        return self.script.get("kind") == FUNCTION_KIND


@attrs.frozen
class ParamInfo:
    """One parameter: ``section/name`` holding a string ``value`` of original ``type``."""

    section: str
    name: str
    value: str
    type: str = "str"
    description: str = ""

    @property
    def key(self) -> str:
        return f"{self.section}/{self.name}"


@attrs.frozen
class ObjectRef:
    """Where a serialized value lives: inline bytes in the database, or a blob by digest."""

    digest: str
    size: int
    serializer: str
    type: str
    filename: str
    inline: bytes | None = None


@attrs.frozen
class ArtifactInfo:
    task: str
    name: str
    ref: ObjectRef
    metadata: dict[str, Any] = attrs.field(factory=dict)
    preview: str = ""
    created: float | None = None


@attrs.frozen
class ModelInfo:
    id: str
    task: str
    name: str
    ref: ObjectRef
    framework: str | None = None
    created: float | None = None


@attrs.frozen
class QueueInfo:
    """A queue: how many of its tasks wait, how many run, how many live agents serve it."""

    name: str
    pending: int = 0
    running: int = 0
    agents: int = 0


@attrs.frozen
class Lease:
    """Who holds a claimed task, and which attempt: the fencing token. Results are committed
    only while the task's queue entry still names this worker and attempt.
    """

    worker: str
    attempt: int

    def __str__(self) -> str:
        return f"{self.worker}#{self.attempt}"


@attrs.frozen
class Claim:
    """A task an agent took from ``queue`` under ``lease`` (expiring at ``expires``)."""

    task: TaskInfo
    queue: str
    lease: Lease
    expires: float | None = None


@attrs.frozen
class Reaped:
    """What the reaper did with a task whose lease expired: ``requeued`` or ``failed``."""

    task: str
    action: str
    lease: Lease
    reason: str


@attrs.frozen
class AgentInfo:
    """One ``pipekit agent`` process as it last reported itself."""

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    workers: int
    started: float
    heartbeat: float
    tasks: tuple[str, ...] = ()
    state: str = "running"


@attrs.frozen
class ScalarPoint:
    title: str
    series: str
    iteration: int
    value: float


@attrs.frozen
class ReportInfo:
    """One report of a task besides its scalars: a line of text, a table or a plot.

    :param kind: ``"text"``, ``"table"`` or ``"plot"`` (histograms, scatters, matrices and
        images: ``pipekit.plots``).
    :param content: the text; a table's or a plot's record as JSON.
    :param iteration: the iteration it was reported at, if any.
    :param created: when it was stored (seconds since the epoch).
    """

    task: str
    kind: str
    title: str
    series: str
    iteration: int | None
    content: str
    created: float

    @property
    def data(self) -> Any:
        """``content`` parsed: a table's or plot's JSON as Python values; a text as is."""
        return self.content if self.kind == "text" else json.loads(self.content)


@attrs.frozen
class Job:
    """Execute task ``task_id`` (the task of step ``step``, if any): what executors get.

    :param queue: the queue the step asked for (remote mode), for executors that use one.
    """

    task_id: str
    step: str = ""
    queue: str | None = None


@attrs.frozen
class Outcome:
    """How a job ended: the task's final status and why."""

    status: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (Status.completed.value, Status.published.value)


@attrs.frozen
class RunRecord:
    """A pipeline run as stored: controller task ``id`` runs ``dag``
    (:meth:`pipekit.dag.Dag.to_dict`), recorded under ``version`` once it has one.

    :param origin: the run this one is a rerun (clone) of, if any.
    :param created: when the run was recorded (its controller task may be older).
    """

    id: str
    version: str | None
    structure_hash: str | None
    origin: str | None
    dag: dict[str, Any]
    created: float
    #: ``host:pid`` of the controller process that drives the run, and its last heartbeat
    owner: str | None = None
    heartbeat: float | None = None


@attrs.frozen
class RunSummary:
    """A run as listed: its controller task's fields plus the run's version and origin."""

    id: str
    project: str
    name: str
    status: str
    status_reason: str
    parent: str | None
    created: float
    started: float | None
    ended: float | None
    version: str | None
    structure_hash: str | None
    origin: str | None
    owner: str | None = None
    heartbeat: float | None = None
    #: ``in_progress`` with no controller heartbeat for a lease TTL: nobody drives it
    controller_lost: bool = False


@attrs.frozen
class NodeRecord:
    """One node of a stored run: its status on the run's DAG and the task that ran it.

    :param status: a task status, or ``pending``, ``skipped`` or ``cached``.
    :param attempt: how many retries the node's latest task is (0 for the first try).
    """

    name: str
    task: str | None
    status: str
    parents: list[str]
    cache_key: str | None
    attempt: int
    started: float | None
    ended: float | None


@attrs.frozen
class PipelineRecord:
    """One recorded version of a pipeline, with how many runs it has and the last one's time."""

    project: str
    name: str
    version: str
    structure_hash: str
    created: float
    runs: int
    last_run: float | None


@attrs.frozen
class CacheEntry:
    """A task that can serve a step-cache hit for ``key``."""

    key: str
    task: str
    project: str
    name: str
    status: str
    ended: float | None
