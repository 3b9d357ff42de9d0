"""``StorageManager``: fetch and publish files and folders by URL, as ClearML scripts do in steps.

It is for step code that reads a dataset from ``s3://…`` or a web server, or writes results
to a shared folder. It must not touch the store or the artifacts folder: artifacts are
content-addressed by :mod:`pipekit.artifacts`, and this module deals only in URLs.

Local paths and ``file://`` URLs are read in place; ``http(s)://`` goes through urllib; every
other scheme (``s3://``, ``gs://``, ``memory://`` …) goes through fsspec (extra ``s3``).
Downloads are cached under ``PIPEKIT_HOME/cache/storage``, keyed by the URL's blake3 digest.
Every file this module writes lands by ``os.replace`` from a temp file beside it, so no reader
and no cache ever sees a partial file. Every failure is one :class:`StorageError` naming the
URL and the reason.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any

from .config import get_settings
from .errors import StorageError
from .hashing import digest_bytes, digest_file
from .retry import RetriesExhausted, retrying

_HTTP_TIMEOUT = 60.0
_CHUNK = 1024 * 1024
#: Retries of a failed remote upload when ``retries`` is not given (ClearML's default).
_DEFAULT_RETRIES = 3
#: Seconds before the first retry, doubled for each further one (tests set it to 0).
_RETRY_DELAY = 0.5
#: The archives ClearML extracts; anything else is handed out as the file itself.
_ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")
#: ``filter="data"`` (3.12, back-ported to 3.10.12 and 3.11.4); without it members are vetted here.
_TAR_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")
#: Writes one file's bytes to an open temp file.
_Filler = Callable[[IO[bytes]], object]


# -- URLs -------------------------------------------------------------------------------------


def _is_http(url: str) -> bool:
    return urllib.parse.urlparse(url).scheme.lower() in ("http", "https")


def _local_path(url: str, action: str) -> Path | None:
    """The filesystem path ``url`` names, or ``None`` when it is not a local path."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            # file://data/x.csv names host "data" and path /x.csv; serving /x.csv would be a
            # silent surprise, so say how to write what was probably meant.
            raise StorageError(url, f"a file:// URL cannot name a host ({parsed.netloc!r}); "
                               "write file:///absolute/path or a plain path", action)
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(url).expanduser()
    return None


def _fs(url: str, action: str) -> tuple[Any, str]:
    """The fsspec filesystem serving ``url`` and the path within it."""
    scheme = urllib.parse.urlparse(url).scheme.lower()
    hint = " (pip install 'pipekit[s3]')" if scheme in ("s3", "s3a") else ""
    try:
        from fsspec.core import url_to_fs  # lazy: optional (the s3 extra), only for its URLs
    except ImportError as exc:
        raise StorageError(url, f"{scheme}:// URLs need fsspec (pip install 'pipekit[s3]')",
                           action) from exc
    try:
        return url_to_fs(url)
    except ImportError as exc:  # fsspec knows the scheme but its driver (s3fs …) is missing
        raise StorageError(url, f"{exc}{hint}", action) from exc
    except ValueError as exc:
        raise StorageError(url, f"unknown URL scheme {scheme!r} ({exc})", action) from exc


def _plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def _name_from_url(url: str, default: str) -> str:
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    # "http://host/a/.." has the name ".."; it must never become a path in the cache.
    return name if _plain_name(name) else default


def _join(url: str, rel: str) -> str:
    """``url`` extended by the relative POSIX path ``rel``."""
    if urllib.parse.urlparse(url).scheme == "file":
        rel = urllib.parse.quote(rel)  # url2pathname unquotes: a literal % must survive it
    return (url if url.endswith("/") else url + "/") + rel


