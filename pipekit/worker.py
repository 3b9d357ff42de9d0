"""Execute one task: a script in a child process, or a function in this process.

The worker owns the task's final status: it marks the task ``in_progress``, runs the child
in its own session (so stopping it kills the whole process tree), pipes the child's
stdout/stderr into the task log, and ends the task ``completed``, ``failed`` or ``stopped``,
exactly once, through :func:`pipekit.finish.finish_task`. The child runs the script as
``python SCRIPT`` would, through :mod:`pipekit.script_main`, which tells the worker the
script's uncaught exception: a failure's reason is that exception (type, message, the
user's line), else the exit code or signal. A pipeline's controller task whose script
exits 0 without having started its pipeline fails; one whose script fails after its
pipeline completed stays ``completed``, with :data:`LATE_FAILURE` as its reason. Also
runnable as ``python -m pipekit.worker TASK``.

:func:`run_job` and :func:`run_job_in_child` are what executor plugins run a job with, here
or in a pool process, so no executor copies them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO

import psutil

from . import context
from .capture import pump
from .config import (
    ARTIFACTS_ENV,
    CAUSE_ENV,
    CONTROLLER_PID_ENV,
    DB_ENV,
    HOME_ENV,
    LEASE_ENV,
    OWNER_ENV,
    TASK_ENV,
    configure,
)
from .errors import PipekitError, TaskNotFound, TaskStateError
from .executor import outcome_of, settle
from .finish import finish_task
from .functions import call
from .models import Job, Lease, Outcome, Status, TaskInfo, TaskType
from .redact import redact
from .script_main import command, new_cause_file, read_cause
from .store import Store, get_store

__all__ = ["LATE_FAILURE", "describe_end", "describe_exit", "finish_task", "kill_tree", "main",
           "run_job", "run_job_in_child", "run_task", "succeeded"]


#: Why a task with no script (``Task.create()`` without ``script=``) cannot run.
NO_SCRIPT = ("no script to run: the task was made by Task.create() without script= (a draft "
             "that holds parameters, metrics and artifacts); create or clone a task with a "
             "script to run")

#: Why a controller task whose script ran to its end without a pipeline failed.
NO_PIPELINE = ("the script {name} started no pipeline: it ended without running a "
               "PipelineController or a @PipelineDecorator.pipeline (run a script that is "
               "not a pipeline with python {name})")

#: How the reason of a task that completed, and whose script failed after that, begins: the
#: task keeps ``completed`` (its results stand), the reason tells the rest.
LATE_FAILURE = "then the script failed: "


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to a process, every descendant, and every other process of the session it
    leads (steps run in a session of their own, so a double-forked grandchild that was
    re-parented away from the tree is still found by its session).
    """
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        procs = []
    procs += session_members(pid, exclude=procs)
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


