"""pipekit: ClearML-style pipelines of tasks on an embedded SQLite store, no server needed.

Public API only; everything else is reached through its module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import configure
from .hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["Logger", "PipelineController", "PipelineDecorator", "StorageManager", "Task",
           "TaskTypes", "__version__", "configure", "hookimpl", "install_as_clearml"]

if TYPE_CHECKING:  # pragma: no cover
    from .alias import install_as_clearml
    from .controller import PipelineController
    from .decorator import PipelineDecorator
    from .logger import Logger
    from .models import TaskType as TaskTypes
    from .storage import StorageManager
    from .task import Task

_LAZY = {
    "Task": ("pipekit.task", "Task"),
    "Logger": ("pipekit.logger", "Logger"),
    "PipelineController": ("pipekit.controller", "PipelineController"),
    "PipelineDecorator": ("pipekit.decorator", "PipelineDecorator"),
    "StorageManager": ("pipekit.storage", "StorageManager"),
    "TaskTypes": ("pipekit.models", "TaskType"),
    "install_as_clearml": ("pipekit.alias", "install_as_clearml"),
}


def __getattr__(name: str) -> Any:
    # Lazy so that `import pipekit` (and a plugin's `import pipekit`) stays cheap and never
    # meets a half-imported core.
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pipekit' has no attribute {name!r}")
