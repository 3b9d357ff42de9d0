"""Execute one task in a child process: ``python script args`` with its output in the log.

The worker owns the task's final status: it marks the task ``in_progress``, runs the child
in its own session (so stopping it kills the whole process tree), pipes the child's
stdout/stderr into the task log, and ends the task ``completed``, ``failed`` (exit code or
signal) or ``stopped``, exactly once. Also runnable as ``python -m pipekit.worker TASK``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from typing import IO

import psutil

from .capture import open_log, pump
from .config import DB_ENV, HOME_ENV, TASK_ENV
from .errors import PipekitError, TaskStateError
from .functions import call, is_function_task
from .models import Status, TaskInfo
from .store import get_store
from .task import worker_id


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to a process and every descendant (children first found, then killed)."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def run_task(task_id: str, echo: IO[bytes] | None = None, worker: str | None = None,
             on_start: Callable[[int], None] | None = None,
             env: Mapping[str, str] | None = None) -> TaskInfo:
    """Run a ``created`` or ``queued`` task to its final status; returns it.

    A script task runs as a child process; a function task runs in this process
    (:func:`pipekit.functions.call`), its output copied into the task log.

    :param echo: also copy the child's output here (the CLI passes its stdout).
    :param on_start: called with the child's pid once it runs (executors keep it to cancel).
    :param env: extra environment for a script task's child (an empty value unsets).
    :raises TaskStateError: the task is not in a runnable status.
    """
    store = get_store()
    info = store.get_task(store.resolve_task_id(task_id))
    if info.status not in (Status.created.value, Status.queued.value):
        raise TaskStateError(info.id, info.status, "run")
    if is_function_task(info):
        return call(info.id, worker=worker)
    script = info.script
    path = script.get("path")
    if not path:
        raise PipekitError(f"task {info.id!r} has no script to run")
    store.transition(info.id, Status.in_progress, worker=worker or worker_id())
    log_path = store.log_path(info.id)
    if not os.path.isfile(path):
        store.set_status(info.id, Status.failed, reason=f"script not found: {path}")
        return store.get_task(info.id)
    child_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value:
            child_env[key] = value
        else:
            child_env.pop(key, None)
    child_env.update({TASK_ENV: info.id, HOME_ENV: str(store.settings.home),
                DB_ENV: store.settings.db_url, "PYTHONUNBUFFERED": "1"})
    cmd = [sys.executable, path, *script.get("argv", [])]
    proc = subprocess.Popen(cmd, cwd=script.get("working_dir") or None, env=child_env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    if on_start is not None:
        on_start(proc.pid)
    copier = threading.Thread(target=pump, args=(proc.stdout, log_path, echo), daemon=True)
    copier.start()
    stopped = None
    try:
        returncode = proc.wait()
    except KeyboardInterrupt:
        stopped = "stopped by user (KeyboardInterrupt)"
        kill_tree(proc.pid)
        returncode = proc.wait()
    copier.join(timeout=10)
    if log_path.exists():
        store.set_log_size(info.id, log_path.stat().st_size)
    if stopped:
        store.set_status(info.id, Status.stopped, reason=stopped)
    elif returncode == 0:
        store.set_status(info.id, Status.completed)
    else:
        recorded = store.get_task(info.id).status_reason
        reason = describe_exit(returncode)
        store.set_status(info.id, Status.failed,
                         reason=f"{recorded} ({reason})" if recorded else reason)
    return store.get_task(info.id)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    quiet = "--quiet" in args
    args = [a for a in args if a != "--quiet"]
    if len(args) != 1:
        print("usage: python -m pipekit.worker [--quiet] TASK_ID", file=sys.stderr)
        return 2
    store = get_store()
    task_id = store.resolve_task_id(args[0])
    if is_function_task(store.get_task(task_id)):
        # This process is the step: everything written to fd 1/2 (by Python, C extensions
        # or children) goes to the task log, as a script step's piped output does.
        with open_log(store.log_path(task_id)) as log:
            sys.stdout.flush()
            sys.stderr.flush()
            if quiet:
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
            info = call(task_id, capture=not quiet)
            sys.stdout.flush()
            sys.stderr.flush()
        store.set_log_size(task_id, store.log_path(task_id).stat().st_size)
    else:
        info = run_task(task_id, echo=None if quiet else sys.stdout.buffer)
    return 0 if info.status == Status.completed.value else 1


if __name__ == "__main__":
    sys.exit(main())
