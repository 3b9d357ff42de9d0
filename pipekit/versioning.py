"""Pipeline versions: ``MAJOR.MINOR.PATCH``, bumped when the structure changes.

A pipeline's first version is ``1.0.0``. Every run records the structure hash of what it
runs (:meth:`pipekit.dag.Dag.structure_hash`: step names, parents, code digests, parameter
defaults). With ``auto_version_bump=True`` a run whose hash differs from the newest version's
asks the ``pipekit_version_bump`` hook for the next version (the built-in ``autoversion``
plugin adds one to the patch number; a plugin answering first wins). An explicit
``version=`` is always used as given.
"""

from __future__ import annotations

import logging
import re

from .errors import DefinitionError
from .plugin_manager import call_first
from .store import Store

__all__ = ["FIRST_VERSION", "check_version", "choose_version"]

log = logging.getLogger(__name__)

FIRST_VERSION = "1.0.0"
_VERSION_RE = re.compile(r"\d+\.\d+\.\d+")


def check_version(version: str, source: str = "version") -> str:
    """``version`` if it is ``MAJOR.MINOR.PATCH``.

    :raises DefinitionError: naming ``source`` and the value.
    """
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise DefinitionError(f"{source} {version!r} is not a version: use MAJOR.MINOR.PATCH, "
                              "e.g. '1.0.0'")
    return version


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
