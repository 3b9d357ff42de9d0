"""Test isolation: every test gets its own store and a plugin manager of pipekit's own
entry points only (installed third-party plugins never leak in)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import pipekit
from pipekit import context, plugin_manager
from pipekit.store import reset_store

ROOT = Path(__file__).resolve().parent.parent

# Hypothesis' "input generation is slow" health check times the generator, not the code under
# test: on a loaded machine (another worker, another suite) it fails tests that are fine. Every
# example still runs, under the same deadline.
settings.register_profile("pipekit", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pipekit")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` a module marked ``xdist_group`` shares module fixtures (one
    store, server and browser) and runs its tests in order on one worker; a pytest-xdist that
    no longer tags their node ids would spread them over every worker, silently."""
    if not getattr(config.option, "loadgroup", False):
        return
    ungrouped = [item.nodeid for item in items
                 if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist did not group {ungrouped[0]} (and {len(ungrouped) - 1} more) under "
            "--dist loadgroup: this pytest / pytest-xdist pair is incompatible (see setup.cfg)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "exclusive: the test asserts on wall-clock time; under pytest-xdist it runs "
        "while no other worker runs a test (tests/conftest.py, _cpu)")
    # (pytest-xdist registers it too; without xdist, --strict-markers must still know it)
    config.addinivalue_line("markers", "xdist_group(name): run these tests in one worker")
    # The tests start hundreds of interpreters (scripts, agents, workers, the CLI), each
    # importing pipekit from its sources: with PYTHONDONTWRITEBYTECODE set, each would compile
    # them again. Let them cache bytecode (``__pycache__/`` is ignored by git).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False


# -- sharing the CPU between pytest-xdist workers -------------------------------------------------


class CpuShare:
    """Between the workers of one pytest-xdist run: a test holds this lock shared while it
    runs, an ``exclusive`` test holds it alone, so that a wall-clock assertion never measures
    another worker's load. A readers-writer lock of two ``flock`` files: every taker passes
    the turnstile first, and an exclusive taker keeps it while it waits and runs, so the other
    workers queue behind it instead of starving it. A shared hold nests within a process
    (a module fixture whose processes outlive one test holds it across its tests).
    """

    def __init__(self, folder: Path) -> None:
        self._turnstile = open(folder / "pipekit-cpu-turnstile.lock", "a+")
        self._share = open(folder / "pipekit-cpu-share.lock", "a+")
        self._depth = 0

    def close(self) -> None:
        self._turnstile.close()
        self._share.close()

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        if self._depth == 0:
            fcntl.flock(self._turnstile, fcntl.LOCK_EX)
            try:
                fcntl.flock(self._share, fcntl.LOCK_SH)
            finally:
                fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                fcntl.flock(self._share, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        assert self._depth == 0, "an exclusive test inside a shared hold of its own worker"
        fcntl.flock(self._turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._share, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._share, fcntl.LOCK_UN)
        finally:
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)


_share: CpuShare | None = None  # this worker's, once the fixture below has made it


@pytest.fixture(scope="session")
def cpu_share(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpuShare | None]:
    """The run's :class:`CpuShare` under pytest-xdist (None in a run of one process): its
    files are in the run's base temporary folder, the parent of every worker's."""
    global _share
    if not hasattr(request.config, "workerinput"):
        yield None
        return
    _share = CpuShare(tmp_path_factory.getbasetemp().parent)
    yield _share
    _share.close()
    _share = None


@pytest.fixture(autouse=True)
def _cpu(request: pytest.FixtureRequest, cpu_share: CpuShare | None) -> Iterator[None]:
    """Every test holds the CPU shared, an ``exclusive`` one alone (first of the autouse
    fixtures, by name, so that the others' set-up and tear-down are inside the hold)."""
    if cpu_share is None:
        yield
        return
    exclusive = request.node.get_closest_marker("exclusive") is not None
    with cpu_share.exclusive() if exclusive else cpu_share.shared():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest):
    """A module's or session's fixture is set up before its first test takes the CPU (a
    wheel built, a server started): it holds the CPU shared while it is set up."""
    if _share is None or fixturedef.scope == "function":
        yield
        return
    with _share.shared():
        yield