def _cache_key_dir(url: str, cache_context: str | None) -> Path:
    key = url if cache_context is None else f"{cache_context}\n{url}"
    return get_settings().cache_dir / "storage" / digest_bytes(key.encode())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):  # before URLError: it is one
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"unreachable ({exc.reason})"
    if isinstance(exc, FileNotFoundError):
        return "no such file or folder"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _inside(path: Path, folder: Path) -> bool:
    # realpath, not resolve(strict): either may not exist yet, and a symlink inside `folder`
    # pointing elsewhere must count as outside.
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


# -- writing files ------------------------------------------------------------------------------


def _write_atomically(dest: Path, fill: _Filler, mode: int | None = None) -> None:
    """Write ``dest`` by filling a temp file beside it, then renaming it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
        if mode is not None:
            os.chmod(tmp, mode)  # mkstemp makes 0600; a shared folder needs the source's mode
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _copy_file(src: Path) -> _Filler:
    def fill(out: IO[bytes]) -> None:
        with open(src, "rb") as fh:
            shutil.copyfileobj(fh, out, _CHUNK)

    return fill


def _open_remote(url: str) -> IO[bytes]:
    if _is_http(url):
        return urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT)  # type: ignore[no-any-return]
    fs, path = _fs(url, "fetch")
    return fs.open(path, "rb")  # type: ignore[no-any-return]


def _download(url: str, dest: Path, force: bool) -> Path:
    # Only complete files ever get `dest`'s name (os.replace), so existing means usable.
    if dest.is_file() and not force:
        return dest
    try:
        # Opened before anything is created: a 404 leaves no trace in the cache.
        with _open_remote(url) as src:
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_atomically(dest, lambda out: shutil.copyfileobj(src, out, _CHUNK))
    except StorageError:
        raise
    except Exception as exc:
        with contextlib.suppress(OSError):
            dest.parent.rmdir()  # only when empty: never drops another name's cached copy
        raise StorageError(url, _reason(exc)) from exc
    return dest


def _retrying(call: Callable[[], object], retries: int | None, url: str) -> None:
    attempts = 1 + (_DEFAULT_RETRIES if retries is None else max(0, retries))
    try:
        retrying(call, attempts=attempts, delay=_RETRY_DELAY)
    except RetriesExhausted as exc:
        cause = exc.__cause__ or exc
        raise StorageError(url, f"{_reason(cause)} ({exc})", "upload to") from cause
    except Exception as exc:
        raise StorageError(url, _reason(exc), "upload to") from exc


# -- archives -----------------------------------------------------------------------------------


def _is_archive(name: str) -> bool:
    return name.lower().endswith(_ARCHIVE_SUFFIXES)


def _escapes(member: str) -> bool:
    posix = PurePosixPath(member.replace("\\", "/"))
    return posix.is_absolute() or ".." in posix.parts or bool(PureWindowsPath(member).drive)


def _unsafe(url: str, member: str, why: str) -> StorageError:
    return StorageError(url, f"archive member {member!r} {why}; the archive was not extracted")


def _unpack(url: str, archive: Path, dest: Path) -> None:
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            # zipfile would silently drop "../" parts; an archive that tries is refused.
            for member in zf.namelist():
                if _escapes(member):
                    raise _unsafe(url, member, "would be written outside the extraction folder")
            zf.extractall(dest)
        return
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        # Checked here even with the data filter, which would quietly strip a leading "/":
        # an archive that names paths outside its folder is refused, as for zip.
        for m in members:
            if _escapes(m.name):
                raise _unsafe(url, m.name, "would be written outside the extraction folder")
            if not _TAR_HAS_DATA_FILTER and not (m.isfile() or m.isdir()):
                # Links and devices are what the data filter vets; without it, refuse them.
                raise _unsafe(url, m.name, "is a link or special file")
        if not _TAR_HAS_DATA_FILTER:
            tf.extractall(dest, members=members)
            return
        try:
            tf.extractall(dest, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise _unsafe(url, exc.tarinfo.name, f"is unsafe ({exc})") from exc


def _extract(url: str, archive: Path) -> Path:
    # Keyed by the archive's content, not its URL: a changed local archive or a forced
    # re-download gets a fresh folder, and identical archives share one.
    root = get_settings().cache_dir / "storage" / "extracted"
    target = root / digest_file(archive)
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".partial-"))
    try:
        try:
            _unpack(url, archive, tmp)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
            raise StorageError(url, f"cannot extract {archive.name!r} ({_reason(exc)}); pass "
                               "extract_archive=False to get the file itself") from exc
        try:
            os.replace(tmp, target)
        except OSError as exc:
            if not target.is_dir():  # else another process extracted it first: use theirs
                raise StorageError(url, f"cannot extract {archive.name!r} ({_reason(exc)})") \
                    from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already gone when the rename succeeded
    return target


# -- folders ------------------------------------------------------------------------------------


def _raise(exc: OSError) -> None:
    raise exc


def _walk_local(folder: Path, match_wildcard: str | None) -> Iterator[str]:
    """Relative POSIX paths of the files under ``folder``, sorted, filtered by the wildcard."""
    # onerror: os.walk would otherwise skip an unreadable subfolder without a word.
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_raise):
        dirnames.sort()
        for name in sorted(filenames):
            rel = Path(dirpath, name).relative_to(folder).as_posix()
            if match_wildcard is None or fnmatch.fnmatch(rel, match_wildcard):
                yield rel


def _not_a_folder(url: str, exists: bool, action: str) -> StorageError:
    if exists:
        return StorageError(url, "is a file, not a folder (use get_local_copy)", action)
    return StorageError(url, "no such folder", action)


def _list_folder(url: str, match_wildcard: str | None, action: str
                 ) -> tuple[Callable[[str], tuple[str, _Filler]], list[str]]:
    """The files under the folder ``url`` as sorted relative POSIX paths, and a function
    giving, for one of them, its URL and a filler that copies its bytes.
    """
    if _is_http(url):
        raise StorageError(url, "folders cannot be listed over http(s); fetch each file with "
                           "get_local_copy", action)
    local = _local_path(url, action)
    if local is not None:
        if not local.is_dir():
            raise _not_a_folder(url, local.exists(), action)
        try:
            rels = list(_walk_local(local, match_wildcard))
        except OSError as exc:
            raise StorageError(url, _reason(exc), action) from exc
        return (lambda rel: (str(local / rel), _copy_file(local / rel))), rels

    fs, root = _fs(url, action)
    try:
        if not fs.isdir(root):
            raise _not_a_folder(url, fs.exists(root), action)
        found = sorted(fs.find(root))
    except StorageError:
        raise
    except Exception as exc:
        raise StorageError(url, _reason(exc), action) from exc
    prefix = root.rstrip("/") + "/"
    rels = []
    for path in found:
        rel = path[len(prefix):] if path.startswith(prefix) else path
        # A key such as "data/../x" (legal in object stores) must not climb out of the
        # local folder; one such key refuses the whole folder before anything is written.
        if not path.startswith(prefix) or not rel or _escapes(rel):
            raise StorageError(url, f"remote file {path!r} would be written outside the local "
                               "folder; nothing was downloaded", action)
        if match_wildcard is None or fnmatch.fnmatch(rel, match_wildcard):
            rels.append(rel)

    def source(rel: str) -> tuple[str, _Filler]:
        def fill(out: IO[bytes]) -> None:
            with fs.open(prefix + rel, "rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)

        return fs.unstrip_protocol(prefix + rel), fill

    return source, rels


# -- the API ------------------------------------------------------------------------------------


class StorageManager:
    """Get local copies of files and folders at URLs, and upload local ones (ClearML's API)."""

    @classmethod
    def get_local_copy(cls, remote_url: str | os.PathLike[str], cache_context: str | None = None,
                       extract_archive: bool = True, name: str | None = None,
                       force_download: bool = False) -> str:
        """A local path holding the content at ``remote_url``.

        A local path or ``file://`` URL is returned as it is; anything else is downloaded
        once into the cache and the cached copy returned on later calls.

        :param remote_url: a path, or a ``file://``, ``http(s)://`` or fsspec URL.
        :param cache_context: a separate cache for this context (same URL, separate copy).
        :param extract_archive: a ``.zip``, ``.tar.gz`` or ``.tgz`` is extracted into a cached
            folder and the folder returned.
        :param name: the file name of the downloaded copy (default: the URL's last part);
            useful when the URL has none, e.g. ``…/get?id=3``.
        :param force_download: download again even when a cached copy exists.
        :raises StorageError: the URL is missing or unreachable, or the archive is unsafe.
        """
        url = os.fspath(remote_url)
        if name is not None and not _plain_name(name):
            raise StorageError(url, f"name {name!r} must be a plain file name")
        path = _local_path(url, "fetch")
        if path is not None:
            if not path.exists():
                raise StorageError(url, "no such file or folder")
        else:
            dest = _cache_key_dir(url, cache_context) / (name or _name_from_url(url, "download"))
            path = _download(url, dest, force_download)
        if extract_archive and _is_archive(path.name) and path.is_file():
            return str(_extract(url, path))
        return str(path)

    @classmethod
    def upload_file(cls, local_file: str | os.PathLike[str], remote_url: str | os.PathLike[str],
                    wait_for_upload: bool = True, retries: int | None = None) -> str:
        """Copy ``local_file`` to ``remote_url`` (the full destination, file name included).

        A local path or ``file://`` destination gets its parent folders created and the file
        renamed into place whole. Other schemes go through fsspec, retried on transient
        errors. ``http(s)://`` destinations are not supported.

        :param wait_for_upload: accepted for ClearML; pipekit always uploads before returning,
            so an error is raised where it happens.
        :param retries: retries of a failed remote upload (default 3, with backoff).
        :returns: ``remote_url``.
        :raises StorageError: the local file is missing or the destination cannot be written.
        """
        src, url = Path(local_file).expanduser(), os.fspath(remote_url)
        if not src.is_file():
            what = "is a folder (use upload_folder)" if src.is_dir() else "does not exist"
            raise StorageError(url, f"local file {str(src)!r} {what}", "upload to")
        if _is_http(url):
            raise StorageError(url, "uploading over http(s) is not supported; upload to a path, "
                               "a file:// URL or an fsspec URL such as s3://", "upload to")
        dest = _local_path(url, "upload to")
        if dest is None:
            fs, path = _fs(url, "upload to")
            _retrying(lambda: fs.put_file(str(src), path), retries, url)
            return url
        if dest.is_dir():
            raise StorageError(url, "is a folder; give the destination's full file path",
                               "upload to")
        try:
            _write_atomically(dest, _copy_file(src), mode=stat.S_IMODE(src.stat().st_mode))
        except OSError as exc:
            raise StorageError(url, _reason(exc), "upload to") from exc
        return url

    @classmethod
    def upload_folder(cls, local_folder: str | os.PathLike[str], remote_url: str | os.PathLike[str],
                      match_wildcard: str | None = None, retries: int | None = None) -> str:
        """Upload every file under ``local_folder`` to ``remote_url``, keeping subfolders:
        ``folder/sub/f.txt`` becomes ``<remote_url>/sub/f.txt``.

        :param match_wildcard: only files whose path relative to ``local_folder`` matches this
            ``fnmatch`` pattern (``*`` also matches ``/``, so ``*.json`` matches at any depth).
        :returns: ``remote_url``.
        :raises StorageError: the folder is missing or a file cannot be uploaded.
        """
        src, url = Path(local_folder).expanduser(), os.fspath(remote_url)
        if not src.is_dir():
            what = "is a file (use upload_file)" if src.exists() else "does not exist"
            raise StorageError(url, f"local folder {str(src)!r} {what}", "upload to")
        if _is_http(url):
            raise StorageError(url, "uploading over http(s) is not supported", "upload to")
        dest = _local_path(url, "upload to")
        if dest is not None and _inside(dest, src):
            raise StorageError(url, f"the destination is inside the folder {str(src)!r} "
                               "being uploaded", "upload to")
        try:
            rels = list(_walk_local(src, match_wildcard))
        except OSError as exc:
            raise StorageError(url, f"cannot list {str(src)!r}: {_reason(exc)}",
                               "upload to") from exc
        for rel in rels:
            target = str(dest / rel) if dest is not None else _join(url, rel)
            cls.upload_file(src / rel, target, retries=retries)
        return url

    @classmethod
    def download_folder(cls, remote_url: str | os.PathLike[str],
                        local_folder: str | os.PathLike[str] | None = None,
                        match_wildcard: str | None = None, overwrite: bool = False,
                        skip_zero_size_check: bool = False, silence_errors: bool = False) -> str:
        """Copy every file under the folder ``remote_url`` into ``local_folder``, keeping
        subfolders: ``<remote_url>/sub/f.txt`` becomes ``<local_folder>/sub/f.txt``.

        :param local_folder: where to put them (default: a cache folder for this URL).
        :param match_wildcard: only files whose path relative to ``remote_url`` matches this
            ``fnmatch`` pattern.
        :param overwrite: download files that already exist locally (default: keep them).
        :param skip_zero_size_check: accepted for ClearML; empty files are never an error.
        :param silence_errors: skip a file that fails instead of raising (a missing folder
            and a path escaping ``local_folder`` still raise).
        :returns: the local folder.
        :raises StorageError: the folder is missing, unreachable, or a file cannot be copied.
        """
        url = os.fspath(remote_url)
        source, rels = _list_folder(url, match_wildcard, "fetch")
        if local_folder is not None:
            dest = Path(local_folder).expanduser()
        else:
            dest = _cache_key_dir(url, None) / _name_from_url(url.rstrip("/"), "folder")
        src = _local_path(url, "fetch")
        if src is not None and _inside(dest, src):
            raise StorageError(url, f"the local folder {str(dest)!r} is inside the folder "
                               "being copied")
        for rel in rels:
            target = dest / rel
            if not _inside(target, dest):  # a symlink already in `dest` pointing elsewhere
                raise StorageError(url, f"{str(target)!r} leads outside the local folder")
            if target.exists() and not overwrite:
                continue
            file_url, fill = source(rel)
            try:
                _write_atomically(target, fill)
            except Exception as exc:
                if not silence_errors:
                    raise StorageError(file_url, _reason(exc)) from exc
        dest.mkdir(parents=True, exist_ok=True)
        return str(dest)

    @classmethod
    def exists_file(cls, remote_url: str | os.PathLike[str]) -> bool:
        """Whether ``remote_url`` is a file (``False`` for a folder or a missing URL).

        Over http(s), whether a ``HEAD`` request succeeds.

        :raises StorageError: the server or filesystem cannot be reached at all.
        """
        url = os.fspath(remote_url)
        local = _local_path(url, "check")
        if local is not None:
            return local.is_file()
        try:
            if _is_http(url):
                request = urllib.request.Request(url, method="HEAD")
                try:
                    with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT):
                        return True
                except urllib.error.HTTPError:
                    return False
            fs, path = _fs(url, "check")
            return bool(fs.isfile(path))
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(url, _reason(exc), "check") from exc

    @classmethod
    def list(cls, remote_url: str | os.PathLike[str],
             return_full_path: bool = False) -> list[str]:
        """The files under the folder ``remote_url``, recursively and sorted.

        :param return_full_path: give each as a full URL (``remote_url`` + ``/`` + path)
            rather than a path relative to ``remote_url``. ClearML gives relative names
            relative to the bucket instead; code meant for both should ask for full paths.
        :raises StorageError: the folder is missing or cannot be listed (http(s) cannot).
        """
        url = os.fspath(remote_url)
        _, rels = _list_folder(url, None, "list")
        return [_join(url, rel) for rel in rels] if return_full_path else rels
