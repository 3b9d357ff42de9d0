"""RELIABILITY 25: soak (slow, ``make test-all``). For ``PIPEKIT_SOAK_SECONDS`` (default 30
minutes), random pipelines run, locally or through agents, while random SIGKILLs hit their
steps, their agents and their controllers. A run whose controller died is resumed. In the end
every run is terminal, the cascade invariant holds, ``integrity_check`` is ``ok``, no step
that completed lost its outputs, and no process of any run is left.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from pipeline_helpers import assert_cascade

from pipekit.restore import unverified
from pipekit.store import get_store
from pipekit.testing import wait_until

SCRIPT = Path(__file__).resolve().parent / "cli_scripts" / "recover.py"
PIPEKIT = str(Path(sys.executable).with_name("pipekit"))
SECONDS = float(os.environ.get("PIPEKIT_SOAK_SECONDS", "1800"))


def _ours(home: Path) -> list[psutil.Process]:
    """Every live process started for this test's store (by its environment)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get("PIPEKIT_HOME") == str(home) \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _kill_something(rng: random.Random, controller: subprocess.Popen, home: Path) -> str:
    """SIGKILL the controller, a step or an agent of this test, at random."""
    victims = [p for p in _ours(home) if p.pid != controller.pid]
    choice = rng.choice(["controller", "step", "step"] if victims else ["controller"])
    if choice == "controller":
        os.killpg(controller.pid, signal.SIGKILL)
        return "controller"
    victim = rng.choice(victims)
    try:
        victim.kill()
    except psutil.Error:
        pass
    return f"process {victim.pid}"


@pytest.mark.slow
@pytest.mark.timeout(int(SECONDS) + 900)
def test_soak_random_pipelines_with_random_kills_end_terminal_or_resumed(
        tmp_path: Path, agents, monkeypatch: pytest.MonkeyPatch) -> None:
    seed = int(os.environ.get("PIPEKIT_SOAK_SEED", str(time.time_ns() % 2**32)))
    print(f"soak seed {seed} (PIPEKIT_SOAK_SEED={seed} replays it)")
    rng = random.Random(seed)
    monkeypatch.setenv("PIPEKIT_TEST_MARKS", str(tmp_path))
    monkeypatch.setenv("PIPEKIT_LEASE_TTL", "4")
    monkeypatch.setenv("PIPEKIT_START_TIMEOUT", "30")
    monkeypatch.setenv("PIPEKIT_PROGRESS", "0")
    store = get_store()
    home = store.settings.home
    deadline = time.monotonic() + SECONDS
    rounds = 0
    agent = None
    while time.monotonic() < deadline:
        rounds += 1
        remote = rng.random() < 0.3
        if remote and (agent is None or agent.poll() is not None):  # (a kill may end it)
            agent = agents("--queue", "steps", "--create-queue", "--workers", "2")
        controller = subprocess.Popen(
            [sys.executable, str(SCRIPT), *(["--remote"] if remote else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.2, 3.0))  # when to strike: the randomness under test
        what = _kill_something(rng, controller, home) if rng.random() < 0.7 else "nothing"
        if remote and agent is not None and agent.poll() is not None:
            agent = agents("--queue", "steps", "--workers", "2")  # the steps need one
        controller.wait(timeout=300)
        for run in store.list_runs():
            if store.get_task(run.id).status == "in_progress":
                done = subprocess.run([PIPEKIT, "resume", run.id, "--force"],
                                      capture_output=True, text=True, timeout=300)
                assert store.get_task(run.id).status in ("completed", "failed"), (
                    seed, rounds, what, done.stderr)
    # every run ended whole; what completed kept its outputs; nothing of ours runs on
    for run in store.list_runs():
        assert_cascade(run.id)
        for step in store.find_tasks(parent=run.id):
            if step.status == "completed":
                assert unverified(store, step.id) is None, (seed, step.id)
    assert store.integrity_check() == "ok"
    for proc in [p for p in _ours(home) if "agent" not in " ".join(p.cmdline())]:
        wait_until(lambda proc=proc: not proc.is_running()
                   or proc.status() == psutil.STATUS_ZOMBIE, 60,
                   f"process {proc.pid} ({' '.join(proc.cmdline())}) to end")
    print(f"soak: {rounds} rounds, {len(store.list_runs())} runs")
