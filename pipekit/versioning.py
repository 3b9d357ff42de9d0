"""Pipeline versions: dot-separated numbers (``1.0.0``, ``1.2``, ``23``), bumped when the
structure changes.

A version is what ClearML's ``PipelineController(version=...)`` accepts as a plain release:
one or more non-negative integers separated by dots (PEP 440's release segment, without its
epoch, pre-, post-, dev- or local parts). A pipeline's first version is ``1.0.0``. Every run
records the structure hash of what it runs (:meth:`pipekit.dag.Dag.structure_hash`: step
names, parents, code digests, parameter defaults). With ``auto_version_bump=True`` a run
whose hash differs from the newest version's asks the ``pipekit_version_bump`` hook for the
next version (the built-in ``autoversion`` plugin adds one to the last number, as ClearML's
``Version.get_next_version`` does: ``1.0.4`` -> ``1.0.5``, ``1.2`` -> ``1.3``, ``23`` ->
``24``; a plugin answering first wins). An explicit ``version=`` is always used as given.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from .dag import Dag
from .errors import DefinitionError
from .hashing import canonical_json, digest_params
from .nodes import PipelineSpec
from .plugin_manager import call_first
from .store import Store

__all__ = ["FIRST_VERSION", "check_version", "choose_version", "provisional_version",
           "structure_hash"]

log = logging.getLogger(__name__)

FIRST_VERSION = "1.0.0"
#: One or more non-negative integers separated by dots (ASCII digits only).
_VERSION_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def check_version(version: str, source: str = "version") -> str:
    """``version`` without surrounding spaces, if it is dot-separated non-negative integers
    (``1.0.0``, ``1.2``, ``23``); ClearML strips the same spaces.

    :raises DefinitionError: naming ``source`` and the value.
    """
    text = version.strip() if isinstance(version, str) else version
    if not isinstance(text, str) or not _VERSION_RE.fullmatch(text):
        raise DefinitionError(f"{source} {version!r} is not a version: use numbers separated "
                              "by dots, e.g. '1.0.0', '1.2' or '23'")
    return text


def choose_version(store: Store, *, project: str, name: str, requested: str | None,
                   auto_bump: bool, structure_hash: str) -> str:
    """The version a run of pipeline ``project/name`` with ``structure_hash`` records."""
    if requested:
        return check_version(requested)
    latest = store.latest_pipeline_version(project, name)
    if latest is None:
        return FIRST_VERSION
    version, old_hash = latest
    if not auto_bump or old_hash == structure_hash:
        return version
    new = call_first("pipekit_version_bump", pipeline=name, old_version=version,
                     old_hash=old_hash, new_hash=structure_hash)
    if new is None:
        log.warning("pipeline %r changed but no plugin bumped its version (is the "
                    "'autoversion' plugin disabled?); keeping %s", name, version)
        return version
    return check_version(new, "the version returned by the pipekit_version_bump hook")


def provisional_version(store: Store, spec: PipelineSpec) -> str:
    """What a dynamic run (a decorated pipeline) records until its structure is known."""
    latest = store.latest_pipeline_version(spec.project, spec.name)
    return spec.version or (latest[0] if latest else FIRST_VERSION)


def structure_hash(store: Store, spec: PipelineSpec, dag: Dag,
                   function_digests: Mapping[str, str]) -> str:
    """A run's structure (SPEC §3 Versioning): step names, parents, code digests (a function
    step's from ``function_digests``, a task step's from its template) and parameter
    defaults.
    """
    digests: dict[str, str] = {}
    for name, node in spec.nodes.items():
        if node.function is not None:
            digests[name] = function_digests[name]
        elif node.base_task_id is not None:
            base = store.get_task(node.base_task_id)
            digests[name] = base.code_digest or digest_params(base.script)
    defaults = spec.defaults if spec.defaults is not None else spec.parameters
    return dag.structure_hash(digests, {k: _hashable(v) for k, v in defaults.items()})


def _hashable(value: Any) -> Any:
    """A parameter default as the structure hash sees it (an object by its type)."""
    try:
        canonical_json(value)
        return value
    except (TypeError, ValueError):
        return f"<{type(value).__module__}.{type(value).__qualname__}>"
