"""A task's script run as ``python SCRIPT`` would run it, telling its worker why it died.

A worker starts every script task through :func:`command`: the child imports this module,
then runs the script as ``__main__`` (:func:`main`), exactly as ``python SCRIPT ARGS`` would
(same ``__name__``, ``__file__``, ``sys.argv``, the script's folder first on ``sys.path``, a
``__main__`` module that stays the script's until the process ends). What it adds: an
uncaught exception — a syntax error in the script included, which happens before any of
the script's code runs — is written as one line (:func:`root_cause`: type, message, and
where in the user's code) to a file the worker named (``PIPEKIT_CAUSE_FILE``); the worker
reads it (:func:`read_cause`) and makes it the task's status reason, instead of the bare
"exit code 1" of a traceback that only the log holds.

Why a runner and not only a ``sys.excepthook`` set by pipekit: a syntax error in the script,
or an import error above its ``import pipekit``, happens before pipekit is imported, and
parsing the last traceback out of the script's output breaks as soon as the script prints
one of its own or two threads write at once. Why a file and not the store: the worker is the
one that ends the task (``finish_task``), it owns the store writes; the dying child only has
to say why, even when the store itself is what failed, and even after its pipeline already
ended the run.

Importing this module must stay cheap: it runs before every script.
"""

from __future__ import annotations

import builtins
import io
import os
import site
import sys
import sysconfig
import tempfile
import types
from collections.abc import Iterator
from importlib.machinery import SourceFileLoader
from pathlib import Path

from .config import CAUSE_ENV
from .redact import redact

__all__ = ["command", "main", "new_cause_file", "read_cause", "root_cause"]

#: the longest reason :func:`root_cause` makes (a message may quote a whole data frame)
MAX_CAUSE = 1000

#: ``python -c`` code that starts :func:`main`. The directory pipekit is imported from comes
#: first on the command line and goes first on ``sys.path`` (``python -m`` would import
#: whatever ``pipekit`` the working directory holds, and leave the working directory on the
#: script's ``sys.path``); :func:`main` then puts the script's folder there.
_BOOTSTRAP = ("import sys; sys.path[0] = sys.argv.pop(1); "
              "import pipekit.script_main; pipekit.script_main.main()")
_PIPEKIT = Path(__file__).resolve().parent


def command(path: str, argv: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The command line that runs script ``path`` with ``argv`` as ``python path argv``."""
    return [sys.executable, "-c", _BOOTSTRAP, str(_PIPEKIT.parent), path, *argv]


def new_cause_file() -> str:
    """A new, empty file for a child to write its cause to (the caller removes it)."""
    fd, name = tempfile.mkstemp(prefix="pipekit-cause-", suffix=".txt")
    os.close(fd)
    return name


def read_cause(name: str) -> str:
    """What the child wrote to cause file ``name`` (``""``: nothing); removes the file."""
    try:
        with open(name, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""
    finally:
        try:
            os.unlink(name)
        except OSError:
            pass


def main() -> None:
    """Run ``sys.argv[1]`` as the ``__main__`` script with ``sys.argv[2:]`` as its arguments."""
    cause_file = os.environ.pop(CAUSE_ENV, None)  # the script's own children never see it
    path = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(os.path.realpath(path))
    try:
        _run_as_main(path)
    except (SystemExit, KeyboardInterrupt):
        raise  # an exit code, or Python's own handling of Ctrl-C
    except BaseException as exc:
        tb = _script_frames(exc.__traceback__)
        exc.__traceback__ = tb
        if cause_file:
            try:
                with open(cause_file, "w", encoding="utf-8") as fh:
                    fh.write(redact(root_cause(exc)))  # (secrets a step resolved here)
            except OSError:
                pass  # the worker then reports the exit code
        # What Python does with an uncaught exception: the hook prints it (to the log), or
        # what the script or Task.init made of the hook records it.
        try:
            sys.excepthook(type(exc), exc, tb)
        except BaseException:
            sys.__excepthook__(type(exc), exc, tb)
        raise SystemExit(1) from None


def _run_as_main(path: str) -> None:
    """Compile and execute ``path`` in a fresh ``__main__`` module, as ``python path`` does."""
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=path, __cached__=None, __builtins__=builtins,
                           __annotations__={}, __loader__=SourceFileLoader("__main__", path))
    sys.modules["__main__"] = module
    with io.open_code(path) as fh:
        source = fh.read()
    code = compile(source, path, "exec", dont_inherit=True)
    exec(code, module.__dict__)


def _script_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` without this module's own frames (the traceback then reads as Python's)."""
    here = os.path.normcase(__file__)
    while tb is not None and os.path.normcase(tb.tb_frame.f_code.co_filename) == here:
        tb = tb.tb_next
    return tb


# -- the one-line cause ---------------------------------------------------------------------------


def root_cause(exc: BaseException) -> str:
    """``Type: message (file:line)``: what ``exc`` is, on one line, and the line of the user's
    code it came through last (not pipekit's, the standard library's or an installed
    package's). A syntax error says where in Python's own words: ``SyntaxError: invalid
    syntax (pipe.py, line 7)``.
    """
    name = type(exc).__name__
    message = _one_line(str(exc))
    text = f"{name}: {message}" if message else name
    if not isinstance(exc, SyntaxError):
        where = _user_line(exc.__traceback__)
        if where:
            text += f" ({where})"
    return text if len(text) <= MAX_CAUSE else text[:MAX_CAUSE - 1] + "…"


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _frames(tb: types.TracebackType | None) -> Iterator[tuple[str, int]]:
    while tb is not None:
        yield tb.tb_frame.f_code.co_filename, tb.tb_lineno
        tb = tb.tb_next


def _user_line(tb: types.TracebackType | None) -> str:
    """``file:line`` of the innermost frame of ``tb`` in the user's code (else of the
    outermost: the script's own), ``""`` for none.
    """
    frames = [(f, n) for f, n in _frames(tb) if not f.startswith("<")]
    if not frames:
        return ""
    libraries = _library_dirs()
    users = [(f, n) for f, n in frames
             if not os.path.realpath(f).startswith(libraries)]
    filename, line = (users or frames[:1])[-1]
    return f"{os.path.basename(filename)}:{line}"


def _library_dirs() -> tuple[str, ...]:
    """Folders whose code is not the user's: pipekit's, its plugins', the standard library's
    and the installed packages'.
    """
    dirs = [str(_PIPEKIT)]
    plugins = sys.modules.get("pipekit_plugins")
    dirs += list(getattr(plugins, "__path__", []))
    paths = sysconfig.get_paths()
    dirs += [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    try:
        dirs += [*site.getsitepackages(), site.getusersitepackages()]
    except AttributeError:  # an old virtualenv's site module
        pass
    return tuple({os.path.join(os.path.realpath(d), "") for d in dirs if d})
