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
    def __init__(self, task_id: str) -> None:
        self.task = task_id
        super().__init__(f"unknown task {task_id!r}")


class ProjectNotFound(NotFound):
    def __init__(self, project: str) -> None:
        self.project = project
        super().__init__(f"unknown project {project!r}")


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


# -- tasks ------------------------------------------------------------------------------------


class TaskStateError(PipekitError, RuntimeError):
    """An operation is not allowed in the task's current status."""

    def __init__(self, task_id: str, status: str, action: str) -> None:
        self.task, self.status, self.action = task_id, status, action
        super().__init__(f"cannot {action} task {task_id!r}: its status is {status!r}")


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
        self.artifact, self.digest = artifact, digest
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


class PluginError(PipekitError):
    """A plugin could not be loaded, conflicts with another, or is unknown."""

    def __init__(self, message: str, plugin: str | None = None) -> None:
        self.plugin = plugin
        super().__init__(message)
