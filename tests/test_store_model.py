"""RELIABILITY 23: the store's queue, leases and run ownership, driven by hypothesis against a
model of what they must do, under a fake clock.

Every example opens a fresh store (its own ``PIPEKIT_HOME``) and runs a random sequence of
what controllers, agents, reapers and ``pipekit resume`` do to it. Controllers: start a run,
enqueue a step, end the run (``completed``/``failed``) or have it aborted (``stopped``), fail
a step no agent took within the start timeout, crash (stop beating; time passes), wake up
stale. ``pipekit resume``: take the run over with the ``(owner, heartbeat)`` read before,
while a second taker with the same stale read must lose. Agents (``agent-a/b/c``): claim,
heartbeat, complete (an artifact put under the lease, then ``completed``), fail, give a step
back, freeze (SIGSTOP) and thaw, a late result perhaps coming before the heartbeat that tells
the agent it lost the step. Time: the clock moves, reapers run.

Leases expire because the rules move the clock, never by sleeping: the store's modules see a
:class:`FakeClock` in place of :mod:`time`.

After every rule the invariants hold (:meth:`StoreModel.invariants_hold`): at most one live
lease per step; a terminal task's status never changes; attempts only grow; every completed
step holds the artifact its completing attempt put (a zombie's is refused); every enqueued
step is exactly one of queued / in progress (under a lease) / terminal; a terminal run has no
open step or node (RELIABILITY 12); a run has one owner, and a taker that lost never becomes
it; and the store agrees with the model. Each rule also checks what its own calls return.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import pipekit
import pipekit.runs
import pipekit.store.agents
import pipekit.store.base
import pipekit.store.outputs
import pipekit.store.queues
import pipekit.store.runs
import pipekit.store.tasks
from pipekit.config import DB_ENV, HOME_ENV, LEASE_TTL_ENV
from pipekit.errors import LeaseLost, RunBusy
from pipekit.models import FINAL_STATUSES, Lease, ObjectRef, Status, TaskType
from pipekit.store import get_store, reset_store

TTL = 10.0
QUEUE = "default"
WORKERS = ("agent-a", "agent-b", "agent-c")
START_TIMEOUT = 3 * TTL
MAX_RUNS = 5  # in all, of which two at most are open at once
MAX_STEPS = 4  # per run
OPEN = (Status.created, Status.queued, Status.in_progress)
#: how many more claims a step gets when its worker is lost (pipekit's default, 1, first:
#: hypothesis tries first choices most, and a retry is what lets a zombie meet attempt 2)
LOST_RETRIES = st.sampled_from([1, 2, 0])

#: where each example's store lives: memory when the system offers it (this tests the store's
#: logic, not its durability, and a commit's fsync would be most of an example's time)
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
#: the modules whose ``time.time()`` is the fake clock
CLOCKED = (pipekit.store.base, pipekit.store.agents, pipekit.store.tasks, pipekit.store.outputs,
           pipekit.store.runs, pipekit.store.queues, pipekit.runs)


class FakeClock:
    """:mod:`time` as the store sees it: ``time()`` stands still but for a millisecond per
    read (two writes never share a timestamp, as with a real clock) and the jumps the rules
    make; everything else is the real module's.
    """

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        self.now += 0.001
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


@attrs.define
class StepModel:
    run: str
    name: str
    seq: int  # enqueue order: claims take the oldest first
    enqueued: float
    max_attempts: int
    status: Status = Status.queued
    attempt: int = 0  # the queue entry's attempt: the fencing token
    lease: Lease | None = None  # the claim the entry names (None once reaped or given back)
    expires: float | None = None
    committed: bytes | None = None  # the artifact its completing attempt put
    final: Status | None = None  # its first terminal status: never to change


@attrs.define
class RunModel:
    owner: str
    heartbeat: float
    status: Status = Status.in_progress
    frozen: bool = False  # its owner stopped beating (crashed, or stopped and may come back)
    deposed: list[str] = attrs.Factory(list)  # owners it had, taken over since
    final: Status | None = None


@attrs.frozen
class Snapshot:
    """The store as the invariants read it: ``steps`` ``{id: (status, worker, attempt,
    lease_expires, max_attempts)}`` (the last four from its queue entry), ``runs``
    ``{id: (status, owner, heartbeat)}``, ``nodes`` ``[(run, name, status, task)]`` and
    ``artifacts`` ``{step id: inline bytes}`` of the artifact named ``out``."""

    steps: dict
    runs: dict
    nodes: list
    artifacts: dict


@attrs.define
class Held:
    """A claim an agent holds (or, a zombie, believes it holds)."""

    task: str
    worker: str
    lease: Lease
    dropped: bool = False  # the agent learnt it lost it, or finished with it


def artifact(text: str) -> ObjectRef:
    """A small artifact whose bytes (inline) are ``text``: who put it, and when."""
    data = text.encode()
    return ObjectRef(digest=hashlib.sha256(data).hexdigest(), size=len(data),
                     serializer="bytes", type="bytes", filename="out.bin", inline=data)


def pick(items, i):
    """Item ``i`` (modulo) of ``items`` in the order they were made (not by their random
    ids: hypothesis must be able to replay an example)."""
    items = list(items)
    return items[i % len(items)]


class StoreModel(RuleBasedStateMachine):
    #: the file of a new, migrated store with its queue: each example's store starts as a
    #: copy (migrating a new store is most of what opening one costs, and hypothesis runs
    #: and shrinks hundreds of examples)
    empty_store: bytes | None = None

    def __init__(self) -> None:
        super().__init__()
        self.saved_env = {k: os.environ.get(k) for k in (HOME_ENV, DB_ENV, LEASE_TTL_ENV)}
        self.home = Path(tempfile.mkdtemp(prefix="pipekit-model-", dir=SCRATCH))
        pipekit.configure(home=self.home, lease_ttl=TTL)
        reset_store()
        db_file = self.home / "pipekit.db"
        if StoreModel.empty_store is None:
            get_store().ensure_queue(QUEUE)
            reset_store()  # closed: its write-ahead log is folded into the file
            StoreModel.empty_store = db_file.read_bytes()
        else:
            fd = os.open(db_file, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(StoreModel.empty_store)
        self.clock = FakeClock(1_700_000_000.0)
        self.saved_time = [(module, module.time) for module in CLOCKED]
        for module in CLOCKED:
            module.time = self.clock
        self.store = get_store()
        self.runs: dict[str, RunModel] = {}
        self.steps: dict[str, StepModel] = {}
        self.claims: list[Held] = []  # every claim ever made, zombies' included
        self.losers: set[str] = set()  # takers refused or beaten: never the owner
        self.frozen: set[str] = set()  # agents stopped (SIGSTOP): they do nothing till thawed
        self.seen_attempts: dict[str, int] = {}
        self.names = 0

    def teardown(self) -> None:
        for module, real in self.saved_time:
            module.time = real
        reset_store()
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(self.home, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        self.names += 1
        return f"{prefix}-{self.names}"

    def live_runs(self) -> list[str]:
        """Runs whose controller drives them (in progress, owner beating)."""
        return [r for r, m in self.runs.items() if m.status is Status.in_progress and not m.frozen]

    def open_runs(self) -> list[str]:
        return [r for r, m in self.runs.items() if m.status is Status.in_progress]

    def held(self) -> list[Held]:
        return [h for h in self.claims if not h.dropped]

    def current(self, h: Held) -> bool:
        """Whether the queue entry still names this claim (what the fence checks)."""
        return self.steps[h.task].lease == h.lease

    def end_steps(self, run_id: str) -> None:
        """What ending a run does to its steps: every open one is stopped."""
        for step in self.steps.values():
            if step.run == run_id and step.status in OPEN:
                step.status = step.final = Status.stopped

    def finish_model_run(self, run_id: str, status: Status) -> None:
        run = self.runs[run_id]
        run.status = run.final = status
        self.end_steps(run_id)

    def queue_counts_agree(self) -> None:
        """``pipekit queues ls`` counts what waits and what runs as the model does."""
        [queue] = [q for q in self.store.list_queues() if q.name == QUEUE]
        waiting = sum(s.status is Status.queued for s in self.steps.values())
        running = sum(s.status is Status.in_progress for s in self.steps.values())
        assert (queue.pending, queue.running) == (waiting, running)

    def rows(self):
        steps = self.store.db.execute_sql(
            "SELECT t.id, t.status, e.worker, e.attempt, e.lease_expires, e.max_attempts "
            "FROM task t LEFT JOIN queue_entry e ON e.task_id = t.id "
            "WHERE t.parent IS NOT NULL").fetchall()
        return {r[0]: r[1:] for r in steps}

    # -- controllers ------------------------------------------------------------------------

    @initialize(retries=st.lists(LOST_RETRIES, min_size=1, max_size=3))
    def first_run(self, retries: list[int]) -> None:
        self.start_run()
        for lost_retries in retries:
            self.enqueue_step(0, lost_retries)

    @precondition(lambda self: len(self.open_runs()) < 2 and len(self.runs) < MAX_RUNS)
    @rule()
    def start_run(self) -> None:
        task = self.store.create_task(project="model", name=self.fresh("run"),
                                      type=TaskType.controller.value, status=Status.in_progress)
        self.store.create_run(task.id, dag={"nodes": []})
        owner = self.fresh("controller")
        assert self.store.beat_run(task.id, owner)
        self.runs[task.id] = RunModel(owner, self.store.get_run(task.id).heartbeat)

    def growing(self) -> list[str]:
        """Live runs that may have another step."""
        return [r for r in self.live_runs()
                if sum(s.run == r for s in self.steps.values()) < MAX_STEPS]

    @precondition(lambda self: self.growing())
    @rule(which=st.integers(0, 3), lost_retries=LOST_RETRIES)
    def enqueue_step(self, which: int, lost_retries: int) -> None:
        run_id = pick(self.growing(), which)
        name = self.fresh("step")
        task = self.store.create_task(project="model", name=name, parent=run_id)
        self.store.add_node(run_id, name, [])
        self.store.set_node(run_id, name, "in_progress", task=task.id)
        self.store.enqueue(task.id, QUEUE, lost_retries=lost_retries)
        self.steps[task.id] = StepModel(run_id, name, len(self.steps), self.clock.now,
                                        1 + lost_retries)

    def controllers_beat(self) -> None:
        """Every controller still driving its run beats (a live one does every TTL / 3)."""
        for run_id in self.live_runs():
            run = self.runs[run_id]
            assert self.store.beat_run(run_id, run.owner)
            run.heartbeat = self.store.get_run(run_id).heartbeat

    @precondition(lambda self: self.open_runs())
    @rule(which=st.integers(0, 3),
          status=st.sampled_from([Status.stopped, Status.failed, Status.completed]))
    def end_run(self, which: int, status: Status) -> None:
        """The run ends: ``stopped`` is ``pipekit runs abort`` (whoever asks, whatever the
        run's state); ``completed``/``failed`` its controller ending it (its owner, while it
        drives it)."""
        if status is Status.stopped:
            run_id = pick(self.runs, which)
            moved = self.store.finish_run(run_id, Status.stopped, "aborted by user")
            assert moved == (self.runs[run_id].status is Status.in_progress)
        else:
            # a controller completes its run once its steps ended; it may fail it any time
            runs = [r for r in self.live_runs() if status is Status.failed or all(
                s.status.is_final for s in self.steps.values() if s.run == r)]
            if not runs:
                return
            run_id = pick(runs, which)
            moved = self.store.finish_run(run_id, status, "" if status is Status.completed
                                          else "a step failed", owner=self.runs[run_id].owner)
            assert moved
        if moved:
            self.finish_model_run(run_id, status)

    @precondition(lambda self: self.live_runs())
    @rule(which=st.integers(0, 3))
    def crash_controller(self, which: int) -> None:
        """The controller stops beating (killed, or frozen and maybe back later)."""
        self.runs[pick(self.live_runs(), which)].frozen = True
        self.clock.advance(TTL + 1)

    @precondition(lambda self: any(m.frozen or m.deposed for m in self.runs.values()
                                   if m.status is Status.in_progress))
    @rule(which=st.integers(0, 7), ends=st.booleans())
    def stale_controller_wakes(self, which: int, ends: bool) -> None:
        """A controller that was frozen (or was taken over) comes back: it beats, and maybe
        ends the run. Only one that is still the owner may do either."""
        candidates = [(r, o) for r, m in self.runs.items() if m.status is Status.in_progress
                      for o in ([m.owner] if m.frozen else []) + m.deposed]
        run_id, owner = pick(candidates, which)
        run = self.runs[run_id]
        still = owner == run.owner
        event(f"stale controller wakes: {'still the owner' if still else 'deposed'}")
        assert self.store.beat_run(run_id, owner) == still
        if still:
            run.frozen = False
            run.heartbeat = self.store.get_run(run_id).heartbeat
        if ends:
            moved = self.store.finish_run(run_id, Status.failed, "controller gave up",
                                          owner=owner)
            assert moved == (still and run.status is Status.in_progress)
            if still:  # (a run already ended only has its already-ended steps)
                self.end_steps(run_id)
                if moved:
                    self.finish_model_run(run_id, Status.failed)

    @precondition(lambda self: self.open_runs())
    @rule(which=st.integers(0, 3), force=st.booleans(), beat_between=st.booleans())
    def resume(self, which: int, force: bool, beat_between: bool) -> None:
        """``pipekit resume``: a taker reads the run's (owner, heartbeat), judges it lost (or
        forces), and takes it with that read; a second taker with the same read must lose.
        With ``beat_between`` the old owner beats between the read and the takes: both lose.
        """
        run_id = pick(self.open_runs(), which)
        run = self.runs[run_id]
        record = self.store.get_run(run_id)
        assert (record.owner, record.heartbeat) == (run.owner, run.heartbeat)
        if abs(run.heartbeat - (self.clock.now - TTL)) < 0.01:
            # At the lease's last instant the answer turns on the few clock ticks between the
            # checks below (each read moves the clock a millisecond): step off the boundary.
            self.clock.advance(0.02)
        alive = run.heartbeat >= self.clock.now - TTL
        assert pipekit.runs.owner_alive(record) == alive
        first, second = self.fresh("resume"), self.fresh("resume")
        event(f"resume: alive={alive} force={force} beat_between={beat_between and not run.frozen}")
        if alive and not force:
            with pytest.raises(RunBusy):
                pipekit.runs.take_run(run_id, first, store=self.store)
            self.losers.add(first)
            return
        previous = (record.owner, record.heartbeat)
        beat_between = beat_between and not run.frozen
        if beat_between:
            assert self.store.beat_run(run_id, run.owner)
            run.heartbeat = self.store.get_run(run_id).heartbeat
            assert not self.store.take_run(run_id, first, previous=previous)
            self.losers.add(first)
        else:
            pipekit.runs.take_run(run_id, first, force=force, store=self.store)
        assert not self.store.take_run(run_id, second, previous=previous)
        self.losers.add(second)
        if not beat_between:
            run.deposed.append(run.owner)
            run.owner, run.frozen = first, False
            run.heartbeat = self.store.get_run(run_id).heartbeat

    # -- agents -----------------------------------------------------------------------------

    def awake(self) -> list[str]:
        return [w for w in WORKERS if w not in self.frozen]

    def queued(self) -> list[str]:
        return [t for t, s in self.steps.items() if s.status is Status.queued]

    @precondition(lambda self: self.awake() and self.queued())
    @rule()
    def claim(self) -> None:
        """The next awake agent in turn claims the oldest queued step; once none is left,
        another agent's claim gets nothing."""
        awake = self.awake()
        worker = awake[len(self.claims) % len(awake)]
        queued = self.queued()
        claim = self.store.claim([QUEUE], worker, lease=TTL)
        assert claim is not None
        task_id = claim.task.id
        assert task_id == min(queued, key=lambda t: self.steps[t].seq)  # the oldest first
        step = self.steps[task_id]
        earlier = [h.lease for h in self.claims if h.task == task_id]
        assert claim.lease == Lease(worker, step.attempt + 1)
        assert all(old.attempt < claim.lease.attempt for old in earlier)
        assert (claim.task.status, claim.task.worker) == (Status.in_progress.value, worker)
        step.status, step.attempt, step.lease = Status.in_progress, claim.lease.attempt, claim.lease
        step.expires = claim.expires
        for h in self.held():  # an agent keeps one slot per task: a lost attempt's is reused
            if (h.task, h.worker) == (task_id, worker):
                h.dropped = True
        self.claims.append(Held(task_id, worker, claim.lease))
        self.queue_counts_agree()
        # Every earlier attempt is fenced out the moment this one is claimed: its heartbeat
        # extends nothing, its results land nowhere.
        for old in earlier:
            assert self.store.heartbeat([(task_id, old)], ttl=TTL) == set()
            with pytest.raises(LeaseLost):
                self.store.put_artifact(task_id, "out", artifact(f"{old}"), lease=old)
            assert not self.store.set_status(task_id, Status.completed, lease=old)
        if not self.queued():
            assert self.store.claim([QUEUE], awake[len(self.claims) % len(awake)],
                                    lease=TTL) is None

    @precondition(lambda self: self.awake_held())
    @rule(which=st.integers(0, 2))
    def heartbeat(self, which: int) -> None:
        """An awake agent extends its leases; one it no longer holds it stops running."""
        self.agent_beats(pick(dict.fromkeys(h.worker for h in self.awake_held()), which))

    def agent_beats(self, worker: str) -> None:
        mine = [h for h in self.held() if h.worker == worker]
        kept = self.store.heartbeat([(h.task, h.lease) for h in mine], ttl=TTL)
        assert kept == {h.task for h in mine if self.current(h)
                        and self.steps[h.task].status is Status.in_progress}
        for h in mine:
            if h.task in kept:
                lease, expires = self.store.lease_of(h.task)
                assert lease == h.lease and expires > self.clock.now + TTL - 1
                self.steps[h.task].expires = expires
            else:
                h.dropped = True

    @rule(seconds=st.sampled_from([TTL + 1, TTL / 2, TTL / 3, 1.0]),
          then=st.sampled_from(["a reaper runs", "controllers beat", "both", "nothing"]))
    def advance_clock(self, seconds: float, then: str) -> None:
        """Time passes; then an agent's or controller's reaper runs, and/or the controllers
        still driving their runs beat (each does, every TTL / 3, while it lives)."""
        self.clock.advance(seconds)
        if then in ("controllers beat", "both"):
            self.controllers_beat()
        if then in ("a reaper runs", "both"):
            self.reap()

    def expired(self) -> list[str]:
        return [t for t, s in self.steps.items()
                if s.status is Status.in_progress and s.expires < self.clock.now]

    @precondition(lambda self: self.expired())
    @rule()
    def reap(self) -> None:
        """Expired leases of running steps become another attempt, or "worker lost" (a
        reaper with nothing to do runs when time passes, :meth:`advance_clock`)."""
        now = self.clock.now
        expected = {}
        for task_id, step in self.steps.items():
            if step.status is Status.in_progress and step.expires < now:
                action = "requeued" if step.attempt < step.max_attempts else "failed"
                expected[task_id] = (action, step.lease)
        reaped = self.store.reap(now=now)
        for action, _ in expected.values():
            event(f"reap: {action}")
        assert {r.task: (r.action, r.lease) for r in reaped} == expected
        for task_id, (action, _) in expected.items():
            step = self.steps[task_id]
            step.lease = step.expires = None
            if action == "failed":
                step.status = step.final = Status.failed
            else:
                step.status = Status.queued
        # no step is left running on a lease that expired before the reaper ran
        for task_id, (status, _w, _a, expires, _m) in self.rows().items():
            assert not (status == Status.in_progress.value and expires < now), task_id

    def awake_held(self) -> list[Held]:
        return [h for h in self.held() if h.worker not in self.frozen]

    @precondition(lambda self: self.awake_held())
    @rule(which=st.integers(0, 15), fail=st.booleans())
    def finish(self, which: int, fail: bool) -> None:
        """An agent ends the step it holds: completing puts the step's artifact under its
        lease, then marks it ``completed``; failing marks it ``failed``. A zombie (a claim
        reaped since) is refused both."""
        self.end_claim(pick(self.awake_held(), which), fail)

    @precondition(lambda self: any(h.worker not in self.frozen for h in self.held()))
    @rule(which=st.integers(0, 2))
    def freeze_agent(self, which: int) -> None:
        """An agent holding a claim stops (SIGSTOP, a long pause): it neither beats, claims
        nor ends anything until it is thawed; its leases run out meanwhile."""
        self.frozen.add(pick(dict.fromkeys(h.worker for h in self.held()
                                           if h.worker not in self.frozen), which))

    @precondition(lambda self: self.frozen)
    @rule(which=st.integers(0, 2),
          first=st.sampled_from(["its step completes", "its step fails", "it beats"]))
    def thaw_agent(self, which: int, first: str) -> None:
        """RELIABILITY 9: a frozen agent wakes. Its step's late result may come before its
        heartbeat tells it that it lost the step (reaped, perhaps claimed again): that result
        must be refused; then it beats, and stops what it no longer holds."""
        worker = pick(sorted(self.frozen), which)
        self.frozen.discard(worker)
        mine = [h for h in self.held() if h.worker == worker]
        if mine and first != "it beats":
            self.end_claim(mine[0], first == "its step fails")
        self.agent_beats(worker)

    def end_claim(self, h: Held, fail: bool) -> None:
        step = self.steps[h.task]
        current = self.current(h)
        moves = current and step.status is Status.in_progress
        event(f"finish: {'fail' if fail else 'complete'} "
              f"{'moves' if moves else 'current, task ended' if current else 'zombie'}")
        h.dropped = True
        if fail:
            assert self.store.set_status(h.task, Status.failed, reason="step raised",
                                         lease=h.lease) == moves
            if moves:
                step.status = step.final = Status.failed
                self.store.set_node(step.run, step.name, "failed", task=h.task)
            return
        ref = artifact(f"{h.lease}@{self.clock.now:.3f}")
        if current:
            self.store.put_artifact(h.task, "out", ref, lease=h.lease)
        else:
            with pytest.raises(LeaseLost):
                self.store.put_artifact(h.task, "out", ref, lease=h.lease)
        assert self.store.set_status(h.task, Status.completed, lease=h.lease) == moves
        if moves:
            step.status = step.final = Status.completed
            step.committed = ref.inline
            self.store.set_node(step.run, step.name, "completed", task=h.task)

    @precondition(lambda self: self.awake_held())
    @rule(which=st.integers(0, 15))
    def give_back(self, which: int) -> None:
        """An agent shutting down releases its claim: queued again, no attempt used."""
        h = pick(self.awake_held(), which)
        step = self.steps[h.task]
        moves = self.current(h) and step.status is Status.in_progress
        h.dropped = True
        assert self.store.release(h.task, h.lease, "agent shut down") == moves
        if moves:
            step.status, step.lease, step.expires = Status.queued, None, None
            step.max_attempts += 1

    def waited(self) -> list[str]:
        """Steps enqueued a start timeout ago that have not ended."""
        return [t for t, s in self.steps.items() if not s.status.is_final
                and s.enqueued <= self.clock.now - START_TIMEOUT]

    @precondition(lambda self: self.waited())
    @rule(which=st.integers(0, 7))
    def start_timeout(self, which: int) -> None:
        """A step was enqueued a start timeout ago, and its controller saw no agent take it:
        it fails "no agent listening", unless an agent claimed it meanwhile (or it ended)."""
        task_id = pick(self.waited(), which)
        step = self.steps[task_id]
        moves = step.status is Status.queued
        assert self.store.fail_queued(task_id, "no agent listening on queue 'default'") == moves
        if moves:
            step.status = step.final = Status.failed

    # -- invariants -------------------------------------------------------------------------
    # One snapshot of the store (plain SQL: cheap enough to take after every rule), checked
    # by each named invariant in turn.

    @invariant()
    def invariants_hold(self) -> None:
        db = self.store.db
        snap = Snapshot(
            steps={r[0]: r[1:] for r in db.execute_sql(
                "SELECT t.id, t.status, e.worker, e.attempt, e.lease_expires, e.max_attempts "
                "FROM task t LEFT JOIN queue_entry e ON e.task_id = t.id "
                "WHERE t.parent IS NOT NULL").fetchall()},
            runs={r[0]: r[1:] for r in db.execute_sql(
                "SELECT r.task_id, t.status, r.owner, r.heartbeat FROM run r "
                "JOIN task t ON t.id = r.task_id").fetchall()},
            nodes=db.execute_sql(
                "SELECT n.run_id, n.name, n.status, n.task FROM node n").fetchall(),
            artifacts=dict(db.execute_sql(
                "SELECT task_id, inline FROM artifact WHERE name = 'out'").fetchall()))
        self.at_most_one_live_lease_per_step(snap)
        self.terminal_states_are_immutable(snap)
        self.attempts_only_grow(snap)
        self.completed_steps_have_their_artifact(snap)
        self.counts_are_conserved(snap)
        self.a_terminal_run_has_no_open_step(snap)
        self.each_run_has_one_owner_never_a_loser(snap)
        self.the_store_agrees_with_the_model(snap)

    def at_most_one_live_lease_per_step(self, snap: Snapshot) -> None:
        """Of every claim ever made on a step (zombies' included), at most one is what the
        step's queue entry names (the fence lets it write), and so at most one is live."""
        now = self.clock.now
        for task_id, (status, worker, attempt, expires, _m) in snap.steps.items():
            fenced_in = [h for h in self.claims if h.task == task_id
                         and (h.lease.worker, h.lease.attempt) == (worker, attempt)]
            assert len(fenced_in) <= 1, (task_id, fenced_in)
            live = [h for h in fenced_in if status == Status.in_progress.value
                    and expires is not None and expires > now]
            assert len(live) <= 1, (task_id, live)

    def terminal_states_are_immutable(self, snap: Snapshot) -> None:
        """A step or run once completed, failed or stopped keeps that status."""
        for task_id, step in self.steps.items():
            if step.final is not None:
                assert snap.steps[task_id][0] == step.final.value, (task_id, step,
                                                                    snap.steps[task_id])
        for run_id, run in self.runs.items():
            if run.final is not None:
                assert snap.runs[run_id][0] == run.final.value, (run_id, run)

    def attempts_only_grow(self, snap: Snapshot) -> None:
        """A step's attempt (its fencing token) never goes back."""
        for task_id, (_s, _w, attempt, _e, _m) in snap.steps.items():
            assert attempt is not None and attempt >= self.seen_attempts.get(task_id, 0), (
                task_id, attempt, self.seen_attempts.get(task_id))
            self.seen_attempts[task_id] = attempt

    def completed_steps_have_their_artifact(self, snap: Snapshot) -> None:
        """A completed step holds the artifact its completing attempt put, no other."""
        for task_id, (status, *_rest) in snap.steps.items():
            if status == Status.completed.value:
                assert task_id in snap.artifacts, f"completed step {task_id} has no artifact"
                assert bytes(snap.artifacts[task_id]) == self.steps[task_id].committed, task_id

    def counts_are_conserved(self, snap: Snapshot) -> None:
        """Every enqueued step is exactly one of: queued (claimable: no worker on its entry),
        in progress (under a lease: a worker and an expiry), terminal; nothing is lost or
        made up, and the counts are the model's."""
        assert set(snap.steps) == set(self.steps)
        counts = {"queued": 0, "in_progress": 0, "terminal": 0}
        final = {s.value for s in FINAL_STATUSES}
        for task_id, (status, worker, _a, expires, _m) in snap.steps.items():
            kinds = [kind for kind, holds in (
                ("queued", status == Status.queued.value and worker is None),
                ("in_progress", status == Status.in_progress.value and worker is not None
                 and expires is not None),
                ("terminal", status in final)) if holds]
            assert len(kinds) == 1, (task_id, snap.steps[task_id])
            counts[kinds[0]] += 1
        model = {"queued": 0, "in_progress": 0, "terminal": 0}
        for step in self.steps.values():
            model["terminal" if step.status.is_final else step.status.value] += 1
        assert counts == model

    def a_terminal_run_has_no_open_step(self, snap: Snapshot) -> None:
        """RELIABILITY 12: a run that ended has no open step task and no pending or running
        node."""
        final = {s.value for s in FINAL_STATUSES}
        ended = {r for r, (status, _o, _h) in snap.runs.items() if status in final}
        open_steps = [(t, s.run) for t, s in self.steps.items()
                      if s.run in ended and snap.steps[t][0] in {o.value for o in OPEN}]
        open_nodes = [n for n in snap.nodes
                      if n[0] in ended and n[2] in ("pending", "in_progress")]
        assert not open_steps and not open_nodes, (open_steps, open_nodes)

    def each_run_has_one_owner_never_a_loser(self, snap: Snapshot) -> None:
        """The run's owner is the last taker that won; one that lost or was refused never
        is."""
        for run_id, run in self.runs.items():
            _status, owner, heartbeat = snap.runs[run_id]
            assert owner == run.owner, (run_id, owner, run.owner)
            assert owner not in self.losers, (run_id, owner)
            assert heartbeat == run.heartbeat

    def the_store_agrees_with_the_model(self, snap: Snapshot) -> None:
        for task_id, step in self.steps.items():
            status, worker, attempt, expires, max_attempts = snap.steps[task_id]
            assert status == step.status.value, (task_id, status, step)
            assert attempt == step.attempt and max_attempts == step.max_attempts, step
            if step.status is Status.in_progress:
                assert (Lease(worker, attempt), expires) == (step.lease, step.expires), step
        for run_id, run in self.runs.items():
            assert snap.runs[run_id][0] == run.status.value, (run_id, run)


StoreModel.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
# A run that passes takes well under a minute; one that finds a bug shrinks it first, which
# may take minutes: let it, rather than report a timeout instead of the bug.
TestStoreModel = pytest.mark.timeout(900)(StoreModel.TestCase)