def session_members(sid: int, exclude: list[psutil.Process] | None = None
                    ) -> list[psutil.Process]:
    """The processes of session ``sid`` (a step's session is its leader's pid); never this
    process's own session.
    """
    try:
        if sid == os.getsid(0):
            return []
    except OSError:
        return []
    skip = {p.pid for p in exclude or ()}
    found = []
    for proc in psutil.process_iter():
        if proc.pid in skip:
            continue
        try:
            if os.getsid(proc.pid) == sid:
                found.append(proc)
        except (OSError, psutil.Error):  # gone meanwhile, or not ours to ask about
            continue
    return found


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def run_task(task_id: str, echo: IO[bytes] | None = None, worker: str | None = None,
             on_start: Callable[[int], None] | None = None,
             env: Mapping[str, str] | None = None, lease: Lease | None = None,
             owner: str | None = None) -> TaskInfo:
    """Run a ``created`` or ``queued`` task to its final status; returns it.

    A script task runs as a child process; a function task runs in this process
    (:func:`pipekit.functions.call`), its output copied into the task log.

    :param echo: also copy the child's output here (the CLI passes its stdout).
    :param on_start: called with the child's pid once it runs (executors keep it to cancel).
    :param env: extra environment for a script task's child (an empty value unsets).
    :param lease: an agent claimed the task (``in_progress`` already) under this lease: the
        task's results and final status land only while it is current.
    :param owner: the task is a pipeline run (``in_progress``) this process took over as
        ``owner`` to resume it (:func:`pipekit.runs.resume`): its script runs again as the
        same run, and ends it only while the run is still this owner's.
    :raises TaskStateError: the task is not in a runnable status.
    """
    store = get_store()
    try:  # a full id (what executors pass): one read
        info = store.get_task(task_id)
    except TaskNotFound:
        info = store.get_task(store.resolve_task_id(task_id))
    runnable = (Status.in_progress.value,) if lease is not None or owner is not None else (
        Status.created.value, Status.queued.value)
    if info.status not in runnable:
        raise TaskStateError(info.id, info.status, "run")
    if info.is_function:
        return call(info.id, worker=worker, lease=lease, info=info)
    script = info.script
    path = script.get("path")
    if lease is None and owner is None:
        store.transition(info.id, Status.in_progress, worker=worker or context.worker_id())
    log_path = store.log_path(info.id)
    if not path:
        finish_task(info.id, Status.failed, NO_SCRIPT, lease=lease)
        return store.get_task(info.id)
    if not os.path.isfile(path):
        finish_task(info.id, Status.failed, f"script not found: {path}", lease=lease)
        return store.get_task(info.id)
    child_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value:
            child_env[key] = value
        else:
            child_env.pop(key, None)
    child_env.update({TASK_ENV: info.id, HOME_ENV: str(store.settings.home),
                      DB_ENV: store.settings.db_url, "PYTHONUNBUFFERED": "1"})
    if store.settings.artifacts_setting is not None:
        child_env[ARTIFACTS_ENV] = store.settings.artifacts_setting
    if lease is not None:  # the script's own uploads are fenced by the same lease
        child_env[LEASE_ENV] = context.lease_env(lease)
    if owner is not None:  # the script's controller drives the run as the owner we took
        child_env[OWNER_ENV] = owner
    # The script runs as `python path argv` would run it, and writes why it died (an
    # uncaught exception, a syntax error in it included) to the cause file.
    cause_file = child_env[CAUSE_ENV] = new_cause_file()
    try:
        proc = subprocess.Popen(command(path, script.get("argv", [])),
                                cwd=script.get("working_dir") or None, env=child_env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        assert proc.stdout is not None
        if on_start is not None:
            on_start(proc.pid)
        copier = threading.Thread(target=pump, args=(proc.stdout, log_path, echo),
                                  daemon=True)
        copier.start()
        stopped = None
        try:
            returncode = proc.wait()
        except KeyboardInterrupt:
            stopped = "stopped by user (KeyboardInterrupt)"
            kill_tree(proc.pid)
            returncode = proc.wait()
        copier.join(timeout=10)
    finally:
        cause = read_cause(cause_file)
    size = log_path.stat().st_size if log_path.exists() else None
    # A pipeline's controller that ended (or died) ends its run: no step is left running.
    run = info.type == TaskType.controller.value
    if stopped:
        finish_task(info.id, Status.stopped, stopped, log_size=size, lease=lease, run=run,
                    owner=owner)
    elif returncode == 0 and run and not _has_run(store, info.id):
        finish_task(info.id, Status.failed, NO_PIPELINE.format(name=os.path.basename(path)),
                    log_size=size, lease=lease, run=run, owner=owner)
    elif returncode == 0:
        finish_task(info.id, Status.completed, log_size=size, lease=lease, run=run,
                    owner=owner)
    else:
        why = describe_exit(returncode)
        recorded = store.get_task(info.id).status_reason  # the script's own why
        if cause:  # its uncaught exception, which exits 1
            reason = cause if returncode == 1 else f"{cause} ({why})"
        else:
            reason = f"{recorded} ({why})" if recorded else why
        if not finish_task(info.id, Status.failed, reason, log_size=size, lease=lease,
                           run=run, owner=owner):
            _failed_late(store, info.id, cause or why, lease)
    return store.get_task(info.id)


def _has_run(store: Store, task_id: str) -> bool:
    """Whether controller task ``task_id`` has started a pipeline (it has a run record)."""
    try:
        store.get_run(task_id)
    except TaskNotFound:
        return False
    return True


def _failed_late(store: Store, task_id: str, cause: str, lease: Lease | None) -> None:
    """The script failed after its task had completed (its pipeline ended the run): the task
    stays ``completed``, and its reason says what happened after (see :func:`succeeded`).
    """
    info = store.get_task(task_id)
    if info.status != Status.completed.value:
        return  # failed or stopped already, for a reason of its own
    if lease is not None and store.lease_of(task_id)[0] != lease:
        return  # another attempt's result
    store.update_task(task_id, status_reason=redact(LATE_FAILURE + cause))


def succeeded(info: TaskInfo) -> bool:
    """Whether a task ended well: ``completed``, and its script did not fail after that."""
    return info.status == Status.completed.value and \
        not info.status_reason.startswith(LATE_FAILURE)


def describe_end(info: TaskInfo) -> str:
    """How a task ended, for a message: ``failed: why``, ``completed, then the script
    failed: why``, or its status alone.
    """
    if info.status == Status.completed.value and not succeeded(info):
        return f"{info.status}, {info.status_reason}"
    return f"{info.status}: {info.status_reason}" if info.status_reason else info.status


def run_job(job: Job, on_start: Callable[[int], None] | None = None) -> Outcome:
    """Run a job in this process to its end; a task the worker could not start is failed
    with why. What every executor calls, in a thread, a pool process or inline.

    :param on_start: called with a script task's child pid once it runs (to cancel it).
    """
    try:
        info = run_task(job.task_id, on_start=on_start)
    except Exception as exc:
        outcome = outcome_of(job.task_id)
        return outcome or settle(job.task_id, f"{type(exc).__name__}: {exc}")
    if Status(info.status).is_final:  # as it ended: read after its final write
        return Outcome(info.status, info.status_reason)
    return outcome_of(job.task_id) or settle(job.task_id, "the worker returned early")


def run_job_in_child(job: Job, home: str, db: str, artifacts: str | None = None) -> Outcome:
    """:func:`run_job` in a fresh process (a pool worker), on the store at ``home``/``db``
    with its objects at ``artifacts`` (:attr:`pipekit.config.Settings.artifacts_setting`;
    ``None``: the default folder).

    A pool worker whose controller died would wait for its next job forever: once its
    parent is gone it exits, after finishing (and committing) the job it runs, if any.
    """
    _watch_parent()
    os.environ[CONTROLLER_PID_ENV] = str(_watching[0])
    configure(home=home, db=db, artifacts=artifacts)
    with _busy:
        return run_job(job)


_busy = threading.Lock()  # held while a pool worker runs a job
_watching: list[int] = []


def _watch_parent(interval: float = 1.0) -> None:
    """Start (once per process) a thread that ends this process when its parent is gone."""
    if _watching:
        return
    _watching.append(os.getppid())

    def watch() -> None:
        while os.getppid() == _watching[0]:
            time.sleep(interval)  # not synchronisation: a liveness check's pace
        with _busy:  # a job in flight finishes (and commits) first
            os._exit(0)

    threading.Thread(target=watch, name="pipekit-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """``python -m pipekit.worker [--quiet] TASK``: exit 0 when the task completed; else 1,
    with the reason as one line on stderr (2: bad usage).
    """
    args = sys.argv[1:] if argv is None else argv
    quiet = "--quiet" in args
    args = [a for a in args if a != "--quiet"]
    if len(args) != 1:
        print("usage: python -m pipekit.worker [--quiet] TASK_ID", file=sys.stderr)
        return 2
    try:
        info = _execute(args[0], quiet)
    except PipekitError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if not succeeded(info) and not quiet:
        print(f"task {info.id} {describe_end(info)}", file=sys.stderr)
    return 0 if succeeded(info) else 1


def _execute(task: str, quiet: bool) -> TaskInfo:
    """Run ``task`` here as ``main`` does; returns it as it ended."""
    store = get_store()
    task_id = store.resolve_task_id(task)
    lease = context.lease_for(task_id)  # an agent started this process for a claimed task
    if store.get_task(task_id).is_function:
        if not quiet:
            return call(task_id, lease=lease)
        # This process is the step: everything written to fd 1/2 (by Python, C extensions
        # or children) goes to the task log through a pipe, as a script step's piped output
        # does, with the secrets the step resolves masked on the way.
        log_path = store.log_path(task_id)
        read, write = os.pipe()
        copier = threading.Thread(target=pump, args=(os.fdopen(read, "rb"), log_path),
                                  name="pipekit-step-output", daemon=True)
        copier.start()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)

        def drain() -> None:
            if not copier.is_alive():
                return
            sys.stdout.flush()
            sys.stderr.flush()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)  # the pipe's last writers here: the copier sees its end
            os.dup2(devnull, 2)
            os.close(devnull)
            # (a step's orphaned grandchild may hold the pipe open: it is not waited for)
            copier.join(timeout=5)

        try:
            info = call(task_id, capture=False, lease=lease, before_finish=drain)
        finally:
            drain()
        if log_path.exists():
            store.set_log_size(task_id, log_path.stat().st_size)
        return info
    return run_task(task_id, echo=None if quiet else sys.stdout.buffer, lease=lease)


if __name__ == "__main__":
    sys.exit(main())
