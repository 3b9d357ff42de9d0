"""``StorageManager``: fetch and publish files by URL, as ClearML scripts do inside steps.

Local paths and ``file://`` URLs are served in place; ``http(s)://`` downloads are cached under
``PIPEKIT_HOME/cache/storage`` keyed by the URL's digest. Other schemes (``s3://`` …) go
through fsspec when it is installed (extra ``s3``).
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

from .config import get_settings
from .errors import PipekitError
from .hashing import digest_bytes


class StorageError(PipekitError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(f"cannot fetch {url!r}: {reason}")


def _local_path(url: str) -> Path | None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(url).expanduser()
    return None


class StorageManager:
    """Get local copies of remote files and upload local ones."""

    @classmethod
    def get_local_copy(cls, remote_url: str, cache_context: str | None = None,
                       extract_archive: bool = True, force_download: bool = False) -> str:
        """A local path holding the content at ``remote_url``.

        :raises StorageError: the URL is missing or unreachable (naming it).
        """
        local = _local_path(str(remote_url))
        if local is not None:
            if not local.exists():
                raise StorageError(str(remote_url), "no such file")
            return str(local)
        cache = get_settings().cache_dir / "storage" / digest_bytes(str(remote_url).encode())
        name = Path(urllib.parse.urlparse(remote_url).path).name or "download"
        dest = cache / name
        if dest.exists() and not force_download:
            return str(dest)
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = cache / f".{name}.partial"
        try:
            if remote_url.startswith(("http://", "https://")):
                with urllib.request.urlopen(remote_url, timeout=60) as resp, \
                        open(tmp, "wb") as out:
                    shutil.copyfileobj(resp, out, 1024 * 1024)
            else:
                try:
                    import fsspec
                except ImportError as exc:
                    raise StorageError(remote_url, "this scheme needs fsspec "
                                       "(pip install 'pipekit[s3]')") from exc
                with fsspec.open(remote_url, "rb") as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, 1024 * 1024)
        except StorageError:
            raise
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(remote_url, str(exc)) from exc
        os.replace(tmp, dest)
        return str(dest)
