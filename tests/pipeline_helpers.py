"""Helpers shared by the pipeline tests: the cascade check (RELIABILITY 12) and store views."""

from __future__ import annotations

from typing import Any

from pipekit import PipelineController, functions
from pipekit.store import get_store

OPEN_TASK = {"created", "queued", "in_progress"}
OPEN_NODE = {"pending", "in_progress"}


def assert_cascade(run_id: str, pipe: Any = None) -> None:
    """RELIABILITY 12: a terminal run has no non-terminal step task and no open node."""
    store = get_store()
    assert store.get_task(run_id).status in {"completed", "failed", "stopped"}
    left = [(t.name, t.status) for t in store.find_tasks(parent=run_id) if t.status in OPEN_TASK]
    assert not left, f"run {run_id} ended with open step tasks {left}"
    nodes = store.list_nodes(run_id)
    assert nodes, f"run {run_id} recorded no nodes in the store"
    open_nodes = [(n.name, n.status) for n in nodes if n.status in OPEN_NODE]
    assert not open_nodes, f"run {run_id} ended with open nodes {open_nodes}"
    if pipe is not None:
        live = [(n.name, n.status) for n in pipe.get_pipeline_dag().values()
                if n.status in OPEN_NODE]
        assert not live, f"run {run_id} ended with open in-memory nodes {live}"


def node_statuses(run_id: str) -> dict[str, str]:
    return {n.name: n.status for n in get_store().list_nodes(run_id)}


def step_tasks(run_id: str) -> dict[str, Any]:
    return {t.name: t for t in get_store().find_tasks(parent=run_id)}


def run_locally(pipe: PipelineController, executor: str = "thread", **kwargs: Any) -> str:
    pipe.start_locally(run_pipeline_steps_locally=True, executor=executor, **kwargs)
    assert pipe.id is not None
    return pipe.id


def function_task(fn: Any, name: str, **kwargs: Any) -> str:
    """A draft function task calling ``fn(**kwargs)`` (to enqueue for an agent)."""
    store = get_store()
    data = functions.pack(fn, name)
    return functions.create_task(store, fn, data, functions.code_of(fn, (), data), kwargs,
                                 ["out"], project="agents", name=name, type=None,
                                 parent=None).id

