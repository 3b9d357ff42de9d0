"""A pipeline's steps as the runner, the callbacks and the hooks see them.

:class:`Node` is ClearML's ``PipelineController.Node``: the same attribute names, and as in
ClearML it is *live* — a ``pre_execute_callback`` may edit ``node.parameters`` or set
``node.skip_job``, and ``post_execute_callback`` reads ``node.executed``. Observer hooks get
the same object and must treat it as read-only. :class:`RunInfo` is the frozen description of
one pipeline run handed to every hook.

Pure: no store, no hooks, no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["Node", "NodeStatus", "RunInfo"]


class NodeStatus(str, enum.Enum):
    """Where a node is in its run: a task status once it runs, plus three of its own."""

    pending = "pending"          # not launched yet
    in_progress = "in_progress"  # its task was handed to the executor
    completed = "completed"
    failed = "failed"
    stopped = "stopped"
    skipped = "skipped"          # will not run: a parent failed or was skipped, or a veto
    cached = "cached"            # a previous task's outputs stand in for it

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        return self in _FINAL

    @property
    def is_success(self) -> bool:
        """Whether the node's outputs exist (its children may run)."""
        return self in (NodeStatus.completed, NodeStatus.cached)


_FINAL = frozenset({NodeStatus.completed, NodeStatus.failed, NodeStatus.stopped,
                    NodeStatus.skipped, NodeStatus.cached})


@attrs.define(eq=False)
class Node:
    """One step of a pipeline (ClearML's ``PipelineController.Node``).

    ``parameters`` holds the step's overrides as given, references unresolved: for a task
    step ``{"Section/key": value}``, for a function step ``{"kwargs/<arg>": value}``.
    ``executed`` is the id of the task whose outputs the node has once it succeeded (``False``
    once it failed); ``job`` is the step's :class:`~pipekit.task.Task` once created.
    """

    name: str
    base_task_id: str | None = None
    queue: str | None = None
    parents: list[str] = attrs.Factory(list)
    timeout: float | None = None
    parameters: dict[str, Any] = attrs.Factory(dict)
    configurations: dict[str, Any] = attrs.Factory(dict)
    task_overrides: dict[str, Any] = attrs.Factory(dict)
    executed: str | bool | None = None
    status: str = NodeStatus.pending.value
    clone_task: bool = True
    job: Any = None
    job_type: str | None = None
    job_started: float | None = None
    job_ended: float | None = None
    job_code_section: str | None = None
    skip_job: bool = False
    continue_on_fail: bool = False
    cache_executed_step: bool = False
    return_artifacts: list[str] = attrs.Factory(list)
    monitor_metrics: list[Any] = attrs.Factory(list)
    monitor_artifacts: list[Any] = attrs.Factory(list)
    monitor_models: list[Any] = attrs.Factory(list)
    retry_on_failure: int | Callable[..., bool] | None = None
    pre_execute_callback: Callable[..., Any] | None = None
    post_execute_callback: Callable[..., Any] | None = None
    status_change_callback: Callable[..., Any] | None = None
    base_task_factory: Callable[[Node], Any] | None = None
    # -- pipekit's own --------------------------------------------------------------------
    #: a function step's callable, its helpers, and the names its return values get
    function: Callable[..., Any] | None = None
    helper_functions: list[Callable[..., Any]] = attrs.Factory(list)
    project_name: str | None = None
    task_name: str | None = None
    #: 0 for the first try; each retry runs a fresh task with ``attempt + 1``
    attempt: int = 0
    #: why the node failed, stopped or was skipped
    reason: str = ""
    #: every task this node ran, one per attempt
    tasks: list[str] = attrs.Factory(list)
    #: a version the user declares for the step's cached results: changing it invalidates
    #: them (e.g. after a change the code digest cannot see: data behind a URL, a library)
    cache_version: str | None = None
    #: the cache key it ran (or was served) under, when ``cache_executed_step``
    cache_key: str | None = None

    @property
    def is_function(self) -> bool:
        return self.function is not None

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.status}>"


@attrs.frozen
class RunInfo:
    """One pipeline run, as hooks see it.

    :param id: the run's controller task id.
    :param pipeline: the object ClearML callbacks receive as ``pipeline`` (the
        ``PipelineController``, or the decorator's controller).
    """

    id: str
    name: str
    project: str
    version: str
    pipeline: Any = None
    step_task_created_callback: Callable[..., Any] | None = None
    step_task_completed_callback: Callable[..., Any] | None = None


@attrs.define(eq=False)
class PipelineSpec:
    """A pipeline as defined: what the controller and the decorator hand to the runner."""

    name: str
    project: str
    version: str | None = None
    #: pipeline parameter name -> value (a run's ``Args``)
    parameters: dict[str, Any] = attrs.Factory(dict)
    parameter_descriptions: dict[str, str] = attrs.Factory(dict)
    parameter_types: dict[str, str] = attrs.Factory(dict)
    nodes: dict[str, Node] = attrs.Factory(dict)
    abort_on_failure: bool = False
    retry_on_failure: int | Callable[..., bool] | None = None
    target_project: str | None = None
    add_pipeline_tags: bool = False
    tags: list[str] = attrs.Factory(list)
    #: name -> object, as ``connect_configuration`` gave them
    configurations: dict[str, Any] = attrs.Factory(dict)
    default_queue: str | None = None
    auto_version_bump: bool = False
    #: parameter -> default, hashed into the structure (default: ``parameters`` as defined)
    defaults: dict[str, Any] | None = None
