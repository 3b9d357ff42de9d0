"""Every pipekit hook, grouped by the stage of a run at which it fires.

Plugins implement these with ``@pipekit.hookimpl`` and register through the ``pipekit``
entry-point group (built-ins in ``plugins/`` do exactly the same). Hooks receive frozen
values from :mod:`pipekit.models` and :mod:`pipekit.nodes`, never database rows; the one
live object is a run's :class:`~pipekit.nodes.Node`, which ClearML's callbacks may edit.
An implementation may accept only the arguments it names, so specs may gain arguments but
never rename or drop one. The per-step hooks' ``task`` (a :class:`~pipekit.models.TaskInfo`)
is read from the store on first use, in the hook (:func:`pipekit.plugin_manager.lazy`): a
step costs no read for plugins that never look at it. Read what you need in the hook; a
``task`` kept for later shows the task as it is then.

Two kinds of hook, with different error rules:

* **decision** hooks (``firstresult``, or a veto) — an exception fails the step or the call
  it decides, and the error names the plugin;
* **observer** hooks (something happened) — called through
  :func:`pipekit.plugin_manager.notify`, which logs a plugin's exception and carries on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # only for the annotations: hookspecs sits below everything it names
    import click

    from .models import ArtifactInfo, ModelInfo, TaskInfo
    from .nodes import Node, RunInfo

PROJECT = "pipekit"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Marker for hook implementations: ``@pipekit.hookimpl``.
hookimpl = pluggy.HookimplMarker(PROJECT)


# =============================================================================================
# Registration: called once when a registry is first needed.
# =============================================================================================


@hookspec
def pipekit_executors(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register step executors.

    :param register: ``register(name, factory)``; ``factory(**options)`` returns an object
        with ``submit(job) -> handle``, ``poll(handle)``, ``cancel(handle)`` and ``shutdown()``.
        Two plugins registering one name is an error naming both.
    """


@hookspec
def pipekit_serializers(register: Callable[..., None]) -> None:
    """Register artifact serializers.

    :param register: ``register(serializer)`` with a :class:`pipekit.artifacts.Serializer`.
        Serializers are tried by descending ``priority`` (ties: registration order); the
        first whose ``accepts(value)`` is true stores the value. Pickle is the fallback.
    """


@hookspec
def pipekit_register_commands(cli: click.Group) -> None:
    """Add commands to the ``pipekit`` click group.

    :param cli: the root :class:`click.Group`; call ``cli.add_command`` or use it as a
        decorator. Fired once when the CLI starts.
    """


# =============================================================================================
# Pipeline: a run starts and finishes.
# =============================================================================================


@hookspec
def pipekit_pipeline_started(run: RunInfo) -> None:
    """Observer: a pipeline run started (its controller task is ``in_progress``).

    :param run: the :class:`~pipekit.nodes.RunInfo` of the run.
    """


@hookspec
def pipekit_pipeline_finished(run: RunInfo, status: str) -> None:
    """Observer: a pipeline run reached its final status.

    :param run: the :class:`~pipekit.nodes.RunInfo` of the run.
    :param status: the run's final status (``completed``, ``failed`` or ``stopped``).
    """


# =============================================================================================
# Step launch: references resolved -> veto -> cache -> task created.
# =============================================================================================


@hookspec
def pipekit_step_pre_execute(node: Node, run: RunInfo, parameters: dict[str, Any]
                             ) -> bool | None:
    """Decision (veto): may this node launch?

    Fires after the node's references are resolved, before its task is created. The
    built-in ``callbacks`` plugin calls ClearML's ``step_task_created_callback`` and the
    node's ``pre_execute_callback`` from here.

    :param node: the run's live :class:`~pipekit.nodes.Node`; an implementation may edit
        ``node.parameters`` (the edits are resolved and applied) or set ``node.skip_job``.
    :param run: the :class:`~pipekit.nodes.RunInfo` of the run.
    :param parameters: the node's resolved parameters (``Section/key`` for a task step,
        ``kwargs/<arg>`` for a function step); edits apply to the launched task.
    :returns: ``False`` to skip the node (and so its descendants); anything else lets it run.
    """


