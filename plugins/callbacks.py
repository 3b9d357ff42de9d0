"""ClearML's per-step and per-run callbacks, wired to pipekit's hooks like any plugin.

* ``step_task_created_callback(pipeline, node, parameters)`` (``start()``) and the node's
  ``pre_execute_callback(pipeline, node, parameters)``: before the step's task is created;
  returning ``False`` skips the node and its descendants; edits to ``parameters`` or
  ``node.parameters`` apply to the launched task.
* ``step_task_completed_callback(pipeline, node)`` and the node's
  ``post_execute_callback(pipeline, node)``: after the step succeeded, ``node.executed``
  set to its task id.
* the node's ``status_change_callback(pipeline, node, previous_status)``: at every change.

The run-wide callback is called before the node's own one, as ClearML does.
"""

from __future__ import annotations

from typing import Any

import pipekit


@pipekit.hookimpl
def pipekit_step_pre_execute(node: Any, run: Any, parameters: dict[str, Any]) -> bool | None:
    for callback in (run.step_task_created_callback, node.pre_execute_callback):
        if callback is not None and callback(run.pipeline, node, parameters) is False:
            return False
    return None


@pipekit.hookimpl
def pipekit_step_completed(node: Any, run: Any) -> None:
    for callback in (run.step_task_completed_callback, node.post_execute_callback):
        if callback is not None:
            callback(run.pipeline, node)


@pipekit.hookimpl
def pipekit_step_status_changed(node: Any, old: str, run: Any) -> None:
    if node.status_change_callback is not None:
        node.status_change_callback(run.pipeline, node, old)
