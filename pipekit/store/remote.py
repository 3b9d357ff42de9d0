"""Objects in a shared fsspec filesystem (``PIPEKIT_ARTIFACTS=s3://bucket/prefix``), with a
verified local cache in front.

Agents on many machines share one object store: a step's outputs are written by the agent
that ran it and read by the next step's agent, on another machine. Objects keep their content
address, ``<prefix>/<2 hex>/<digest>``, so an upload is idempotent and a cached copy can never
be stale; only its bytes can go bad, and every read verifies them:

* a write hashes into a local temp file (as :class:`~.blobs.BlobSink` always does), uploads
  it under its address unless the object store already has an object of that size there, and
  keeps the file as the local cache copy;
* a read uses the local cache copy if it still hashes to its digest, else downloads the
  object to a temp file, hashing as it goes, and adopts it into the cache only if it matches.
  A remote object that does not match is moved aside to ``<prefix>/quarantine/`` (so the next
  write of the same content uploads good bytes: objects heal here too) and the read is
  :class:`~pipekit.errors.ArtifactCorrupt`.

No network call happens inside a database transaction: a row naming an object is written
only after the object is uploaded. On object stores (S3, GCS, Azure) a PUT appears whole; on
any other fsspec filesystem the upload goes to a temp name first and is moved into place.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ArtifactCorrupt, ConfigError
from ..hashing import digest_file, hasher
from ..retry import RetriesExhausted, retrying
from .blobs import BlobStore

log = logging.getLogger(__name__)

__all__ = ["RemoteBlobStore"]

#: attempts at an upload (transient errors only: pipekit.retry), and the first pause
RETRIES, RETRY_DELAY = 4, 0.5
#: protocols whose uploads become visible whole (no temp name needed)
ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})
_CHUNK = 1 << 20


class RemoteBlobStore(BlobStore):
    """Objects under an fsspec URL; :attr:`root` is the local cache of verified copies.

    :param url: where the objects live, e.g. ``s3://bucket/pipekit`` (driver options from
        fsspec's own configuration, e.g. ``FSSPEC_S3_ENDPOINT_URL``).
    :param cache: the local folder of verified copies (``PIPEKIT_HOME/cache/artifacts``).
    """

    def __init__(self, url: str, cache: Path) -> None:
        super().__init__(cache)
        self.url = url.rstrip("/")
        self._fs: Any = None
        self._base = ""

    @property
    def where(self) -> str:
        return self.url

    def _filesystem(self) -> tuple[Any, str]:
        if self._fs is None:
            scheme = urllib.parse.urlsplit(self.url).scheme
            try:
                # lazy: fsspec (the s3 extra) is needed only when objects live under a URL
                from fsspec.core import url_to_fs
            except ImportError:
                raise ConfigError(f"PIPEKIT_ARTIFACTS={self.url} needs fsspec: "
                                  "pip install 'pipekit[s3]'") from None
            try:
                self._fs, self._base = url_to_fs(self.url)
            except ImportError as exc:  # fsspec knows the scheme, its driver is missing
                hint = " (pip install 'pipekit[s3]')" if scheme in ("s3", "s3a") else ""
                raise ConfigError(f"PIPEKIT_ARTIFACTS={self.url}: {exc}{hint}") from None
            except ValueError as exc:
                raise ConfigError(f"PIPEKIT_ARTIFACTS={self.url}: unknown URL scheme "
                                  f"{scheme!r} ({exc})") from None
            self._base = self._base.rstrip("/")
        return self._fs, self._base

    def key(self, digest: str) -> str:
        """The object's path within the filesystem."""
        self.path(digest)  # checks the digest's form: names never come from anywhere else
        return f"{self._filesystem()[1]}/{digest[:2]}/{digest}"

    def _remote_size(self, digest: str) -> int | None:
        fs, _ = self._filesystem()
        key = self.key(digest)
        fs.invalidate_cache(key)  # another machine may have written it since we listed
        try:
            info = fs.info(key)
        except FileNotFoundError:
            return None
        return int(info.get("size") or 0) if info.get("type", "file") == "file" else None

    # -- writing ------------------------------------------------------------------------------

    def adopt(self, tmp_path: str, digest: str) -> Path:
        """Upload a finished temp file under its address (unless an object of its size is
        there already), then keep it as the local cache copy.
        """
        size = os.path.getsize(tmp_path)
        if self._remote_size(digest) != size:
            self._upload(tmp_path, digest)
        return super().adopt(tmp_path, digest)

    def _upload(self, local: str, digest: str) -> None:
        fs, base = self._filesystem()
        key = self.key(digest)
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)

        def put() -> None:
            if protocols & ATOMIC_PUT:
                fs.put_file(local, key)
                return
            partial = f"{base}/tmp/{digest}.{uuid.uuid4().hex}"
            fs.makedirs(f"{base}/tmp", exist_ok=True)
            fs.makedirs(f"{base}/{digest[:2]}", exist_ok=True)
            fs.put_file(local, partial)
            fs.mv(partial, key)

        try:
            retrying(put, attempts=RETRIES, delay=RETRY_DELAY)
        except RetriesExhausted as exc:  # the store's callers say which artifact
            raise OSError(f"{type(exc.__cause__).__name__}: {exc.__cause__} ({exc})"
                          ) from exc.__cause__
        fs.invalidate_cache(key)

    def _stored(self, digest: str, size: int) -> bool:
        # here, and in the object store: a cached copy alone is not shared with anyone
        return super()._stored(digest, size) and self._remote_size(digest) == size

    # -- reading ------------------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        return super().holds(digest) or self._remote_size(digest) is not None

    def verified_path(self, digest: str, artifact: str) -> Path:
        """A local copy of the object, verified: the cache's, or downloaded and checked.

        :raises ArtifactCorrupt: the object is missing from the object store, or its bytes
            there do not hash to ``digest`` (it is then moved aside to ``quarantine/``).
        """
        path = self.path(digest)
        try:
            if digest_file(path) == digest:
                return path
        except OSError:
            pass
        fs, _ = self._filesystem()
        key = self.key(digest)
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir(), prefix="get-")
        h = hasher()
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    with fs.open(key, "rb") as src:
                        for chunk in iter(lambda: src.read(_CHUNK), b""):
                            h.update(chunk)
                            out.write(chunk)
                except FileNotFoundError:
                    raise ArtifactCorrupt(artifact, digest) from None
                out.flush()
                os.fsync(out.fileno())
            actual = h.hexdigest()
            if actual != digest:
                self.quarantine_remote(digest)
                raise ArtifactCorrupt(artifact, digest, actual)
            return super().adopt(tmp, digest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -- checking -----------------------------------------------------------------------------

    def remote_digests(self) -> Iterator[str]:
        """The digest of every object in the object store (``<2 hex>/<digest>`` names)."""
        fs, base = self._filesystem()
        fs.invalidate_cache(base)
        try:
            names = fs.find(base)
        except FileNotFoundError:
            return
        for name in sorted(names):
            parts = name.rstrip("/").split("/")
            if len(parts) >= 2 and len(parts[-1]) == 64 and parts[-2] == parts[-1][:2] and \
                    all(c in "0123456789abcdef" for c in parts[-1]):
                yield parts[-1]

    def remote_holds(self, digest: str) -> bool:
        """The object store's object of ``digest`` hashes to it (read through, not kept)."""
        fs, _ = self._filesystem()
        h = hasher()
        try:
            with fs.open(self.key(digest), "rb") as src:
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    h.update(chunk)
        except FileNotFoundError:
            return False
        return h.hexdigest() == digest

    def quarantine_remote(self, digest: str) -> str | None:
        """Move the object store's object of ``digest`` to ``<prefix>/quarantine/`` unless
        it verifies; returns where it went (``None``: it verifies, or is gone).
        """
        if self.remote_holds(digest):
            return None
        fs, base = self._filesystem()
        dest = f"{base}/quarantine/{digest}.{uuid.uuid4().hex[:8]}"
        try:
            fs.mv(self.key(digest), dest)
        except FileNotFoundError:
            return None
        fs.invalidate_cache(self.key(digest))
        log.warning("object %s in %s did not verify; moved aside to %s", digest, self.url, dest)
        # the local copy, if any, came from the same bad bytes or is good: keep only a good one
        local = self.path(digest)
        if local.exists() and not super().holds(digest):
            local.unlink()
        return f"{urllib.parse.urlsplit(self.url).scheme}://{dest}"
