"""Every exception pipekit raises on purpose, under one :class:`PipekitError` root.

Each subclass carries the object at fault (``.task``, ``.artifact``, ``.plugin`` …) and its
message names that object, so the CLI can print ``str(exc)`` as the one line a user sees.
Control-flow signals (skip a node, retry) are not errors and do not live here.
"""

from __future__ import annotations


class PipekitError(Exception):
    """Root of pipekit's errors; the CLI prints its message as one line and exits 1."""


# -- configuration ------------------------------------------------------------------------


class ConfigError(PipekitError, ValueError):
    """A setting (environment variable, ``configure()`` argument, config file) is invalid."""


# -- store ----------------------------------------------------------------------------------


class StoreError(PipekitError):
    """The store cannot be opened or used as asked."""


class StoreTooNew(StoreError):
    """The store was written by a newer pipekit; it is refused and left untouched."""

    def __init__(self, location: str, found: int, known: int) -> None:
        self.location, self.found, self.known = location, found, known
        super().__init__(
            f"store {location} has schema version {found}, newer than this pipekit knows "
            f"({known}); upgrade pipekit to open it (the store was not modified)"
        )


class ForkedHandleError(StoreError):
    """A store handle was used in a process other than the one that opened it."""


class NotFound(PipekitError, LookupError):
    """Base for lookups that found nothing."""


class TaskNotFound(NotFound):
    """:param where: the store that was searched (named in the message)."""

    def __init__(self, task_id: str, where: str | None = None) -> None:
        self.task = task_id
        super().__init__(f"unknown task {task_id!r}" + (f" in the store {where}" if where
                                                        else ""))


class TaskIdPrefixError(TaskNotFound):
    """An id prefix that names no single task: shorter than the minimum, or shared by several
    tasks. ``.prefix`` is it, ``.matches`` how many tasks start with it and ``.needed`` how
    many characters would tell them apart.
    """

    def __init__(self, prefix: str, matches: int, needed: int, minimum: int) -> None:
        self.task, self.prefix, self.matches, self.needed = prefix, prefix, matches, needed
        tasks = "1 task starts" if matches == 1 else f"{matches} tasks start"
        if len(prefix) < minimum:
            why = f"is too short ({tasks} with it)"
        else:
            why = f"is ambiguous ({tasks} with it)"
        NotFound.__init__(self, f"task id prefix {prefix!r} {why}: give at least {needed} "
                                "characters of the id")


class QueueNotFound(NotFound):
    def __init__(self, queue: str, known: list[str] | None = None) -> None:
        self.queue = queue
        hint = f" (known queues: {', '.join(known)})" if known else ""
        super().__init__(f"unknown queue {queue!r}{hint}")


