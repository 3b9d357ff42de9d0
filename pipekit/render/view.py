"""The run view every format draws, and what every format reads from it the same way.

A *run view* is a plain mapping. The CLI's ``pipekit export`` builds it from the store with
:func:`pipekit.views.run_view`; :func:`view_of_dag` builds one from a bare
:class:`~pipekit.dag.Dag`::

    {"id": str, "name": str, "project": str, "status": str, "version": str,
     "started": float | None, "ended": float | None, "parameters": {str: str},
     "nodes": [{"name": str, "parents": [str], "status": str, "task": str | None,
                "started": float | None, "ended": float | None, "attempt": int,
                "cached": bool, "runs": [<run view>, ...]}, ...]}

Only ``nodes[*].name`` is required; everything else is read with a default. ``runs`` (optional)
holds the pipelines run inside a step.

This module holds the status colours, the status and duration texts, the checked node list
(:func:`checked`, built on :class:`~pipekit.dag.Dag`, so duplicate names, unknown parents and
cycles raise the same :mod:`pipekit.errors` a pipeline definition would) and the generated ids
the text formats share. It must not draw anything, and like the whole package it is pure: no
store, no hooks, no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..dag import Dag

__all__ = ["STATUS_COLOURS", "Ids", "RunView", "checked", "dag_of", "duration", "runs",
           "status", "status_class", "status_line", "timestamp", "title", "view_of_dag"]

RunView = Mapping[str, Any]

#: status -> (fill, stroke, text colour). ``unknown`` catches statuses this module predates.
STATUS_COLOURS: dict[str, tuple[str, str, str]] = {
    "completed": ("#2e7d32", "#1b5e20", "#ffffff"),
    "cached": ("#00897b", "#00695c", "#ffffff"),
    "failed": ("#c62828", "#8e0000", "#ffffff"),
    "stopped": ("#ffb300", "#c68400", "#000000"),
    "skipped": ("#9e9e9e", "#707070", "#000000"),
    "in_progress": ("#1565c0", "#003c8f", "#ffffff"),
    "pending": ("#e0e0e0", "#aeaeae", "#000000"),
    "unknown": ("#ffffff", "#555555", "#000000"),
}


# -- statuses and times -----------------------------------------------------------------------


def status(item: Mapping[str, Any]) -> str:
    """The status to show: a completed node whose result came from the cache shows as cached."""
    shown = str(item.get("status") or "unknown")
    if item.get("cached") and shown == "completed":
        return "cached"
    return shown


def status_class(shown: str) -> str:
    """``shown`` if it is a status of :data:`STATUS_COLOURS`, else ``"unknown"``.

    Only known statuses become class names or colour keys: the status string itself is data.
    """
    return shown if shown in STATUS_COLOURS else "unknown"


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def duration(item: Mapping[str, Any]) -> str | None:
    """``"0.42s"``, ``"12.3s"``, ``"4m 05s"``, ``"2h 03m"``, or ``None`` if not both ends known.

    There is no "still running for …": that would need the clock, and rendering stays pure.
    """
    started, ended = _number(item.get("started")), _number(item.get("ended"))
    if started is None or ended is None or ended < started:
        return None
    seconds = ended - started
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


def status_line(item: Mapping[str, Any]) -> str:
    """``"completed (1.50s)"``: the status, and the duration when both ends are known."""
    shown, took = status(item), duration(item)
    return f"{shown} ({took})" if took else shown


def timestamp(value: object) -> str:
    """A UTC time as ``2023-11-14 22:13:20 UTC``, or ``—`` for anything that is not one."""
    seconds = _number(value)
    if seconds is None:
        return "—"
    try:
        moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "—"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def title(run: RunView) -> str:
    """A nested run's heading: its name (or id) and status line."""
    return f"{run.get('name') or run.get('id') or 'run'} · {status_line(run)}"


# -- nodes ------------------------------------------------------------------------------------


def dag_of(nodes: list[Mapping[str, Any]]) -> Dag:
    """The :class:`~pipekit.dag.Dag` of a view's nodes, validated; names may be any text.

    The store only holds DAGs that passed :class:`~pipekit.dag.Dag` validation, so a failure
    here means a damaged store or a hand-made view; it is reported with the same errors.

    :raises DuplicateStepError: if two nodes have the same name.
    :raises UnknownParentError: if a node names a parent that is not a node.
    :raises PipelineCycleError: if the parents form a loop.
    """
    dag = Dag()
    for node in nodes:
        dag.add(str(node["name"]), [str(p) for p in node.get("parents") or ()],
                check_name=False)
    dag.validate()
    return dag


def checked(view: RunView) -> tuple[list[Mapping[str, Any]], Dag]:
    """The view's nodes in their order, and their validated :class:`~pipekit.dag.Dag`.

    Formats take each node's parents from the Dag: repeated parents count once, in order.

    :raises DefinitionError: as :func:`dag_of` does.
    """
    nodes = list(view.get("nodes") or ())
    return nodes, dag_of(nodes)


def runs(node: Mapping[str, Any]) -> list[RunView]:
    """The runs nested in ``node`` (pipelines run inside the step), possibly none."""
    return list(node.get("runs") or ())


def view_of_dag(dag: Dag, status: str = "pending") -> dict[str, Any]:
    """A run view of a bare DAG: every step in ``status``, no times, no nested runs.

    :param dag: the DAG to draw (validated here).
    :param status: the status every step and the run show; ``"pending"`` for a DAG that has
        not run.
    """
    dag.validate()
    return {"id": "", "name": "", "status": status, "parameters": {},
            "nodes": [{"name": name, "parents": list(dag.parents(name)), "status": status}
                      for name in dag]}


@dataclass
class Ids:
    """Generated ids (``n0``, ``n1`` …, ``s0`` …); shared across nested runs so that two runs'
    ``train`` steps never merge, and never made from names, which are untrusted text.
    """

    nodes: int = 0
    groups: int = 0

    def node(self) -> str:
        self.nodes += 1
        return f"n{self.nodes - 1}"

    def group(self, prefix: str) -> str:
        self.groups += 1
        return f"{prefix}{self.groups - 1}"
