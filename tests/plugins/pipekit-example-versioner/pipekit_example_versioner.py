"""A sample third-party pipekit plugin, used by pipekit's own tests.

It implements ``pipekit_version_bump`` through the ``pipekit`` entry-point group, exactly as
any third-party distribution would: a pipeline whose structure changed gets the next *minor*
version (``1.0.3`` -> ``1.1.0``). pipekit's built-in ``autoversion`` plugin (patch + 1) is
``trylast``, so this one answers first.
"""

from __future__ import annotations

import pipekit


@pipekit.hookimpl
def pipekit_version_bump(old_version: str) -> str:
    """``MAJOR.(MINOR + 1).0``."""
    major, minor, _patch = (int(part) for part in old_version.split("."))
    return f"{major}.{minor + 1}.0"
