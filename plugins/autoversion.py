"""The default version bump: a changed pipeline gets the next patch version.

``trylast``: a plugin of yours implementing ``pipekit_version_bump`` (say, minor + 1 for a
changed step list) answers first.
"""

from __future__ import annotations

import pipekit


@pipekit.hookimpl(trylast=True)
def pipekit_version_bump(old_version: str) -> str:
    major, minor, patch = (int(part) for part in old_version.split("."))
    return f"{major}.{minor}.{patch + 1}"
