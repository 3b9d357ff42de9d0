"""Helpers of the web UI's browser tests (tests/test_ui_browser.py): the real ``pipekit ui``
server as a subprocess, Debian's Chromium through Playwright, background processes whose
output is read with a deadline, and polling.

Nothing here waits by sleeping: every wait is a poll (or a blocking read) with a deadline.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "ui_scripts"
PIPEKIT = str(Path(sys.executable).with_name("pipekit"))

#: Debian's Chromium (``apt install chromium``); Playwright's own browser download is not used
CHROMIUM = os.environ.get("PIPEKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: CI (.ci/run) installs Chromium and sets this: there, a missing browser fails the tests
REQUIRE_BROWSER = os.environ.get("PIPEKIT_REQUIRE_BROWSER") == "1"
#: ``PIPEKIT_UPDATE_SCREENSHOTS=1`` writes the docs' screenshots (docs/img/ui-*.png)
UPDATE_SCREENSHOTS = os.environ.get("PIPEKIT_UPDATE_SCREENSHOTS") == "1"
SCREENSHOTS = ROOT / "docs" / "img"
VIEWPORT = {"width": 1280, "height": 800}

URL_LINE = re.compile(r"^pipekit ui: (http://127\.0\.0\.1:(\d+))/\?token=(\S+)$")

T = TypeVar("T")


def poll(condition: Callable[[], T], timeout: float = 30, what: str = "condition") -> T:
    """``condition()`` once it is truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def browser_missing() -> str | None:
    """Why Chromium cannot be driven here, or None if it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)) and not shutil.which(
            CHROMIUM):
        return (f"Chromium is not installed at {CHROMIUM} (Debian: apt install chromium; "
                "or set PIPEKIT_CHROMIUM)")
    return None


def launch_chromium(playwright: Any) -> Any:
    """Headless Debian Chromium with a fresh temporary profile (``launch()`` makes one)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                      headless=True)


class Background:
    """A process whose stdout lines are read by a thread, so a test can wait for one with a
    deadline and the process never blocks on a full pipe; stderr goes to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], stderr: Path,
                 cwd: Path = ROOT) -> None:
        self.argv = argv
        self.stderr_path = stderr
        self._stderr = stderr.open("w")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return (f"{' '.join(self.argv)} (exit {self.proc.poll()})\nstdout:\n"
                + "\n".join(self.lines[-40:]) + f"\nstderr:\n{self.stderr()[-4000:]}")

    def wait_line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The first stdout line (from now on) matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s from "
                                     f"{self.describe()}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)  # (later waits see the end too)
                raise AssertionError(f"ended before printing a line matching {pattern!r}: "
                                     f"{self.describe()}")
            found = re.search(pattern, line)
            if found:
                return found

    def wait(self, timeout: float = 60) -> int:
        """Its exit status, once it has exited."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s: {self.describe()}") from None
        self._reader.join(timeout=10)
        return code

    def stop(self) -> None:
        """Terminate it (and its process group) if it still runs; reap it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever it left in its process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=15)
        self._reader.join(timeout=10)
        self._stderr.close()


class UIServer(Background):
    """``pipekit ui --port 0`` on a store; knows its address and its token."""

    def __init__(self, env: dict[str, str], stderr: Path, timeout: float = 60) -> None:
        super().__init__([PIPEKIT, "ui", "--port", "0"], env, stderr)
        first = self.wait_line(r".", timeout=timeout).string
        found = URL_LINE.match(first)
        if not found:
            self.stop()
            raise AssertionError(f"pipekit ui's first line is not its URL: {first!r}\n"
                                 f"{self.describe()}")
        self.base, self.port, self.token = found.group(1), int(found.group(2)), found.group(3)
        self.first_line = first

    def url(self, route: str = "/runs", token: bool = True) -> str:
        """The page at ``#route``, with the token (as the printed URL carries it) or without."""
        return f"{self.base}/{'?token=' + self.token if token else ''}#{route}"

    def tracebacks(self) -> list[str]:
        """The tracebacks the server has printed (an endpoint that raised)."""
        text = self.stderr()
        return [part[:3000] for part in text.split("Traceback (most recent call last)")[1:]]


def process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
