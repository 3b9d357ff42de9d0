"""ClearML's ``connect()`` and ``connect_configuration()``: values a task shows and may override.

In a fresh run a connected dict, ``argparse.Namespace`` or object is stored as parameters of
its section; when the process *executes* an existing task (a clone, a pipeline step), the
stored values override the script's defaults in place, each cast back to its original type.
Configurations work the same way for a dict (stored as JSON) or a file (stored as text,
handed back as a file holding the stored text).

Functions here take the ``Task`` handle as an argument; only :mod:`pipekit.task` calls them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from . import params as P
from .errors import ParameterError
from .models import ParamInfo
from .store import get_store

__all__ = ["connect", "connect_attrs", "connect_configuration", "stored_section"]


def connect(task: Any, mutable: Any, name: str | None = None) -> Any:
    """Connect a dict, ``argparse.Namespace`` or object as parameters of ``name``.

    In a fresh run its values are stored as ``name/key``; when this process executes an
    existing task, stored values override ``mutable`` in place, cast back to each
    original value's type. Returns ``mutable``.
    """
    if isinstance(mutable, argparse.Namespace):
        section = name or "Args"
        connect_attrs(task, mutable, section, vars(mutable))
    elif isinstance(mutable, dict):
        section = name or P.DEFAULT_SECTION
        _connect_dict(task, mutable, section)
    elif isinstance(mutable, (list, tuple, str, int, float, bool)) or mutable is None:
        raise ParameterError(f"connect() takes a dict, argparse.Namespace or object, "
                             f"not {type(mutable).__name__}")
    else:
        section = name or P.DEFAULT_SECTION
        values = {k: v for k, v in _public_attrs(mutable).items()}
        connect_attrs(task, mutable, section, values)
    return mutable


def connect_configuration(task: Any, configuration: Any, name: str | None = None) -> Any:
    """Connect a named configuration: a dict (returned, overridden in place when
    executing) or a file path (returns the path of the file to read, which holds the
    stored text when executing).
    """
    name = name or P.DEFAULT_SECTION
    store = get_store()
    stored = store.get_configuration(task.id, name) if task._executing else None
    if isinstance(configuration, dict):
        if stored is not None and stored[1] == "json":
            configuration.clear()
            configuration.update(json.loads(stored[0]))
        else:
            store.set_configuration(task.id, name, json.dumps(configuration, default=str),
                                    "json")
        return configuration
    path = Path(configuration)
    if not path.is_file():
        raise ParameterError(f"configuration {name!r}: {str(configuration)!r} is neither "
                             "a dict nor an existing file", name)
    if stored is not None:
        target = store.settings.cache_dir / "config" / task.id
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        out = target / path.name
        out.write_text(stored[0])
        return str(out) if isinstance(configuration, str) else out
    store.set_configuration(task.id, name, path.read_text(), "text")
    return configuration


def _public_attrs(obj: Any) -> dict[str, Any]:
    names = vars(obj) if hasattr(obj, "__dict__") else {}
    if not names:
        names = {n: getattr(obj, n) for n in dir(obj) if not n.startswith("_")}
    return {k: v for k, v in names.items() if not k.startswith("_") and not callable(v)}


def stored_section(task: Any, section: str) -> dict[str, ParamInfo]:
    if not task._executing:
        return {}
    prefix = f"{section}/"
    return {key[len(prefix):]: p for key, p in get_store().get_parameters(task.id).items()
            if key.startswith(prefix)}


def _connect_dict(task: Any, mapping: dict[str, Any], section: str) -> None:
    stored = stored_section(task, section)
    if stored:
        _override_nested(mapping, stored, section)
    missing = [p for p in P.to_params(section, mapping) if p.name not in stored]
    if missing:
        get_store().set_parameters(task.id, missing)


def _override_nested(mapping: dict[str, Any], stored: dict[str, ParamInfo], section: str,
                     prefix: str = "") -> None:
    for key, value in list(mapping.items()):
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            _override_nested(value, stored, section, f"{full}/")
        elif full in stored:
            p = stored[full]
            mapping[key] = P.cast(p.value, like=value, stored_type=p.type, name=p.key)


def connect_attrs(task: Any, obj: Any, section: str, values: dict[str, Any]) -> None:
    stored = stored_section(task, section)
    for key, value in values.items():
        if key in stored:
            p = stored[key]
            setattr(obj, key, P.cast(p.value, like=value, stored_type=p.type, name=p.key))
    missing = [p for p in P.to_params(section, values) if p.name not in stored]
    if missing:
        get_store().set_parameters(task.id, missing)

