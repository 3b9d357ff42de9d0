"""A sample third-party pipekit plugin, used by pipekit's own tests.

It implements ``pipekit_version_bump`` through the ``pipekit`` entry-point group, exactly as
any third-party distribution would: a pipeline whose structure changed gets the next *minor*
version (``1.0.3`` -> ``1.1.0``, ``1.2`` -> ``1.3.0``, ``23`` -> ``23.1.0``). pipekit's built-in
``autoversion`` plugin (last number + 1) is ``trylast``, so this one answers first.
"""

from __future__ import annotations

import pipekit


@pipekit.hookimpl
def pipekit_version_bump(old_version: str) -> str:
    """``MAJOR.(MINOR + 1).0`` (a missing minor number counts as 0)."""
    major, minor = (old_version.split(".") + ["0"])[:2]
    return f"{int(major)}.{int(minor) + 1}.0"
