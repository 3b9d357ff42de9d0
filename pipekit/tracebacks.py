"""A step's traceback as its user wants to read it: from their own code, in their own files.

* :func:`relocate` — a function unpickled in a step process has ``<dynamic-code>`` as its
  file (cloudpickle drops file names so a function's pickle, and hence the cache key, does
  not depend on where it was defined); its code objects get their defining file back, so a
  traceback shows ``pipeline.py, line 12`` and that line's source.
* :func:`user_traceback` — the traceback printed into a step's log: it starts at the user's
  first frame, and runs of pipekit's own frames inside it are folded into one line, as rich
  and pytest do.
"""

from __future__ import annotations

import traceback
import types
from pathlib import Path
from typing import Any

__all__ = ["relocate", "user_traceback"]

DYNAMIC = "<dynamic-code>"
_PIPEKIT = str(Path(__file__).resolve().parent)


def relocate(fn: Any, filename: str | None) -> Any:
    """Give ``fn`` (and the functions its globals hold, its helpers) ``filename`` where
    cloudpickle left ``<dynamic-code>``; returns ``fn``.
    """
    if not filename:
        return fn
    seen: set[int] = set()
    for obj in [fn, *getattr(fn, "__globals__", {}).values()]:
        if isinstance(obj, types.FunctionType) and id(obj) not in seen:
            seen.add(id(obj))
            if obj.__code__.co_filename == DYNAMIC:
                obj.__code__ = _with_file(obj.__code__, filename)
    return fn


def _with_file(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(_with_file(c, filename) if isinstance(c, types.CodeType)
                   and c.co_filename == DYNAMIC else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _ours(frame: traceback.FrameSummary) -> bool:
    return frame.filename.startswith(_PIPEKIT)


def user_traceback(exc: BaseException) -> str:
    """``exc``'s traceback from the user's first frame on, pipekit's frames folded."""
    frames = traceback.extract_tb(exc.__traceback__)
    while frames and _ours(frames[0]):
        frames.pop(0)
    lines = ["Traceback (most recent call last):\n"]
    run: list[traceback.FrameSummary] = []

    def fold() -> None:
        if run:
            lines.append(f"  [... {len(run)} frame{'s' if len(run) > 1 else ''} in pipekit "
                         "...]\n")
            run.clear()

    for frame in frames:
        if _ours(frame):
            run.append(frame)
            continue
        fold()
        lines.extend(traceback.format_list([frame]))
    fold()
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(lines)
