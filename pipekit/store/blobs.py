"""Content-addressed objects under ``artifacts/<2 hex>/<digest>``.

A value is written through a :class:`BlobSink`, which hashes as it goes and keeps small
payloads in memory (they are stored inline in the database) or spills to a temp file that is
fsynced and renamed into place, so a reader never sees a partial object and identical content
is stored once. Reading verifies the digest before anything is deserialized.

Objects heal: a write whose object already exists checks that file first (its size, then its
digest) and, when it no longer holds the bytes its name promises, replaces it atomically with
the good bytes just written. So after one flipped bit, the next write of the same content, by
any task, under any name, repairs the object for every task that references it.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from pathlib import Path

import attrs

from ..errors import ArtifactCorrupt
from ..hashing import digest_bytes, digest_file, hasher

log = logging.getLogger(__name__)

#: Serialized values up to this size live inline in the database row.
INLINE_LIMIT = 32 * 1024


@attrs.frozen
class Written:
    digest: str
    size: int
    inline: bytes | None


class BlobSink(io.RawIOBase):
    """A write-only file object that hashes what it is given and stores it on :meth:`commit`."""

    def __init__(self, blobs: BlobStore, inline_limit: int = INLINE_LIMIT) -> None:
        super().__init__()
        self._blobs = blobs
        self._limit = inline_limit
        self._hash = hasher()
        self._buf = bytearray()
        self._fh: io.BufferedWriter | None = None
        self._tmp: str | None = None
        self._size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        n = view.nbytes
        self._hash.update(view)
        self._size += n
        if self._fh is None and len(self._buf) + n <= self._limit:
            self._buf += view
            return n
        if self._fh is None:
            fd, self._tmp = tempfile.mkstemp(dir=self._blobs.tmp_dir(), prefix="obj-")
            self._fh = os.fdopen(fd, "wb")
            self._fh.write(self._buf)
            self._buf = bytearray()
        self._fh.write(view)
        return n

    def commit(self) -> Written:
        """Finish: fsync and rename a spilled object into place (or drop it as a duplicate)."""
        digest = self._hash.hexdigest()
        if self._fh is None:
            return Written(digest, self._size, bytes(self._buf))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        assert self._tmp is not None
        self._blobs.adopt(self._tmp, digest)
        self._tmp = None
        return Written(digest, self._size, None)

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass
        self._tmp = None


class BlobStore:
    """The ``artifacts/`` folder of one store."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def where(self) -> str:
        """Where the objects are, as a user names it."""
        return str(self.root)

    def exists(self, digest: str) -> bool:
        """An object of ``digest`` is stored (not verified: reading does that)."""
        return self.path(digest).exists()

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a blake3 hex digest: {digest!r}")
        return self.root / digest[:2] / digest

    def tmp_dir(self) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        return tmp

    def sweep_tmp(self, older_than: float = 3600.0) -> int:
        """Remove temp files that writers killed mid-write left behind; returns how many.

        Only old files go: a live writer's temp file is seconds old.
        """
        tmp = self.root / "tmp"
        if not tmp.is_dir():
            return 0
        cutoff = time.time() - older_than
        removed = 0
        for entry in os.scandir(tmp):
            try:
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def sink(self, inline_limit: int = INLINE_LIMIT) -> BlobSink:
        return BlobSink(self, inline_limit)

    def adopt(self, tmp_path: str, digest: str) -> Path:
        """Move a finished temp file to its content address. Identical content is kept once:
        an existing object that still verifies stays as it is, one that does not is replaced
        (atomically, by ``rename``) with the temp file's good bytes.
        """
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if final.exists():
            if self.holds(digest, os.path.getsize(tmp_path)):
                os.unlink(tmp_path)
                return final
            log.warning("object %s was corrupt or unreadable; replaced with the same "
                        "content just written", digest)
        os.chmod(tmp_path, 0o600)
        os.replace(tmp_path, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final

    def holds(self, digest: str, size: int | None = None) -> bool:
        """The object file of ``digest`` exists and hashes to it (``size``, when known, is
        checked first: a file of another size cannot hold the object, whatever its bytes).
        """
        path = self.path(digest)
        try:
            if size is not None and path.stat().st_size != size:
                return False
            return digest_file(path) == digest
        except OSError:  # missing, a folder, unreadable: not the object
            return False

    def put_bytes(self, data: bytes) -> Path:
        """Store ``data`` as a file (a function's pickle; an inline object given a path on
        demand). An existing file is kept only while it still holds ``data``.
        """
        digest = digest_bytes(data)
        final = self.path(digest)
        if self._stored(digest, len(data)):
            return final
        sink = self.sink(inline_limit=-1)
        sink.write(data)
        sink.commit()
        return final

    def _stored(self, digest: str, size: int) -> bool:
        """The object is stored whole (what :meth:`put_bytes` may skip a write for)."""
        return self.holds(digest, size)

    def verified_path(self, digest: str, artifact: str) -> Path:
        """The object's path after checking that its content still hashes to ``digest``.

        :raises ArtifactCorrupt: the object is missing or its content changed.
        """
        path = self.path(digest)
        if not path.exists():
            raise ArtifactCorrupt(artifact, digest)
        actual = digest_file(path)
        if actual != digest:
            raise ArtifactCorrupt(artifact, digest, actual)
        return path


def verify_inline(data: bytes, digest: str, artifact: str) -> bytes:
    """``data`` if it hashes to ``digest``, else :class:`ArtifactCorrupt`."""
    actual = digest_bytes(data)
    if actual != digest:
        raise ArtifactCorrupt(artifact, digest, actual)
    return data
