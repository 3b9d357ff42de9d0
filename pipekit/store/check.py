"""``pipekit db check``: every object the store references and every object file on disk,
verified against its digest; with ``repair``, bad files moved to ``PIPEKIT_HOME/quarantine/``.

What references an object: an artifact or a model row (its bytes inline in the row, or a file
``artifacts/<2 hex>/<digest>``), a function step's pickle (``script["callable"]`` of its
task) and a plot image (``image.digest`` of a plot report). An object file that nothing
references is checked too. A problem is one of:

* **corrupt** — the file's content no longer hashes to its name (or an inline row's bytes no
  longer hash to its digest);
* **missing** — a reference to a file that is not there.

Repair moves a corrupt *file* aside and nothing else: the database is never changed, an
inline row is only reported, and a file that verifies is never moved (each one is checked
again after it was moved, and put back if a writer healed it in the meantime). A reference
to a quarantined object then reads as missing until the same content is written again (the
step that produced it runs again: its cache hit no longer verifies), which heals it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

import pipekit.store.tables as t

from ..hashing import digest_bytes, digest_file
from .remote import RemoteBlobStore

if TYPE_CHECKING:
    from . import Store

__all__ = ["CheckReport", "Problem", "check_objects", "quarantine"]

_HEX = frozenset("0123456789abcdef")


@attrs.frozen
class Problem:
    """One object that fails verification."""

    digest: str
    #: ``corrupt`` or ``missing``
    state: str
    #: what references the object ("artifact 'x' of task T" …); empty: nothing does
    uses: tuple[str, ...]
    #: the bad copy is bytes inline in the database, not a file
    inline: bool = False
    #: where repair moved the file, if it did
    moved_to: str | None = None
    #: why repair could not move it
    not_moved: str | None = None
    #: a missing object's corrupt copy that an earlier repair moved aside
    quarantined: str | None = None

    def line(self) -> str:
        """The problem as one line: state, digest, where, what references it, what repair did."""
        uses = ", ".join(self.uses) if self.uses else "referenced by nothing"
        where = " (inline in the database)" if self.inline else ""
        text = f"{self.state:<8} {self.digest}{where}  {uses}"
        if self.moved_to:
            text += f"; moved to {self.moved_to}"
        elif self.not_moved:
            text += f"; not moved: {self.not_moved}"
        if self.quarantined:
            text += f" (its corrupt copy is in {self.quarantined})"
        return text


@attrs.frozen
class CheckReport:
    #: distinct objects checked (files and inline rows)
    objects: int
    #: object files found on disk
    files: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _is_digest(name: str) -> bool:
    return len(name) == 64 and set(name) <= _HEX


def _references(store: Store) -> Iterator[tuple[str, str, bytes | None]]:
    """``(digest, what references it, inline bytes or None)`` for every reference."""
    for digest, inline, task, name in (t.Artifact.select(t.Artifact.digest, t.Artifact.inline,
                                                         t.Artifact.task, t.Artifact.name)
                                       .tuples().iterator()):
        yield digest, f"artifact {name!r} of task {task}", _bytes(inline)
    for digest, inline, task, name, model_id in (
            t.OutputModel.select(t.OutputModel.digest, t.OutputModel.inline,
                                 t.OutputModel.task, t.OutputModel.name, t.OutputModel.id)
            .tuples().iterator()):
        yield digest, f"model {name!r} ({model_id}) of task {task}", _bytes(inline)
    for task, script in (t.Task.select(t.Task.id, t.Task.script)
                         .where(t.Task.script.contains('"callable"')).tuples().iterator()):
        digest = _loads(script).get("callable")
        if isinstance(digest, str) and _is_digest(digest):
            yield digest, f"function of task {task}", None
    for task, title, series, content in (
            t.Report.select(t.Report.task, t.Report.title, t.Report.series, t.Report.content)
            .where((t.Report.kind == "plot") & t.Report.content.contains('"digest"'))
            .tuples().iterator()):
        image = _loads(content).get("image")
        digest = image.get("digest") if isinstance(image, dict) else None
        if isinstance(digest, str) and _is_digest(digest):
            yield digest, f"plot image {title!r}/{series!r} of task {task}", None


def _bytes(inline: bytes | memoryview | None) -> bytes | None:
    return None if inline is None else bytes(inline)


def _loads(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _object_files(root: Path) -> Iterator[Path]:
    """Every file under ``root`` named like an object (``<2 hex>/<digest>``)."""
    if not root.is_dir():
        return
    for folder in sorted(os.scandir(root), key=lambda e: e.name):
        if len(folder.name) != 2 or not folder.is_dir(follow_symlinks=False):
            continue
        for entry in sorted(os.scandir(folder.path), key=lambda e: e.name):
            if _is_digest(entry.name) and entry.name[:2] == folder.name:
                yield Path(entry.path)


def check_objects(store: Store, *, repair: bool = False) -> CheckReport:
    """Verify every referenced object and every object file (see the module docstring).

    :param repair: move each corrupt file to the quarantine folder (:func:`quarantine`).
    """
    store._check()
    uses: dict[str, list[str]] = {}
    needs_file: set[str] = set()
    problems: list[Problem] = []
    bad_inline: dict[str, list[str]] = {}
    for digest, use, inline in _references(store):
        uses.setdefault(digest, []).append(use)
        if inline is None:
            needs_file.add(digest)
        elif digest_bytes(inline) != digest:
            bad_inline.setdefault(digest, []).append(use)
    for digest, bad_uses in bad_inline.items():
        problems.append(Problem(digest, "corrupt", tuple(bad_uses), inline=True,
                                not_moved="stored in the database" if repair else None))
    on_disk: set[str] = set()
    blobs = store.blobs
    remote = isinstance(blobs, RemoteBlobStore)
    # With objects in an object store, those are checked (read through); the local cache
    # verifies itself on every read.
    for digest in (blobs.remote_digests() if remote else
                   (path.name for path in _object_files(blobs.root))):
        on_disk.add(digest)
        if blobs.remote_holds(digest) if remote else blobs.holds(digest):
            continue
        problem = Problem(digest, "corrupt", tuple(uses.get(digest, ())))
        if repair:
            try:
                moved = blobs.quarantine_remote(digest) if remote else quarantine(store, digest)
            except OSError as exc:
                problem = attrs.evolve(problem, not_moved=str(exc))
            else:
                problem = attrs.evolve(problem, moved_to=str(moved) if moved else None,
                                       not_moved=None if moved else "it verifies now")
        problems.append(problem)
    for digest in sorted(needs_file - on_disk):
        aside = store.settings.quarantine_dir / digest
        problems.append(Problem(digest, "missing", tuple(uses[digest]),
                                quarantined=str(aside) if aside.exists() else None))
    problems.sort(key=lambda p: (p.state != "corrupt", p.digest))
    return CheckReport(objects=len(on_disk | set(uses)), files=len(on_disk),
                       problems=tuple(problems))


def quarantine(store: Store, digest: str) -> Path | None:
    """Move the object file of ``digest`` to ``PIPEKIT_HOME/quarantine/<digest>`` (``.1``,
    ``.2`` … when that name is taken) if it fails verification; returns where it went, or
    ``None`` when it verifies (or is gone).

    A writer may heal the object between a check and this move: the moved file is verified
    once more and, if it now holds the object, put back (a valid object is never moved away).

    :raises OSError: the file could not be moved (another filesystem, permissions).
    """
    path = store.blobs.path(digest)
    if not path.exists() or store.blobs.holds(digest):
        return None
    folder = store.settings.quarantine_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = folder / digest
    n = 0
    while dest.exists():
        n += 1
        dest = folder / f"{digest}.{n}"
    try:
        os.rename(path, dest)
    except FileNotFoundError:
        return None
    try:
        healed = digest_file(dest) == digest
    except OSError:
        healed = False
    if healed:
        os.replace(dest, path)
        return None
    return dest
