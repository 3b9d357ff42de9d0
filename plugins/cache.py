"""The default step cache: reuse the newest task that ran under the same key.

A task qualifies when it is ``completed`` or ``published``, not archived, and every object
its outputs point at is still in the store (an artifact file removed by hand makes the step
run again rather than hand its children a dangling reference). Failed, stopped and running
tasks never qualify, so a failure can never populate the cache. Whatever a lookup answers,
the launcher serves the hit only after every object of the task verifies (its digest
re-computed); a corrupt one makes the step run again, with a warning.

``pipekit_cache_lookup`` is ``firstresult`` and this implementation is ``trylast``: a
plugin that knows better (a shared remote cache, say) answers first.
"""

from __future__ import annotations

from typing import Any

import pipekit
from pipekit.store import get_store


@pipekit.hookimpl(trylast=True)
def pipekit_cache_lookup(key: str, node: Any) -> str | None:
    store = get_store()
    task_id = store.find_cached(key)
    if task_id is None:
        return None
    for digest in store.artifact_files(task_id):
        if not store.blobs.exists(digest):
            return None
    return task_id