@pytest.fixture
def marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder the steps of ``tests/cli_scripts/`` leave their execution marks in
    (``$PIPEKIT_TEST_MARKS``; see :func:`pipeline_helpers.executions`); a module whose scripts
    need it takes it with ``pytestmark = pytest.mark.usefixtures("marks")``."""
    folder = tmp_path / "marks"
    folder.mkdir()
    monkeypatch.setenv("PIPEKIT_TEST_MARKS", str(folder))
    return folder


@pytest.fixture(autouse=True)
def pipekit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "pipekit-home"
    monkeypatch.setenv("PIPEKIT_HOME", str(home))
    monkeypatch.delenv("PIPEKIT_DB", raising=False)
    monkeypatch.delenv("PIPEKIT_TASK_ID", raising=False)
    monkeypatch.delenv("PIPEKIT_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("PIPEKIT_PLUGINS", raising=False)
    # no user config file reaches a test (a test that wants one points PIPEKIT_CONFIG at it)
    monkeypatch.setenv("PIPEKIT_CONFIG", str(tmp_path / "no-config.toml"))
    pipekit.configure(home=home)
    reset_store()
    plugin_manager.set_plugin_manager(plugin_manager.make_plugin_manager(dists={"pipekit"}))
    context.set_process_task(None)
    yield home
    from pipekit.logger import flush_metrics

    flush_metrics()
    _check_cascade_invariant(home)
    context.set_process_task(None)
    reset_store()
    plugin_manager.set_plugin_manager(None)


@pytest.fixture(autouse=True)
def decorator_state():
    """``PipelineDecorator`` keeps its mode in class state: restore it after each test."""
    from pipekit import PipelineDecorator

    saved = (PipelineDecorator._mode, PipelineDecorator._executor,
             PipelineDecorator._max_workers, PipelineDecorator._default_queue)
    yield
    (PipelineDecorator._mode, PipelineDecorator._executor,
     PipelineDecorator._max_workers, PipelineDecorator._default_queue) = saved
    PipelineDecorator._local.__dict__.clear()


_OPEN = "('created', 'queued', 'in_progress')"
_FINAL = "('completed', 'failed', 'stopped', 'published')"


def _check_cascade_invariant(home: Path) -> None:
    """RELIABILITY 12, after every test: a terminal run has no non-terminal step; and an
    ``in_progress`` step has a live owner: a lease that has not expired, a live process of
    its own on this host, or its run's controller alive on this host (the controller's lease
    covers its local steps while it lives).
    """
    import sqlite3
    import time

    db = home / "pipekit.db"
    if not db.exists():
        return
    conn = sqlite3.connect(db)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "node" not in tables:
            return
        open_tasks = conn.execute(
            f"SELECT c.id, c.status, p.id FROM task c JOIN task p ON c.parent = p.id "
            f"WHERE p.type = 'controller' AND p.status IN {_FINAL} AND c.status IN {_OPEN}"
        ).fetchall()
        open_nodes = conn.execute(
            f"SELECT n.name, n.status, r.task_id FROM node n JOIN run r ON n.run_id = r.task_id "
            f"JOIN task p ON p.id = r.task_id WHERE p.status IN {_FINAL} "
            f"AND n.status IN ('pending', 'in_progress')").fetchall()
        # (a store of an older schema, from a migration test, has no run owner yet)
        owner = ("r.owner" if "owner" in {c[1] for c in conn.execute("PRAGMA table_info(run)")}
                 else "NULL")
        running = conn.execute(
            f"SELECT c.id, c.name, c.worker, e.worker, e.lease_expires, p.id, {owner} "
            "FROM task c JOIN task p ON c.parent = p.id "
            "LEFT JOIN queue_entry e ON e.task_id = c.id LEFT JOIN run r ON r.task_id = p.id "
            "WHERE p.type = 'controller' AND c.status = 'in_progress'").fetchall()
    finally:
        conn.close()
    assert not open_tasks, f"terminal runs with non-terminal step tasks: {open_tasks}"
    assert not open_nodes, f"terminal runs with non-terminal nodes: {open_nodes}"
    now = time.time()
    unowned = [
        f"step {name!r} ({task_id}) of run {run_id}: worker {worker}, lease "
        f"{leased}{'' if expires is None else f' expired {now - expires:.1f} s ago'}, "
        f"controller {owner}"
        for task_id, name, worker, leased, expires, run_id, owner in running
        # (a claim made without a lease never expires: Store.claim(lease=None))
        if not (leased is not None and (expires is None or expires > now))
        and not _alive_here(worker) and not _alive_here(owner)]
    assert not unowned, ("in_progress steps with no live lease, process or controller "
                         f"behind them: {unowned}")


def _alive_here(who: str | None) -> bool:
    """Whether ``who`` (``host:pid``, an owner perhaps marked `` (resume)``) is a live process
    on this host; a zombie (exited, not yet reaped by its parent) is not.
    """
    import socket

    import psutil

    where = context.owner_process(who) if who else None
    if where is None or where[0] != socket.gethostname():
        return False
    try:
        return psutil.Process(where[1]).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's: it exists
        return True


@pytest.fixture
def store():
    from pipekit.store import get_store

    return get_store()


@pytest.fixture
def run_py(tmp_path: Path):
    """Run a Python snippet in a fresh interpreter against the test's store."""
    import subprocess
    import textwrap

    def run(code: str, *args: str, check: bool = True, timeout: float = 60,
            env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        script = tmp_path / f"snippet_{abs(hash(code))}.py"
        script.write_text(textwrap.dedent(code))
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                              text=True, timeout=timeout, env=full_env, cwd=cwd or tmp_path)
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


@pytest.fixture
def agents():
    """Start ``pipekit agent ARGS…`` processes (each in a session of its own); every one left
    is killed, with the steps it runs, at the end of the test.
    """
    import signal
    import subprocess

    pipekit_cli = str(Path(sys.executable).with_name("pipekit"))
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([pipekit_cli, "agent", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # (a test may have frozen it)
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


# PostgreSQL: the throwaway server and the fixtures that point a test at it (postgres,
# pg_store, pg_blank, backend); tests/postgres_helpers.py says how.
from postgres_helpers import backend, pg_blank, pg_store, postgres  # noqa: E402, F401
