"""Executors that run steps on this machine: inline, thread, process and subprocess.

* ``inline`` — in the caller, synchronously (debug mode: breakpoints work);
* ``thread`` — a thread pool (independent steps run concurrently);
* ``process`` — a pool of spawned processes;
* ``subprocess`` — one ``python -m pipekit.worker TASK`` per step, in its own session, so
  cancelling it (or its time limit) kills the whole process tree.

Cancelling marks the task ``stopped`` first and then kills what runs it; the worker's own
final status is conditional, so a cancelled task is never recorded as failed.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import attrs

import pipekit
from pipekit.config import CONTROLLER_PID_ENV, DB_ENV, HOME_ENV, get_settings
from pipekit.executor import (
    Job,
    Outcome,
    is_function_job,
    main_hidden,
    outcome_of,
    settle,
    stop,
    worker_of,
)
from pipekit.models import Status
from pipekit.worker import describe_exit, kill_tree, run_job, run_job_in_child


def _exited(pid: int) -> None:
    """Block until process ``pid`` exits, without reaping it (``Popen.poll`` does that)."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass


def _default_workers() -> int:
    return max(2, os.cpu_count() or 2)


def _run_keeping_pid(job: Job, pids: dict[str, int]) -> Outcome:
    """:func:`run_job`, remembering a script task's child pid so it can be cancelled."""
    return run_job(job, on_start=lambda pid: pids.__setitem__(job.task_id, pid))


class _Waking:
    """An executor whose jobs wake the run loop when they end (:attr:`wake`, which the
    loop sets), so an outcome is collected at once, not at the loop's next poll.
    """

    wake: Callable[[], None] | None = None

    def _woken(self, _: Any = None) -> None:
        wake = self.wake
        if wake is not None:
            wake()


@attrs.define
class _FutureHandle:
    job: Job
    future: Future[Outcome]
    #: cancelled while running in a thread that cannot be killed: the task's status rules
    cancelled: bool = False


class InlineExecutor:
    """Run each job to its end inside :meth:`submit` (debug mode)."""

    runs_in_caller = True

    def __init__(self, max_workers: int | None = None) -> None:
        """``max_workers`` is accepted for a uniform API; jobs run one at a time."""

    def submit(self, job: Job) -> Outcome:
        return run_job(job)

    def poll(self, handle: Outcome) -> Outcome | None:
        return handle

    def cancel(self, handle: Outcome) -> None:
        """Nothing to cancel: an inline job has finished when ``submit`` returns."""

    def shutdown(self, wait: bool = True) -> None:
        """Nothing to release."""


class ThreadExecutor(_Waking):
    """Run jobs on a thread pool of ``max_workers`` threads."""

    def __init__(self, max_workers: int | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers or _default_workers(),
                                        thread_name_prefix="pipekit-step")
        self._pids: dict[str, int] = {}

    def submit(self, job: Job) -> _FutureHandle:
        future = self._pool.submit(_run_keeping_pid, job, self._pids)
        future.add_done_callback(self._woken)
        return _FutureHandle(job, future)

    def poll(self, handle: _FutureHandle) -> Outcome | None:
        if handle.cancelled or handle.future.cancelled():
            return outcome_of(handle.job.task_id) or Outcome(Status.stopped.value)
        return handle.future.result() if handle.future.done() else None

    def cancel(self, handle: _FutureHandle) -> None:
        stop(handle.job.task_id)
        if handle.future.cancel():
            return
        if is_function_job(handle.job):
            handle.cancelled = True
            # A function step runs in one of our threads, which Python cannot kill: it is
            # recorded stopped now and its late results are discarded (use the subprocess
            # executor for steps that must be killed).
            return
        # Running: kill its child as soon as it is known (it may be starting right now).
        while not handle.future.done():
            pid = self._pids.get(handle.job.task_id)
            if pid is not None:
                kill_tree(pid)
                break
            time.sleep(0.005)
        handle.future.result()

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


class ProcessExecutor(_Waking):
    """Run jobs in a pool of ``max_workers`` spawned processes."""

    kills_trees = True

    def __init__(self, max_workers: int | None = None) -> None:
        self._workers = max_workers or _default_workers()
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self._workers,
                                             mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def submit(self, job: Job) -> _FutureHandle:
        settings = get_settings()
        with main_hidden():
            future = self._get_pool().submit(run_job_in_child, job, str(settings.home),
                                             settings.db_url, settings.artifacts_setting)
        future.add_done_callback(self._woken)
        return _FutureHandle(job, future)

    def poll(self, handle: _FutureHandle) -> Outcome | None:
        if not handle.future.done():
            return None
        if handle.future.cancelled():  # cancelled before a pool process took it
            return outcome_of(handle.job.task_id) or Outcome(Status.stopped.value)
        exc = handle.future.exception()
        if exc is not None:  # the pool process died under the job
            return outcome_of(handle.job.task_id) or settle(handle.job.task_id, str(exc))
        return handle.future.result()

    def cancel(self, handle: _FutureHandle) -> None:
        stop(handle.job.task_id)
        if handle.future.cancel():
            return
        # The task's worker field names the pool process running it: kill it and its
        # children, and start a fresh pool for later jobs.
        pid = (worker_of(handle.job) or "").rpartition(":")[2]
        if pid.isdigit():
            kill_tree(int(pid))
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def shutdown(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None


@attrs.define
class _ProcessHandle:
    job: Job
    proc: subprocess.Popen[bytes]
    outcome: Outcome | None = None


class SubprocessExecutor(_Waking):
    """One ``python -m pipekit.worker TASK`` process per job, in its own session."""

    kills_trees = True

    def __init__(self, max_workers: int | None = None) -> None:
        """``max_workers`` is accepted for a uniform API: the runner limits concurrency."""

    def submit(self, job: Job) -> _ProcessHandle:
        settings = get_settings()
        env = dict(os.environ, **{HOME_ENV: str(settings.home), DB_ENV: settings.db_url,
                                  CONTROLLER_PID_ENV: str(os.getpid())})
        # A step function imported from the user's own modules is pickled by reference: the
        # step process needs the controller's import path to find it again.
        paths = [p or os.getcwd() for p in sys.path]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(
            [*paths, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]))
        proc = subprocess.Popen([sys.executable, "-m", "pipekit.worker", "--quiet",
                                 job.task_id], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        if self.wake is not None:  # a step's end wakes the loop (the wait reaps nothing)
            threading.Thread(target=lambda: (_exited(proc.pid), self._woken()), daemon=True,
                             name=f"pipekit-wait-{proc.pid}").start()
        return _ProcessHandle(job, proc)

    def poll(self, handle: _ProcessHandle) -> Outcome | None:
        if handle.outcome is None:
            code = handle.proc.poll()
            if code is None:
                return None
            handle.outcome = outcome_of(handle.job.task_id) or settle(
                handle.job.task_id, describe_exit(code))
        return handle.outcome

    def cancel(self, handle: _ProcessHandle) -> None:
        stop(handle.job.task_id)
        kill_tree(handle.proc.pid)
        handle.proc.wait()
        handle.outcome = outcome_of(handle.job.task_id) or Outcome(Status.stopped.value)

    def shutdown(self, wait: bool = True) -> None:
        """Nothing pooled: every job's process ends with its job."""


@pipekit.hookimpl
def pipekit_executors(register: Any) -> None:
    register("inline", InlineExecutor)
    register("thread", ThreadExecutor)
    register("process", ProcessExecutor)
    register("subprocess", SubprocessExecutor)
