"""Helpers shared by the pipeline tests: the cascade check (RELIABILITY 12), store views, and
the installed ``pipekit`` command run as a user runs it (``pk``, ``one_error``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
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



# -- the installed command, and the marks the scripts of tests/cli_scripts/ leave -------------

PIPEKIT = str(Path(sys.executable).with_name("pipekit"))
ROOT = Path(__file__).resolve().parent.parent


def pk(*args: str, timeout: float = 60, env: dict[str, str] | None = None,
       cwd: Path | str = ROOT) -> subprocess.CompletedProcess:
    """The installed ``pipekit`` console script as a real process, run from the repository's
    root (as a user types ``tests/cli_scripts/...``) against this test's store
    (``PIPEKIT_HOME`` and the rest of the environment are inherited; ``env`` adds to it)."""
    return subprocess.run([PIPEKIT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def one_error(proc: subprocess.CompletedProcess, code: int = 1, *, alone: bool = False) -> str:
    """The one ``Error:`` line of a failed command: exit ``code``, no traceback on stdout or
    stderr, exactly one stderr line starting ``Error: ``; with ``alone``, stderr holds
    nothing else. Returns the line."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    if alone:
        assert proc.stderr.strip() == lines[0], proc.stderr
    return lines[0]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error: ")]


def executions(marks: Path, step: str) -> list[int]:
    """The pid of every execution of ``step`` so far: a script's step leaves a file
    ``<step>.<pid>.<unique>`` in ``marks`` (the ``marks`` fixture of tests/conftest.py)."""
    return [int(p.name.split(".")[1]) for p in marks.glob(f"{step}.*.*")]