class ArtifactNotFound(NotFound, KeyError):
    def __init__(self, task_id: str, name: str) -> None:
        self.task, self.artifact = task_id, name
        super().__init__(f"task {task_id!r} has no artifact {name!r}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ModelNotFound(NotFound):
    def __init__(self, model_id: str) -> None:
        self.model = model_id
        super().__init__(f"unknown model {model_id!r}")


class StorageError(PipekitError):
    """A URL could not be read, written or listed (:class:`pipekit.StorageManager`).

    ``.url`` is the URL at fault, ``.reason`` what went wrong, ``.action`` what was tried.
    """

    def __init__(self, url: str, reason: str, action: str = "fetch") -> None:
        self.url, self.reason, self.action = url, reason, action
        super().__init__(f"cannot {action} {url!r}: {reason}")


# -- tasks ------------------------------------------------------------------------------------


class TaskStateError(PipekitError, RuntimeError):
    """An operation is not allowed in the task's current status."""

    def __init__(self, task_id: str, status: str, action: str) -> None:
        self.task, self.status, self.action = task_id, status, action
        super().__init__(f"cannot {action} task {task_id!r}: its status is {status!r}")


class LeaseLost(TaskStateError):
    """A write made under a lease that is no longer current: the task's worker was presumed
    lost (its lease expired) and the task was re-queued or failed. The write is refused, so
    a late ("zombie") attempt never overwrites the current one's results.
    """

    def __init__(self, task_id: str, lease: object) -> None:
        self.task, self.lease = task_id, lease
        PipekitError.__init__(self, f"task {task_id!r}: lease {lease} is no longer current "
                              "(the task was reaped and re-queued or failed); this attempt's "
                              "results are discarded")


class RunBusy(PipekitError, RuntimeError):
    """A run is driven by a live controller, or being resumed, and cannot be taken over.

    :param who: the owning process, e.g. ``PID 123 on host``.
    """

    def __init__(self, run_id: str, who: str, *, resuming: bool) -> None:
        self.run, self.who, self.resuming = run_id, who, resuming
        super().__init__(f"run {run_id} is being resumed by {who}" if resuming else
                         f"run {run_id} is still driven by its controller, {who}: wait for "
                         "it to end, or take it over with --force")


class TaskStatusError(PipekitError, RuntimeError):
    """``wait_for_status`` saw one of the statuses it was told to raise on."""

    def __init__(self, task_id: str, status: str, reason: str = "") -> None:
        self.task, self.status = task_id, status
        why = f" ({reason})" if reason else ""
        super().__init__(f"task {task_id!r} ended {status}{why}")


class TaskTimeout(PipekitError, TimeoutError):
    def __init__(self, task_id: str, timeout: float, status: str) -> None:
        self.task = task_id
        super().__init__(
            f"task {task_id!r} still {status!r} after {timeout:g} s of waiting"
        )


class ParameterError(PipekitError, ValueError):
    """A parameter name or value is malformed or cannot be cast back to its type."""

    def __init__(self, message: str, parameter: str | None = None) -> None:
        self.parameter = parameter
        super().__init__(message)


# -- artifacts --------------------------------------------------------------------------------


class InvalidName(PipekitError, ValueError):
    """A name that becomes part of a path does not match the allowed pattern."""

    def __init__(self, kind: str, name: object) -> None:
        self.kind, self.name = kind, name
        super().__init__(
            f"invalid {kind} name {name!r}: use 1-128 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )


class ArtifactCorrupt(StoreError):
    """A stored object's content does not match its digest; it was not deserialized."""

    def __init__(self, artifact: str, digest: str, actual: str | None = None) -> None:
        #: what the object's content hashes to now (``None``: the object is missing)
        self.artifact, self.digest, self.actual = artifact, digest, actual
        detail = "is missing" if actual is None else f"hashes to {actual[:16]}…"
        super().__init__(
            f"artifact {artifact!r} is corrupt: object {digest[:16]}… {detail}; "
            "it was not loaded"
        )


class SerializationError(PipekitError):
    """No serializer could store a value, or one failed to load it."""

    def __init__(self, message: str, artifact: str | None = None) -> None:
        self.artifact = artifact
        super().__init__(message)


# -- plugins ------------------------------------------------------------------------------------


class CacheKeyError(PipekitError):
    """A step's inputs cannot be put in canonical form; the step runs uncached."""


class PluginError(PipekitError):
    """A plugin could not be loaded, conflicts with another, or is unknown."""

    def __init__(self, message: str, plugin: str | None = None) -> None:
        self.plugin = plugin
        super().__init__(message)


# -- pipeline definitions ---------------------------------------------------------------------

import difflib  # noqa: E402  (this section was appended; the imports stay next to their use)
from collections.abc import Iterable, Sequence  # noqa: E402


class DefinitionError(PipekitError, ValueError):
    """A pipeline definition is invalid; raised while it is built, before anything runs.

    ``.step`` names the step at fault (``None`` when no single step is).
    """

    def __init__(self, message: str, step: str | None = None) -> None:
        self.step = step
        super().__init__(message)


def _did_you_mean(value: object, known: Iterable[object]) -> str:
    """``"did you mean 'x'?"`` for the names in ``known`` close to ``value``, or ``""``."""
    if not isinstance(value, str):
        return ""
    names = [k for k in known if isinstance(k, str)]
    matches = difflib.get_close_matches(value, names, n=3)
    return "did you mean " + " or ".join(repr(m) for m in matches) + "?" if matches else ""


class InvalidStepName(DefinitionError):
    """A step name is not usable (``dag.STEP_NAME_RE``, not ``pipeline``): step names become
    parts of task names and of ``${step.…}`` references.
    """

    kind = "step"

    def __init__(self, step: object) -> None:
        self.name = step
        super().__init__(
            f"invalid step name {step!r}: use 1-128 characters from A-Z a-z 0-9 _ -, "
            "starting with a letter or digit ('pipeline' is reserved)",
            step=step,  # type: ignore[arg-type]
        )


class DuplicateStepError(DefinitionError):
    """Two steps of one pipeline have the same name."""

    def __init__(self, step: str) -> None:
        super().__init__(
            f"step {step!r} is defined twice: give each step of a pipeline a unique name",
            step=step,
        )


class UnknownParentError(DefinitionError):
    """A step lists a parent that is not a step of the pipeline."""

    def __init__(self, step: str, parent: str, known: Iterable[object] = ()) -> None:
        self.parent = parent
        hint = _did_you_mean(parent, known)
        fix = hint or f"add a step named {parent!r} or remove it from the parents of {step!r}"
        super().__init__(f"step {step!r} has unknown parent {parent!r}: {fix}", step=step)


class UnknownStepError(DefinitionError, KeyError):
    """A step was asked for by a name the pipeline does not have."""

    def __init__(self, step: str, known: Iterable[object] = ()) -> None:
        hint = _did_you_mean(step, known)
        super().__init__(f"unknown step {step!r}" + (f": {hint}" if hint else ""), step=step)

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class PipelineCycleError(DefinitionError):
    """The steps' parents form a loop, so no step of the loop could ever start."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = list(cycle)
        loop = " -> ".join(self.cycle)
        super().__init__(
            f"steps form a cycle: {loop} (each step is a parent of the next); "
            "remove one of these parent links",
            step=self.cycle[0] if self.cycle else None,
        )


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class BadReference(DefinitionError):
    """A ``${...}`` reference is malformed: unterminated, empty, of an unknown kind, with a bad
    model index … ``.value`` is the offending reference text, ``.reason`` what is wrong with it.
    """

    def __init__(self, value: str, reason: str, step: str | None = None) -> None:
        self.value, self.reason = value, reason
        where = f"step {step!r}: " if step is not None else ""
        super().__init__(f"{where}bad reference {_shorten(value)!r}: {reason}", step=step)


class UnknownReference(DefinitionError):
    """A reference names a step or pipeline parameter that the pipeline does not have.

    ``.step`` is the referring step, ``.ref`` the reference text, ``.missing`` the unknown
    name and ``.what`` what it should have named (``"step"`` or ``"pipeline parameter"``).
    ``fix`` replaces the list of known names when no close match exists.
    """

    def __init__(self, step: str, ref: str, known: Iterable[object] = (), *,
                 missing: str | None = None, what: str = "step",
                 fix: str | None = None) -> None:
        self.ref, self.missing, self.what = ref, missing, what
        self.known = sorted(str(k) for k in known)
        name = f" {missing!r}" if missing is not None else ""
        hint = _did_you_mean(missing, self.known) or fix
        if not hint:
            shown = ", ".join(repr(k) for k in self.known[:10])
            more = ", …" if len(self.known) > 10 else ""
            hint = f"known {what}s: {shown}{more}" if self.known else f"no {what}s are defined"
        super().__init__(
            f"step {step!r} refers to unknown {what}{name} in {_shorten(ref)!r}: {hint}",
            step=step,
        )


class StepFailed(PipekitError, RuntimeError):
    """A pipeline step did not produce its outputs (it failed, was stopped or skipped), and
    something needed them: a decorated pipeline using a component's result, or a function
    step's return count not matching ``function_return``.

    ``.step`` names the step, ``.status`` its final status, ``.reason`` why.
    """

    def __init__(self, step: str, status: str, reason: str = "") -> None:
        self.step, self.status, self.reason = step, status, reason
        why = f": {reason}" if reason else ""
        super().__init__(f"step {step!r} {status}{why}")


class PipelineFailed(PipekitError, RuntimeError):
    """A pipeline run ended without success; ``.run`` is its id, ``.status`` its status."""

    def __init__(self, run: str, status: str, reason: str = "") -> None:
        self.run, self.status, self.reason = run, status, reason
        why = f": {reason}" if reason else ""
        super().__init__(f"pipeline run {run} {status}{why}")


class UnknownFormatError(PipekitError, ValueError):
    """:func:`render` was asked for a format it does not know; ``.format`` names it and
    ``.choices`` lists the known ones.
    """

    def __init__(self, fmt: object, choices: Sequence[str]) -> None:
        self.format, self.choices = fmt, tuple(choices)
        super().__init__(
            f"unknown export format {fmt!r}: choose one of {', '.join(self.choices)}"
        )


class BadRequest(PipekitError, ValueError):
    """A request to the web UI's API refused as given (HTTP 400); the message names the
    value.
    """
