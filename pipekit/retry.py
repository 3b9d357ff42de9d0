"""Calls to a remote store retried on transient errors, with doubling pauses.

A network blip (a reset connection, a timeout, an object store's 503) should cost a retry,
not a failed step; an error a retry cannot cure (a missing file, a refused permission, a
bad argument) is raised at once. Used by :class:`pipekit.StorageManager` uploads and by
the object store behind ``PIPEKIT_ARTIFACTS`` (:mod:`pipekit.store.remote`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["PERMANENT", "RetriesExhausted", "retrying"]

#: Errors that a retry cannot cure.
PERMANENT: tuple[type[BaseException], ...] = (
    FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError,
    TypeError)


class RetriesExhausted(Exception):
    """Every attempt failed with a transient error; ``__cause__`` is the last one."""

    def __init__(self, attempts: int) -> None:
        super().__init__(f"after {attempts} attempts")
        self.attempts = attempts


def retrying(call: Callable[[], T], *, attempts: int, delay: float) -> T:
    """``call()``, tried up to ``attempts`` times, pausing ``delay``, ``2 * delay`` … between
    tries (``delay=0`` in tests).

    :raises: a :data:`PERMANENT` error at once; after the last attempt, the last transient
        error itself when there was one attempt, else :class:`RetriesExhausted` from it.
    """
    for attempt in range(attempts):
        try:
            return call()
        except PERMANENT:
            raise
        except Exception as exc:
            if attempt + 1 == attempts:
                if attempts == 1:
                    raise
                raise RetriesExhausted(attempts) from exc
            time.sleep(delay * 2 ** attempt)  # a backoff's pace, not synchronisation
    raise AssertionError("unreachable: attempts must be >= 1")
