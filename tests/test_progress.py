"""Progress without the CLI (issue 12, item 9): ``python pipeline.py`` shows its steps as
``pipekit run`` does — a live table with ``n of m done`` and the elapsed time on a terminal
(redrawn in its final state after Ctrl-C), one line per step change otherwise — unless
``PIPEKIT_PROGRESS=0``; under ``pipekit run`` only the CLI draws.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent / "cli_scripts"
PIPEKIT = str(Path(sys.executable).with_name("pipekit"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


pytestmark = pytest.mark.usefixtures("marks")  # (tests/conftest.py) for every script


@pytest.fixture(autouse=True)
def progress_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPEKIT_PROGRESS", raising=False)


def in_a_terminal(script: Path, *, interrupt_when: Path | None = None) -> str:
    """Run ``python script`` with a pseudo-terminal as its stdout and stderr; returns what
    the terminal showed (ANSI codes removed). With ``interrupt_when``, Ctrl-C (SIGINT) is
    sent once that file exists.
    """
    main, other = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(script)], stdout=other, stderr=other,
                            stdin=subprocess.DEVNULL, env=dict(os.environ, COLUMNS="120"))
    os.close(other)
    out = b""
    interrupted = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if interrupt_when is not None and not interrupted and interrupt_when.exists():
            proc.send_signal(signal.SIGINT)
            interrupted = True
        ready, _, _ = select.select([main], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal closed: the process ended
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(main)
    return ANSI.sub("", out.decode("utf-8", "replace"))


def test_a_script_in_a_terminal_draws_its_steps_live_with_n_of_m_done() -> None:
    shown = in_a_terminal(SCRIPTS / "three_steps.py")
    titles = re.findall(r"run [0-9a-f]{12}  (\w+)  (\d) of 3 done  ([0-9.]+) s", shown)
    assert titles, shown
    assert titles[-1][:2] == ("completed", "3"), titles
    final = shown.rsplit("3 of 3 done", 1)[1]
    for step in ("load", "offset", "total"):
        assert re.search(rf"│ {step} +│ completed +│", final), final


def test_ctrl_c_redraws_the_final_state(marks: Path) -> None:
    shown = in_a_terminal(SCRIPTS / "waits.py", interrupt_when=marks / "wait.started")
    final = shown.rsplit("run ", 1)[1]
    assert re.match(r"[0-9a-f]{12}  stopped  1 of 1 done", final), final
    assert re.search(r"│ wait +│ stopped +│", final), final


def test_without_a_terminal_a_line_per_step_change_on_stderr() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPTS / "three_steps.py")],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # the script's own output stays its own
    lines = proc.stderr.splitlines()
    for step in ("load", "offset", "total"):
        assert re.fullmatch(rf"{step} +pending", lines[["load", "offset", "total"].index(step)])
        assert any(re.fullmatch(rf"{step} +completed +[0-9.]+ s", x) for x in lines), lines


def test_pipekit_progress_0_turns_it_off() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPTS / "three_steps.py")],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PIPEKIT_PROGRESS="0"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == proc.stderr == ""


def test_under_pipekit_run_only_the_cli_draws() -> None:
    proc = subprocess.run([PIPEKIT, "run", str(SCRIPTS / "three_steps.py")],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    shown = proc.stdout + proc.stderr
    for step in ("load", "offset", "total"):
        assert len(re.findall(rf"^{step} +completed", shown, re.M)) == 1, shown

