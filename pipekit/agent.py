"""``pipekit agent``: a process that serves queues, running each task it claims under a lease.

One loop, turned every ``poll`` seconds or sooner (at once when a task is queued on one of
its queues, where the store can tell: :meth:`~pipekit.store.queues.QueueStore.watch_queues`):

* **reap** expired leases (any agent does it for every queue, so a dead agent's tasks are
  re-queued or failed "worker lost" even when no controller watches);
* **collect** the tasks it runs that ended, settling one whose process died without a final
  status;
* **stop** a task that was aborted from outside (``pipekit tasks abort``) or whose lease it
  lost, killing the task's whole session (double-forked descendants included);
* **heartbeat** its leases and itself every ``ttl / 3``;
* **claim** the next queued task while it has a free slot, in its queues' order of priority.

Each task runs in a session of its own with ``PIPEKIT_TASK_ID`` and ``PIPEKIT_LEASE`` set: a
function task as ``python -m pipekit.worker --quiet TASK``, a script task as the script itself
(the worker's :func:`~pipekit.worker.run_task`, in one of the agent's threads). Whatever the
task writes (status, artifacts, models) lands only while its lease is current.

SIGTERM or SIGINT shuts the agent down gracefully: it claims nothing more and waits up to
``grace`` seconds for what it runs, then gives the rest back to their queues (a second signal
does that at once). SIGKILL leaves its leases to expire and be reaped.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import psutil

from . import context
from .config import DB_ENV, HOME_ENV, LEASE_ENV, TASK_ENV, lease_ttl
from .errors import PipekitError
from .executor import outcome_of
from .finish import finish_task
from .models import Claim, Status
from .store import Store, get_store
from .worker import describe_exit, kill_tree, run_task

__all__ = ["Agent", "LocalAgents"]

log = logging.getLogger("pipekit.agent")


@attrs.define
class _Slot:
    """One task the agent runs: its claim, and the session its processes live in."""

    claim: Claim
    proc: subprocess.Popen[bytes] | None = None  # a function task's worker process
    thread: threading.Thread | None = None  # a script task's run_task
    sid: int | None = None  # the session (its leader's pid) to kill it by
    stopping: str | None = None  # why the agent stopped it (then nobody settles it)

    @property
    def task_id(self) -> str:
        return self.claim.task.id

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.thread is not None and self.thread.is_alive()


class Agent:
    """Serve ``queues`` with ``workers`` tasks at a time until told to stop.

    :param ttl: lease TTL in seconds (default ``PIPEKIT_LEASE_TTL``).
    :param grace: seconds a graceful shutdown waits for running tasks (default: ``ttl``).
    :param create_queues: create queues that do not exist (else they are an error).
    :param exit_when_idle: stop once nothing is queued or running for this long (tests and
        ``pipekit run``'s local agents).
    :param in_process: run function tasks in this process (a thread each) instead of a
        worker process each: no interpreter start per task, for many small trusted tasks;
        such a task cannot be killed mid-run (an abort fences its result out instead).
    """

    def __init__(self, queues: Sequence[str], *, workers: int = 1, ttl: float | None = None,
                 poll: float = 0.5, grace: float | None = None, create_queues: bool = False,
                 exit_when_idle: float | None = None, in_process: bool = False) -> None:
        if not queues:
            raise PipekitError("an agent needs at least one queue (--queue NAME)")
        if workers < 1:
            raise PipekitError(f"--workers must be at least 1, not {workers}")
        self.queues = list(dict.fromkeys(queues))
        self.workers = workers
        self.ttl = ttl if ttl is not None else lease_ttl()
        self.poll = min(poll, self.ttl / 6)
        self.grace = self.ttl if grace is None else grace
        self.create_queues = create_queues
        self.exit_when_idle = exit_when_idle
        self.in_process = in_process
        self.worker = context.worker_id()
        self.id: str | None = None
        self._slots: dict[str, _Slot] = {}
        self._stop = threading.Event()  # first signal: claim nothing more
        self._hurry = threading.Event()  # second signal: give everything back now
        self._wake = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    def stop(self, *, hurry: bool = False) -> None:
        """Ask the loop to shut down (from another thread or a signal handler)."""
        if self._stop.is_set() or hurry:
            self._hurry.set()
        self._stop.set()
        self._wake.set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.info("agent %s: signal %d, shutting down", self.id, signum)
        self.stop()

    def run(self) -> int:
        """Serve until stopped; returns the process exit status (0)."""
        store = get_store()
        self.id = store.register_agent(
            self.queues, host=socket.gethostname(), pid=os.getpid(),
            pid_started=psutil.Process().create_time(), workers=self.workers,
            create_queues=self.create_queues)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        log.info("agent %s (%s) serving %s with %d worker(s); Ctrl-C or SIGTERM to stop",
                 self.id, self.worker, ", ".join(self.queues), self.workers)
        # Woken at once when a task is queued where the database can say so (PostgreSQL's
        # NOTIFY); the loop's poll finds it otherwise.
        watch = store.watch_queues(self.queues, self._wake.set)
        try:
            self._loop(store)
        finally:
            watch.close()
            store.agent_heartbeat(self.id, [], state="stopped")
        return 0

    def _loop(self, store: Store) -> None:
        next_beat = 0.0
        idle_since = time.monotonic()
        stop_deadline: float | None = None
        while True:
            now = time.monotonic()
            self._collect(store)
            if self._stop.is_set():
                stop_deadline = stop_deadline or now + self.grace
                if self._hurry.is_set() or now >= stop_deadline:
                    self._give_back(store)
                if not self._slots:
                    return
            if now >= next_beat:
                store.reap()
                self._beat(store)
                next_beat = now + self.ttl / 3
            self._stop_aborted(store)
            if not self._stop.is_set():
                self._claim(store)
            if self.exit_when_idle is not None:
                if self._slots or store.waiting(self.queues):
                    idle_since = now
                elif now - idle_since >= self.exit_when_idle:
                    self.stop()
                    continue
            self._wake.wait(self.poll)
            self._wake.clear()

    # -- claiming and running -----------------------------------------------------------------

    def _claim(self, store: Store) -> None:
        # A read first: an idle agent does not take the write lock twice a second.
        while len(self._slots) < self.workers and store.waiting(self.queues):
            claim = store.claim(self.queues, self.worker, lease=self.ttl)
            if claim is None:
                return
            log.info("agent %s: claimed task %s from %r (attempt %d)", self.id, claim.task.id,
                     claim.queue, claim.lease.attempt)
            slot = _Slot(claim)
            self._slots[slot.task_id] = slot
            try:
                self._start(store, slot)
            except Exception as exc:  # e.g. the interpreter cannot be started
                log.exception("agent %s: could not start task %s", self.id, slot.task_id)
                finish_task(slot.task_id, Status.failed,
                            f"agent {self.worker} could not start it: {type(exc).__name__}: "
                            f"{exc}", lease=claim.lease)
                del self._slots[slot.task_id]
            self._beat_agent(store)

    def _start(self, store: Store, slot: _Slot) -> None:
        claim = slot.claim
        env = {TASK_ENV: claim.task.id, LEASE_ENV: context.lease_env(claim.lease),
               HOME_ENV: str(store.settings.home), DB_ENV: store.settings.db_url}
        if claim.task.is_function and not self.in_process:
            slot.proc = subprocess.Popen(
                [sys.executable, "-m", "pipekit.worker", "--quiet", claim.task.id],
                env=dict(os.environ, **env), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            slot.sid = slot.proc.pid
            # The loop hears of the end at once, not at its next poll.
            threading.Thread(target=self._wake_after, args=(slot.proc,),
                             name=f"pipekit-agent-wait-{slot.proc.pid}", daemon=True).start()
            return

        def on_start(pid: int) -> None:
            slot.sid = pid

        def run() -> None:
            try:
                run_task(claim.task.id, on_start=on_start, env=env, lease=claim.lease)
            except Exception as exc:
                if outcome_of(claim.task.id) is None and slot.stopping is None:
                    finish_task(claim.task.id, Status.failed, f"{type(exc).__name__}: {exc}",
                                lease=claim.lease)
            finally:
                self._wake.set()

        slot.thread = threading.Thread(target=run, name=f"pipekit-agent-{claim.task.id}",
                                       daemon=True)
        slot.thread.start()

    def _wake_after(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self._wake.set()

    def _collect(self, store: Store) -> None:
        for task_id, slot in list(self._slots.items()):
            if slot.alive():
                continue
            del self._slots[task_id]
            if slot.proc is not None and slot.stopping is None and outcome_of(task_id) is None:
                # The worker died without a final status (killed, out of memory …).
                finish_task(task_id, Status.failed, describe_exit(slot.proc.returncode),
                            lease=slot.claim.lease)
            info = store.get_task(task_id)
            log.info("agent %s: task %s ended %s", self.id, task_id, info.status)

    # -- leases and aborts --------------------------------------------------------------------

    def _beat(self, store: Store) -> None:
        held = store.heartbeat([(s.task_id, s.claim.lease) for s in self._slots.values()],
                               self.ttl)
        for task_id, slot in list(self._slots.items()):
            if task_id not in held and slot.stopping is None and slot.alive() \
                    and outcome_of(task_id) is None:
                # Reaped while we were away (stopped, or cut off): another attempt owns it.
                self._kill(slot, f"lease {slot.claim.lease} lost")
        self._beat_agent(store)

    def _beat_agent(self, store: Store) -> None:
        assert self.id is not None
        store.agent_heartbeat(self.id, list(self._slots),
                              "stopping" if self._stop.is_set() else "running")

    def _stop_aborted(self, store: Store) -> None:
        if not self._slots:
            return
        statuses = store.task_statuses(list(self._slots))
        for task_id, slot in list(self._slots.items()):
            status, _ = statuses.get(task_id, (Status.stopped.value, ""))
            if status != Status.in_progress.value and slot.stopping is None and slot.alive():
                self._kill(slot, f"task {status} from outside")

    def _kill(self, slot: _Slot, why: str) -> None:
        log.info("agent %s: stopping task %s: %s", self.id, slot.task_id, why)
        slot.stopping = why
        if slot.sid is not None:
            kill_tree(slot.sid)
        if slot.thread is not None:
            slot.thread.join(timeout=10)
        if slot.proc is not None:
            slot.proc.wait(timeout=10)

    def _give_back(self, store: Store) -> None:
        """Shutting down: every task still running goes back to its queue.

        Released first, then killed: once released, the lease is no longer current, so
        nothing the dying process writes lands.
        """
        for task_id, slot in list(self._slots.items()):
            if not slot.alive():
                continue
            if store.release(task_id, slot.claim.lease,
                             f"agent {self.worker} shut down; re-queued"):
                log.info("agent %s: task %s given back to %r", self.id, task_id,
                         slot.claim.queue)
            self._kill(slot, "agent shutting down")


class LocalAgents:
    """Agents this process starts, for as long as a run lasts, on the queues its steps wait on
    that no live agent serves: how ``pipekit run`` runs a remote-mode script on one machine
    with nothing else started.

    Use as a context manager around the run (or :meth:`start` and :meth:`close`); every agent
    it started is stopped (SIGTERM, then SIGKILL) at the end.

    :param env: more environment for the agents (and so for the steps they run).
    """

    def __init__(self, run_id: str, *, poll: float = 0.5, workers: int = 1,
                 env: Mapping[str, str] | None = None) -> None:
        self.run_id, self.poll, self.workers = run_id, poll, workers
        self.env = dict(os.environ, **(env or {}))
        # A step function imported from a module beside the script is pickled by reference:
        # the agents' steps must find it as the script did (its folder first on sys.path).
        script = get_store().get_task(run_id).script.get("path")
        if script:
            folder = os.path.dirname(os.path.abspath(script))
            paths = [folder, *filter(None, self.env.get("PYTHONPATH", "").split(os.pathsep))]
            self.env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        self.started: dict[str, subprocess.Popen[bytes]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pipekit-local-agents",
                                        daemon=True)

    def start(self) -> LocalAgents:
        """Watch the run in a background thread until :meth:`close`."""
        self._thread.start()
        return self

    def __enter__(self) -> LocalAgents:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def serve(self) -> list[str]:
        """Start an agent on each queue the run waits on that none serves; returns them."""
        store = get_store()
        live = {name for agent in store.list_agents() for name in agent.queues}
        new = [q for q in store.queues_waited_on(self.run_id)
               if q not in live and q not in self.started]
        for queue in new:
            log.info("run %s waits on queue %r, which no agent serves: starting one here",
                     self.run_id, queue)
            self.started[queue] = subprocess.Popen(
                [sys.executable, "-m", "pipekit", "agent", "--queue", queue,
                 "--workers", str(self.workers)], env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        return new

    def _watch(self) -> None:
        while not self._done.wait(self.poll):
            try:
                self.serve()
            except Exception:  # the run goes on; its steps then wait for the start timeout
                log.exception("could not start local agents for run %s", self.run_id)

    def close(self) -> None:
        """Stop the agents this process started (they give back what they still hold)."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for proc in self.started.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.started.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_tree(proc.pid)
                proc.wait()
