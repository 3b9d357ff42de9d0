"""The default version bump: a changed pipeline gets its version's last number plus one.

``1.0.4`` -> ``1.0.5``, ``1.2`` -> ``1.3``, ``23`` -> ``24``: what ClearML's
``Version.get_next_version`` does to a release. ``trylast``: a plugin of yours implementing
``pipekit_version_bump`` (say, minor + 1 for a changed step list) answers first.
"""

from __future__ import annotations

import pipekit


@pipekit.hookimpl(trylast=True)
def pipekit_version_bump(old_version: str) -> str:
    *head, last = old_version.split(".")
    return ".".join([*(str(int(part)) for part in head), str(int(last) + 1)])
