"""A script that called ``Task.init``: its record, its end, and its command line.

* :func:`script_info` — what a task records about the running script (path, digest, argv,
  working directory, interpreter);
* :func:`script_file` — what ``Task.create(script=...)`` records about a script to run later;
* :class:`ScriptLifecycle` — patches ``sys.exit``, ``exit()``/``quit()``, the excepthook and
  SIGTERM so the script's task gets exactly one final status at exit, through
  :func:`pipekit.finish.finish_task`;
* :func:`patch_argparse` — arguments parsed after ``Task.init`` are captured as ``Args``
  parameters, and a cloned task's stored values override the command line (as in ClearML).
"""

from __future__ import annotations

import argparse
import atexit
import builtins
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from . import context
from .capture import StreamCapture, open_log
from .connect import connect_attrs, stored_section
from .errors import ParameterError, PipekitError
from .finish import finish_task
from .hashing import digest_file
from .logger import flush_metrics
from .models import Status
from .store import get_store

__all__ = ["ScriptLifecycle", "patch_argparse", "script_file", "script_info"]


_argparse_state = threading.local()
_original_parse_known_args = argparse.ArgumentParser.parse_known_args


def patch_argparse() -> None:
    """Capture arguments parsed after ``Task.init`` into section ``Args`` (as ClearML does)."""
    if argparse.ArgumentParser.parse_known_args is not _original_parse_known_args:
        return

    def parse_known_args(self: argparse.ArgumentParser, args: Any = None,
                         namespace: Any = None) -> Any:
        task = context.process_task()
        if task is None or getattr(_argparse_state, "depth", 0):
            return _original_parse_known_args(self, args, namespace)
        _argparse_state.depth = 1
        stored = stored_section(task, "Args")
        saved = []
        try:
            for action in self._actions:
                if action.dest in stored and action.dest != argparse.SUPPRESS:
                    # A stored value satisfies a required argument the command line lacks.
                    saved.append((action, action.required, action.nargs))
                    action.required = False
                    if not action.option_strings and action.nargs is None:
                        action.nargs = "?"
            ns, extras = _original_parse_known_args(self, args, namespace)
        finally:
            for action, required, nargs in saved:
                action.required, action.nargs = required, nargs
            _argparse_state.depth = 0
        values = {k: v for k, v in vars(ns).items()}
        for action in self._actions:
            if action.dest in stored and action.dest in values and values[action.dest] is None \
                    and callable(action.type):
                p = stored[action.dest]
                try:
                    setattr(ns, action.dest, action.type(p.value))
                except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
                    raise ParameterError(f"parameter {p.key!r}: cannot read {p.value!r} "
                                         f"for argument {action.dest!r} ({exc})", p.key) from exc
                values.pop(action.dest)
        connect_attrs(task, ns, "Args", values)
        return ns, extras

    argparse.ArgumentParser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def script_info() -> dict[str, Any]:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    path = Path(argv0).resolve() if argv0 and argv0 not in ("-c", "-m") else None
    info: dict[str, Any] = {"argv": list(sys.argv[1:]), "working_dir": os.getcwd(),
                            "python": sys.executable}
    if path is not None and path.is_file():
        info.update(path=str(path), entry_point=path.name, digest=digest_file(path))
    else:
        info.update(path=None, entry_point=argv0 or "<interactive>")
    return info


def script_file(script: str, working_directory: str | None = None) -> tuple[dict[str, Any], str]:
    """The record of a script file to run later (``Task.create``), and the file's text.

    A relative ``script`` is found in ``working_directory`` (default: the current one), else
    from the current directory.

    :raises PipekitError: the script or the working directory does not exist.
    """
    workdir = Path(working_directory or os.getcwd()).expanduser().resolve()
    path = Path(script).expanduser()
    if not path.is_absolute():
        path = (workdir / path) if (workdir / path).exists() else path.resolve()
    if not path.is_file():
        raise PipekitError(f"script {script!r} does not exist")
    if not workdir.is_dir():
        raise PipekitError(f"working directory {str(workdir)!r} does not exist")
    record = {"path": str(path.resolve()), "argv": [], "working_dir": str(workdir),
              "entry_point": path.name, "digest": digest_file(path)}
    return record, path.read_text(errors="replace")


class ScriptLifecycle:
    """A ``Task.init`` task's end: flush its metrics, and give it its one final status.

    When a worker launched this process (the task was already ``in_progress``), the worker
    owns the final status from the exit code; this process only records why it failed.
    """

    def __init__(self, task: Any, owner: bool, capture: bool) -> None:
        self.task = task
        self.owner = owner
        self.capture = StreamCapture(get_store().log_path(task.id)) if capture else None
        self.exit_code: int | None = None
        self.failure: str | None = None
        self.stopped: str | None = None
        self.done = False
        self._orig_exit = sys.exit
        self._orig_excepthook = sys.excepthook
        sys.exit = self._exit  # type: ignore[assignment]
        sys.excepthook = self._excepthook
        # site's exit()/quit() raise SystemExit themselves, bypassing sys.exit.
        self._orig_builtins = {n: getattr(builtins, n) for n in ("exit", "quit")
                               if hasattr(builtins, n)}
        for n in self._orig_builtins:
            setattr(builtins, n, self._exit)
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, self._sigterm)
        atexit.register(self.finish)

    def _exit(self, code: Any = None) -> None:
        self.exit_code = code if isinstance(code, int) else (0 if code is None else 1)
        self._orig_exit(code)

    def _excepthook(self, etype: type[BaseException], value: BaseException, tb: Any) -> None:
        self._orig_excepthook(etype, value, tb)  # prints to stderr, which the log captures
        if issubclass(etype, KeyboardInterrupt):
            self.stopped = "interrupted (KeyboardInterrupt)"
        else:
            self.failure = f"{etype.__name__}: {value}"
            if self.capture is None and self.owner:
                with open_log(get_store().log_path(self.task.id)) as fh:
                    fh.write("".join(traceback.format_exception(etype, value, tb)).encode())

    def _sigterm(self, signum: int, frame: Any) -> None:
        self.stopped = "terminated by signal 15"
        self._orig_exit(128 + signum)

    def _restore(self) -> None:
        sys.exit = self._orig_exit
        sys.excepthook = self._orig_excepthook
        for n, fn in self._orig_builtins.items():
            setattr(builtins, n, fn)

    def release(self) -> None:
        """Stop watching the process and capturing its output, leaving the task's status
        alone (``execute_remotely``).
        """
        if self.done:
            return
        self.done = True
        self._restore()
        flush_metrics(self.task.id)
        if self.capture is not None:
            get_store().set_log_size(self.task.id, self.capture.stop())

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self._restore()
        size = self.capture.stop() if self.capture is not None else None
        if not self.owner:
            # A worker launched this process and owns the final status (from the exit code):
            # this process only says why it failed.
            flush_metrics(self.task.id)
            store = get_store()
            if size is not None:
                store.set_log_size(self.task.id, size)
            if self.failure or self.stopped:
                store.update_task(self.task.id, status_reason=self.failure or self.stopped)
        elif self.stopped:
            finish_task(self.task.id, Status.stopped, self.stopped, log_size=size)
        elif self.failure:
            finish_task(self.task.id, Status.failed, self.failure, log_size=size)
        elif self.exit_code not in (None, 0):
            finish_task(self.task.id, Status.failed, f"exit code {self.exit_code}",
                        log_size=size)
        else:
            finish_task(self.task.id, Status.completed, log_size=size)
