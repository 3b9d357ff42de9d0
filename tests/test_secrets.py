"""RELIABILITY 21: a secret given to a step as ``${env:TOKEN}`` never appears anywhere pipekit
writes — the store's database, its artifacts and logs (a byte grep over all of
``PIPEKIT_HOME``) — nor in the output of any command that shows the run, for a step that
passes and one that fails with the secret in its exception message, on every executor.
What pipekit writes has the value replaced by ``***``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from pipekit.cli import cli
from pipekit.store import get_store
from pipekit.testing import wait_until

SCRIPT = Path(__file__).resolve().parent / "cli_scripts" / "secret.py"


def leaks(home: Path, token: str) -> list[str]:
    """Every file under ``home`` whose bytes hold ``token``."""
    needle = token.encode()
    return [str(p) for p in home.rglob("*") if p.is_file() and needle in p.read_bytes()]


def pk(*args: str) -> str:
    """What ``pipekit args`` prints (stdout and stderr), run in-process."""
    result = CliRunner().invoke(cli, list(args))
    return result.stdout + result.stderr


@pytest.mark.parametrize("fail", [False, True], ids=["passes", "fails"])
@pytest.mark.parametrize("executor", ["inline", "thread", "process", "subprocess", "queue"])
def test_a_secret_never_reaches_the_store_logs_or_any_output(
        executor: str, fail: bool, tmp_path: Path, agents,
        monkeypatch: pytest.MonkeyPatch) -> None:
    token = "tok_" + secrets.token_hex(16)
    monkeypatch.setenv("TOKEN", token)
    monkeypatch.setenv("SECRET_TEST_FAIL", "1" if fail else "0")
    if executor == "queue":
        agents("--queue", "secret-q", "--create-queue")
        wait_until(lambda: any(q.name == "secret-q" and q.agents
                               for q in get_store().list_queues()), 30, "the agent")
    proc = subprocess.run([sys.executable, str(SCRIPT), executor], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr  # (start_locally() returns)
    store = get_store()
    (run,) = store.list_runs()
    (step,) = store.find_tasks(parent=run.id)
    assert step.status == ("failed" if fail else "completed"), step.status_reason
    outputs = {
        "runs ls": pk("runs", "ls"), "runs ls --json": pk("runs", "ls", "--json"),
        "runs show": pk("runs", "show", run.id), "runs show --json": pk("runs", "show", run.id,
                                                                        "--json"),
        "tasks ls": pk("tasks", "ls"), "tasks show": pk("tasks", "show", step.id),
        "tasks show run": pk("tasks", "show", run.id),
        "logs step": pk("logs", step.id), "logs run": pk("logs", run.id),
        "export": pk("export", run.id), "export html": pk("export", run.id, "--format", "html"),
    }
    shown = [name for name, text in outputs.items() if token in text]
    assert shown == [] and leaks(store.settings.home, token) == [], (shown, leaks(
        store.settings.home, token))
    # What was there to say is still said, masked.
    log = pk("logs", step.id)
    assert "stdout sees ***" in log and "stderr sees ***" in log, (log, step)
    if executor in ("subprocess", "queue"):  # a process of its own: fd-level output too
        assert "a child sees ***" in log, log
    if fail:
        assert step.status_reason == "ValueError: the service rejected token ***"
        assert "ValueError: the service rejected token ***" in log
        reason = json.loads(outputs["runs show --json"])["reason"]
        assert reason == "step 'use' failed: ValueError: the service rejected token ***"


@given(secret=st.text(alphabet="abcx", min_size=4, max_size=8),
       pieces=st.lists(st.sampled_from(["a", "b", "c", "x", "\n", "SECRET"]), max_size=40),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_a_stream_cut_anywhere_is_masked_as_if_whole(secret, pieces, cuts):
    """However a step's output is split into chunks, the stream written out equals the whole
    output with the secret masked: nothing of it slips through between two chunks.
    """
    import pipekit.redact as redact

    saved = (list(redact._values), list(redact._encoded))
    try:
        redact._values[:], redact._encoded[:] = [], []
        redact.register(secret)
        data = "".join(secret if p == "SECRET" else p for p in pieces).encode()
        bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
        redactor = redact.Redactor()
        out = b"".join(redactor.feed(data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False))
        out += redactor.flush()
        assert out == redact.redact_bytes(data)
        assert secret.encode() not in out
    finally:
        redact._values[:], redact._encoded[:] = saved


def test_short_values_are_not_masked():
    import pipekit.redact as redact

    redact.register("ab")
    assert redact.redact("ab cab") == "ab cab"
