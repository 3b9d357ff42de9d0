"""``pipekit.install_as_clearml()``: ClearML scripts run on pipekit with no edit at all.

When the ``clearml`` package is not installed, this makes ``import clearml``,
``from clearml import Task``, ``from clearml.automation import PipelineController`` and
``from clearml.automation.controller import PipelineDecorator`` resolve to pipekit's own
modules, in this process and in every process it starts (steps, agents), by putting a small
``clearml`` package that re-exports pipekit first on ``sys.path`` and ``PYTHONPATH``. The
precedent is ``pymysql.install_as_MySQLdb()``.

An installed real ``clearml`` is never shadowed: then nothing changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from .config import get_settings

__all__ = ["clearml_env", "install_as_clearml"]

#: The stand-in package, file by file: each module re-exports its pipekit counterpart.
_SHIM = {
    "clearml/__init__.py": "pipekit",
    "clearml/automation/__init__.py": "pipekit.automation",
    "clearml/automation/controller.py": "pipekit.automation.controller",
}
_MARK = "# pipekit stand-in for clearml"


def _shim_dir() -> Path:
    """Where the stand-in ``clearml`` package is written (under the store's cache)."""
    return get_settings().cache_dir / "clearml-alias"


def _write_shim(root: Path) -> None:
    for relative, module in _SHIM.items():
        path = root / relative
        text = (f"{_MARK}: pipekit.install_as_clearml() put this on the path.\n"
                f"from {module} import *  # noqa: F401,F403\n"
                f"from {module} import __all__  # noqa: F401\n")
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)  # processes starting meanwhile never see half a file


def _real_clearml() -> bool:
    spec = importlib.util.find_spec("clearml")  # lazy: a top-level lookup imports nothing
    if spec is None or spec.origin is None:
        return False
    try:
        return _MARK not in Path(spec.origin).read_text(errors="replace")[:200]
    except OSError:
        return True


def clearml_env() -> dict[str, str]:
    """The environment a process needs for ``import clearml`` to get pipekit: a
    ``PYTHONPATH`` with the stand-in package first, or nothing when the real ``clearml`` is
    installed (``pipekit run`` gives it to the script and the agents it starts).
    """
    if _real_clearml():
        return {}
    root = _shim_dir()
    _write_shim(root)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys([str(root), *paths]))}


def install_as_clearml() -> bool:
    """Make ``clearml`` imports resolve to pipekit here and in the processes started from
    here; returns whether the alias is in place (``False`` when the real ``clearml`` is
    installed, which is then used as it is).
    """
    if sys.modules.get("clearml") is not None:
        return not _real_clearml()
    env = clearml_env()
    if not env:
        return False
    os.environ.update(env)
    entry = str(_shim_dir())
    if entry not in sys.path:
        sys.path.insert(0, entry)
    importlib.invalidate_caches()
    return True