@hookspec
def pipekit_cache_key(node: Node) -> list[str] | str | None:
    """Decision: extra parts for a node's cache key; every plugin's parts are included.

    :param node: the :class:`~pipekit.nodes.Node` about to be looked up.
    :returns: strings to mix into the key (e.g. a data version), or ``None``.
    """


@hookspec(firstresult=True)
def pipekit_cache_lookup(key: str, node: Node) -> str | None:
    """Decision: find a task whose outputs can stand in for this node.

    Stops at first non-None result.

    :param key: the node's cache key (hex blake3).
    :param node: the :class:`~pipekit.nodes.Node`.
    :returns: the id of a reusable task, or ``None`` to run the step.
    """


@hookspec
def pipekit_step_created(node: Node, task: TaskInfo, run: RunInfo) -> None:
    """Observer: the step's task exists and is about to be handed to the executor.

    :param node: the run's live :class:`~pipekit.nodes.Node` (read it, do not change it).
    :param task: the ``TaskInfo`` of the step's task.
    :param run: the :class:`~pipekit.nodes.RunInfo` of the run.
    """


# =============================================================================================
# Step outcome.
# =============================================================================================


@hookspec
def pipekit_step_status_changed(node: Node, task: TaskInfo | None, old: str, new: str,
                                run: RunInfo) -> None:
    """Observer: a node changed status (``pending``, ``in_progress``, ``completed``,
    ``failed``, ``stopped``, ``skipped``, ``cached``).

    :param node: the run's live :class:`~pipekit.nodes.Node`.
    :param task: the ``TaskInfo`` of its task, or ``None`` if it never had one.
    :param old: the previous status.
    :param new: the new status.
    :param run: the :class:`~pipekit.nodes.RunInfo` of the run.
    """


@hookspec
def pipekit_step_completed(node: Node, task: TaskInfo, run: RunInfo) -> None:
    """Decision: a step succeeded (or was served from the cache); ``node.executed`` is the
    id of the task holding its outputs. An exception fails the node (and so its run).

    The built-in ``callbacks`` plugin calls ClearML's ``step_task_completed_callback`` and
    the node's ``post_execute_callback`` from here.

    :param node: the run's live :class:`~pipekit.nodes.Node`.
    :param task: the ``TaskInfo`` of the task that produced the outputs.
    :param run: the :class:`~pipekit.nodes.RunInfo` of the run.
    """


# =============================================================================================
# Monitoring and versioning.
# =============================================================================================


@hookspec
def pipekit_metric_reported(task: TaskInfo, title: str, series: str, iteration: int,
                            value: float) -> None:
    """Observer: a task reported a scalar.

    :param task: the ``TaskInfo`` of the reporting task.
    :param title: metric title.
    :param series: metric series.
    :param iteration: the iteration (x value).
    :param value: the reported value.
    """


@hookspec
def pipekit_artifact_uploaded(task: TaskInfo, artifact: ArtifactInfo) -> None:
    """Observer: a task uploaded an artifact (its row is committed).

    :param task: the ``TaskInfo`` of the uploading task.
    :param artifact: the ``ArtifactInfo`` just stored.
    """


@hookspec
def pipekit_model_uploaded(task: TaskInfo, model: ModelInfo) -> None:
    """Observer: a task uploaded a model (its row is committed).

    :param task: the ``TaskInfo`` of the uploading task.
    :param model: the ``ModelInfo`` just stored.
    """


@hookspec(firstresult=True)
def pipekit_version_bump(pipeline: str, old_version: str, old_hash: str,
                         new_hash: str) -> str | None:
    """Decision: the next version of a pipeline whose structure changed.

    Stops at first non-None result. The built-in (``trylast``) adds one to the last number.

    :param pipeline: the pipeline's name.
    :param old_version: its latest version: numbers separated by dots (``1.0.0``, ``1.2``,
        ``23``).
    :param old_hash: the structure hash recorded with ``old_version``.
    :param new_hash: the structure hash of the pipeline about to run.
    :returns: the new version string, or ``None`` to let another plugin decide.
    """
