"""StorageManager: local and file:// paths, http(s) downloads and their cache, fsspec URLs
(``memory://``), folders, archives, and one clear StorageError for every failure."""

from __future__ import annotations

import collections
import io
import os
import socket
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from pipekit import storage
from pipekit.config import get_settings
from pipekit.errors import PipekitError
from pipekit.storage import StorageError, StorageManager


def cache_files() -> list[Path]:
    """Every file (temp files included) under the storage cache."""
    root = get_settings().cache_dir / "storage"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# -- fixtures -----------------------------------------------------------------------------------


class Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.url = ""


@pytest.fixture
def http() -> Iterator[Server]:
    """A stdlib HTTP server on 127.0.0.1 serving ``files``, counting requests per path."""
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            state.hits[self.path] += 1
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._answer(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(body=False)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def memfs() -> Iterator[MemoryFileSystem]:
    """fsspec's in-memory filesystem, emptied before and after (its store is process-wide)."""
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs[:] = [""]
    yield fs
    fs.store.clear()
    fs.pseudo_dirs[:] = [""]


@pytest.fixture
def refused_url() -> Iterator[str]:
    """An http URL whose port is bound but not listening: connecting is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/x.csv"
    finally:
        sock.close()


def make_tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.json").write_text('{"b": 1}')
    (root / "sub" / "c.txt").write_text("c")
    return root


def files_under(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text()
            for p in sorted(root.rglob("*")) if p.is_file()}


# -- local paths --------------------------------------------------------------------------------


def test_local_path_and_file_url_are_served_in_place(tmp_path: Path) -> None:
    f = tmp_path / "my data.csv"
    f.write_text("x\n1\n")
    assert StorageManager.get_local_copy(str(f)) == str(f)
    assert StorageManager.get_local_copy(f) == str(f)
    assert StorageManager.get_local_copy(f.as_uri()) == str(f)   # %20 decoded
    assert StorageManager.get_local_copy(tmp_path.as_uri()) == str(tmp_path)  # a folder too
    assert not (get_settings().cache_dir / "storage").exists()


@pytest.mark.parametrize("make_url", [str, Path.as_uri])
def test_missing_local_file_is_one_error_naming_it(tmp_path: Path, make_url) -> None:
    url = make_url(tmp_path / "missing.csv")
    with pytest.raises(StorageError) as info:
        StorageManager.get_local_copy(url)
    assert isinstance(info.value, PipekitError)
    assert info.value.url == url
    assert str(info.value) == f"cannot fetch {url!r}: no such file or folder"


def test_file_url_naming_a_host_is_refused_not_misread() -> None:
    with pytest.raises(StorageError, match=r"'file://data/x\.csv'.*cannot name a host"):
        StorageManager.get_local_copy("file://data/x.csv")


# -- http(s) ------------------------------------------------------------------------------------


def test_http_download_is_cached_by_url(http: Server) -> None:
    http.files["/data/table.csv"] = b"a,b\n1,2\n"
    url = http.url + "/data/table.csv"

    first = Path(StorageManager.get_local_copy(url))
    assert first.read_bytes() == b"a,b\n1,2\n"
    assert first.name == "table.csv"
    assert first.is_relative_to(get_settings().cache_dir / "storage")
    assert http.hits["/data/table.csv"] == 1

    http.files["/data/table.csv"] = b"changed"
    assert StorageManager.get_local_copy(url) == str(first)      # cache hit: no request
    assert http.hits["/data/table.csv"] == 1
    assert first.read_bytes() == b"a,b\n1,2\n"
    assert cache_files() == [first]                              # no temp file left


def test_force_download_fetches_again(http: Server) -> None:
    http.files["/m.bin"] = b"v1"
    url = http.url + "/m.bin"
    path = StorageManager.get_local_copy(url)
    http.files["/m.bin"] = b"v2"
    assert StorageManager.get_local_copy(url, force_download=True) == path
    assert Path(path).read_bytes() == b"v2"
    assert http.hits["/m.bin"] == 2


def test_cache_context_keeps_a_separate_copy(http: Server) -> None:
    http.files["/m.bin"] = b"v1"
    url = http.url + "/m.bin"
    default = StorageManager.get_local_copy(url)
    other = StorageManager.get_local_copy(url, cache_context="experiment-2")
    assert default != other
    assert Path(other).read_bytes() == b"v1"
    assert http.hits["/m.bin"] == 2


def test_name_sets_the_local_file_name(http: Server) -> None:
    http.files["/get"] = b"x"
    path = Path(StorageManager.get_local_copy(http.url + "/get", name="data.csv"))
    assert path.name == "data.csv" and path.read_bytes() == b"x"
    with pytest.raises(StorageError, match=r"name '\.\./x' must be a plain file name"):
        StorageManager.get_local_copy(http.url + "/get", name="../x")


def test_url_ending_in_dot_dot_stays_inside_its_cache_folder(http: Server) -> None:
    # urllib normalises nothing: the server sees the path as sent.
    http.files["/a/.."] = b"x"
    path = Path(StorageManager.get_local_copy(http.url + "/a/.."))
    assert path.name == "download"
    assert path.parent.parent == get_settings().cache_dir / "storage"


def test_http_404_is_one_error_naming_the_url_and_leaves_nothing(http: Server) -> None:
    url = http.url + "/nope.csv"
    with pytest.raises(StorageError) as info:
        StorageManager.get_local_copy(url)
    assert info.value.url == url
    assert str(info.value) == f"cannot fetch {url!r}: HTTP 404 Not Found"
    assert cache_files() == []
    assert list((get_settings().cache_dir / "storage").glob("*")) == []


def test_unreachable_server_is_one_error(refused_url: str) -> None:
    with pytest.raises(StorageError, match=r"cannot fetch 'http://127\.0\.0\.1:\d+/x\.csv': "
                                           r"unreachable \(.*refused"):
        StorageManager.get_local_copy(refused_url)


def test_failed_download_leaves_no_partial_file(http: Server,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    http.files["/big.bin"] = b"x" * 1000
    real_copy = storage.shutil.copyfileobj

    def half_then_fail(src, out, length=0):
        out.write(src.read(10))
        raise OSError("disk full")

    monkeypatch.setattr(storage.shutil, "copyfileobj", half_then_fail)
    with pytest.raises(StorageError, match="disk full"):
        StorageManager.get_local_copy(http.url + "/big.bin")
    assert cache_files() == []
    assert list((get_settings().cache_dir / "storage").iterdir()) == []   # nor its folder

    monkeypatch.setattr(storage.shutil, "copyfileobj", real_copy)
    path = StorageManager.get_local_copy(http.url + "/big.bin")   # not a cache hit
    assert Path(path).read_bytes() == b"x" * 1000


# -- fsspec URLs --------------------------------------------------------------------------------


def test_memory_url_round_trip(tmp_path: Path, memfs: MemoryFileSystem) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(b"\x00weights")
    url = "memory://bucket/models/model.bin"
    assert StorageManager.upload_file(str(src), url) == url
    assert memfs.cat("/bucket/models/model.bin") == b"\x00weights"

    local = Path(StorageManager.get_local_copy(url))
    assert local.read_bytes() == b"\x00weights"
    assert local.is_relative_to(get_settings().cache_dir / "storage")
    assert StorageManager.exists_file(url)
    assert not StorageManager.exists_file("memory://bucket/models")      # a folder
    assert not StorageManager.exists_file("memory://bucket/nothing.bin")


def test_missing_memory_url_is_one_error(memfs: MemoryFileSystem) -> None:
    with pytest.raises(StorageError) as info:
        StorageManager.get_local_copy("memory://bucket/missing.bin")
    assert str(info.value) == "cannot fetch 'memory://bucket/missing.bin': no such file or folder"
    assert cache_files() == []


def test_unknown_scheme_is_one_error() -> None:
    with pytest.raises(StorageError, match=r"'nosuch://b/x': unknown URL scheme 'nosuch'"):
        StorageManager.get_local_copy("nosuch://b/x")


def test_without_fsspec_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec.core", None)   # makes the import fail
    with pytest.raises(StorageError, match=r"'s3://b/x': s3:// URLs need fsspec "
                                           r"\(pip install 'pipekit\[s3\]'\)"):
        StorageManager.get_local_copy("s3://b/x")


def hide_s3fs(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if s3fs were not installed: its import fails, and fsspec forgets it had loaded it."""
    import fsspec  # noqa: F401

    registry = sys.modules["fsspec.registry"]._registry  # (fsspec.registry: a view of it)
    monkeypatch.setitem(sys.modules, "s3fs", None)
    for protocol in ("s3", "s3a"):
        monkeypatch.delitem(registry, protocol, raising=False)


def test_s3_without_s3fs_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_s3fs(monkeypatch)
    with pytest.raises(StorageError, match=r"s3fs.*pip install 'pipekit\[s3\]'"):
        StorageManager.get_local_copy("s3://bucket/x.csv")


class FlakyFS(MemoryFileSystem):
    """A memory filesystem whose uploads fail ``failures`` times first."""

    protocol = "flaky"
    failures = 0
    calls = 0
    error: type[Exception] = ConnectionError

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).removeprefix("flaky://"))

    def put_file(self, lpath, rpath, **kwargs):
        type(self).calls += 1
        if type(self).calls <= type(self).failures:
            raise type(self).error("connection reset")
        return super().put_file(lpath, rpath, **kwargs)


@pytest.fixture
def flaky(memfs: MemoryFileSystem, monkeypatch: pytest.MonkeyPatch) -> type[FlakyFS]:
    fsspec.register_implementation("flaky", FlakyFS, clobber=True)
    monkeypatch.setattr(storage, "_RETRY_DELAY", 0)
    monkeypatch.setattr(FlakyFS, "calls", 0)
    return FlakyFS


def test_remote_upload_is_retried(tmp_path: Path, flaky: type[FlakyFS],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "f.txt"
    src.write_text("x")
    monkeypatch.setattr(flaky, "failures", 2)
    assert StorageManager.upload_file(src, "flaky://b/f.txt", retries=2) == "flaky://b/f.txt"
    assert flaky.calls == 3
    assert fsspec.filesystem("memory").cat("/b/f.txt") == b"x"


def test_remote_upload_gives_up_after_its_retries(tmp_path: Path, flaky: type[FlakyFS],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "f.txt"
    src.write_text("x")
    monkeypatch.setattr(flaky, "failures", 5)
    with pytest.raises(StorageError, match=r"cannot upload to 'flaky://b/f\.txt': "
                                           r"ConnectionError: connection reset \(after 2 attempts"):
        StorageManager.upload_file(src, "flaky://b/f.txt", retries=1)
    assert flaky.calls == 2


def test_permanent_upload_errors_are_not_retried(tmp_path: Path, flaky: type[FlakyFS],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "f.txt"
    src.write_text("x")
    monkeypatch.setattr(flaky, "failures", 5)
    monkeypatch.setattr(flaky, "error", PermissionError)
    with pytest.raises(StorageError, match="PermissionError"):
        StorageManager.upload_file(src, "flaky://b/f.txt")
    assert flaky.calls == 1


# -- upload_file to local destinations ------------------------------------------------------------


@pytest.mark.parametrize("make_url", [str, Path.as_uri])
def test_upload_file_to_a_local_destination(tmp_path: Path, make_url) -> None:
    src = tmp_path / "report.csv"
    src.write_text("a,b\n")
    src.chmod(0o640)
    dest = tmp_path / "share" / "deep" / "report 1.csv"
    url = make_url(dest)
    assert StorageManager.upload_file(src, url) == url
    assert dest.read_text() == "a,b\n"
    assert dest.stat().st_mode & 0o777 == 0o640          # not mkstemp's 0600
    assert os.listdir(dest.parent) == ["report 1.csv"]    # no temp file left

    src.write_text("new")
    StorageManager.upload_file(src, url)                   # replaces
    assert dest.read_text() == "new"


def test_upload_file_errors_name_the_file_and_url(tmp_path: Path, http: Server) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(StorageError) as info:
        StorageManager.upload_file(missing, "memory://b/x.csv")
    assert str(info.value) == (f"cannot upload to 'memory://b/x.csv': local file "
                               f"{str(missing)!r} does not exist")

    src = tmp_path / "f.csv"
    src.write_text("x")
    url = http.url + "/upload/f.csv"
    with pytest.raises(StorageError, match=rf"cannot upload to '{url}': uploading over http\(s\) "
                                           "is not supported"):
        StorageManager.upload_file(src, url)
    assert http.hits == {}

    with pytest.raises(StorageError, match="is a folder; give the destination's full file path"):
        StorageManager.upload_file(src, tmp_path)


def test_failed_local_upload_leaves_no_partial_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 100)
    dest = tmp_path / "out" / "f.bin"

    def half_then_fail(fsrc, fdst, length=0):
        fdst.write(fsrc.read(10))
        raise OSError("disk full")

    monkeypatch.setattr(storage.shutil, "copyfileobj", half_then_fail)
    with pytest.raises(StorageError, match=r"upload to .*disk full"):
        StorageManager.upload_file(src, dest)
    assert os.listdir(dest.parent) == []


# -- folders ------------------------------------------------------------------------------------


def test_memory_folder_round_trip(tmp_path: Path, memfs: MemoryFileSystem) -> None:
    src = make_tree(tmp_path / "src")
    url = "memory://bucket/data"
    assert StorageManager.upload_folder(src, url) == url
    assert StorageManager.list(url) == ["a.txt", "sub/b.json", "sub/c.txt"]
    assert StorageManager.list(url + "/", return_full_path=True) == [
        "memory://bucket/data/a.txt", "memory://bucket/data/sub/b.json",
        "memory://bucket/data/sub/c.txt"]

    out = tmp_path / "out"
    assert StorageManager.download_folder(url, out) == str(out)
    assert files_under(out) == files_under(src)


def test_match_wildcard_filters_relative_paths(tmp_path: Path, memfs: MemoryFileSystem) -> None:
    src = make_tree(tmp_path / "src")
    StorageManager.upload_folder(src, "memory://bucket/up", match_wildcard="*.txt")
    assert StorageManager.list("memory://bucket/up") == ["a.txt", "sub/c.txt"]

    out = StorageManager.download_folder("memory://bucket/up", tmp_path / "o1",
                                         match_wildcard="sub/*")
    assert files_under(Path(out)) == {"sub/c.txt": "c"}
    out = StorageManager.download_folder(src.as_uri(), tmp_path / "o2", match_wildcard="*.json")
    assert files_under(Path(out)) == {"sub/b.json": '{"b": 1}'}


def test_download_folder_default_is_a_cache_folder_kept_unless_overwrite(
        tmp_path: Path, memfs: MemoryFileSystem) -> None:
    memfs.pipe("/bucket/ds/x.txt", b"v1")
    out = Path(StorageManager.download_folder("memory://bucket/ds/"))
    assert out.is_relative_to(get_settings().cache_dir / "storage")
    assert out.name == "ds"
    assert files_under(out) == {"x.txt": "v1"}

    memfs.pipe("/bucket/ds/x.txt", b"v2")
    assert StorageManager.download_folder("memory://bucket/ds/") == str(out)
    assert (out / "x.txt").read_text() == "v1"                    # existing files are kept
    StorageManager.download_folder("memory://bucket/ds/", overwrite=True)
    assert (out / "x.txt").read_text() == "v2"


def test_download_local_folder(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    out = StorageManager.download_folder(str(src), tmp_path / "copy")
    assert files_under(Path(out)) == files_under(src)
    with pytest.raises(StorageError, match="is inside the folder being copied"):
        StorageManager.download_folder(src, src / "sub" / "copy")


def test_download_folder_errors(tmp_path: Path, memfs: MemoryFileSystem, http: Server) -> None:
    with pytest.raises(StorageError, match=r"cannot fetch 'memory://bucket/none': no such folder"):
        StorageManager.download_folder("memory://bucket/none", tmp_path / "o")
    memfs.pipe("/bucket/f.txt", b"x")
    with pytest.raises(StorageError, match="is a file, not a folder"):
        StorageManager.download_folder("memory://bucket/f.txt", tmp_path / "o")
    with pytest.raises(StorageError, match=r"'.*missing': no such folder"):
        StorageManager.download_folder(tmp_path / "missing", tmp_path / "o")
    with pytest.raises(StorageError, match=r"cannot list 'http.*over http\(s\)"):
        StorageManager.list(http.url + "/dir/")
    assert not (tmp_path / "o").exists()


def test_remote_path_escaping_the_local_folder_is_refused(tmp_path: Path,
                                                          memfs: MemoryFileSystem) -> None:
    memfs.pipe("/bucket/data/good.txt", b"good")
    # Object stores allow keys like this; written naively it would land in tmp_path.
    memfs.pipe("/bucket/staging", b"evil")
    memfs.store["/bucket/data/../evil.txt"] = memfs.store.pop("/bucket/staging")
    out = tmp_path / "inner" / "out"
    with pytest.raises(StorageError, match=r"'/bucket/data/\.\./evil\.txt' would be written "
                                           "outside the local folder; nothing was downloaded"):
        StorageManager.download_folder("memory://bucket/data", out)
    assert not (tmp_path / "inner" / "evil.txt").exists()
    assert not out.exists()


def test_upload_folder_errors(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    with pytest.raises(StorageError, match=r"local folder '.*nope' does not exist"):
        StorageManager.upload_folder(tmp_path / "nope", "memory://b/x")
    with pytest.raises(StorageError, match="inside the folder"):
        StorageManager.upload_folder(src, src / "sub" / "backup")
    out = tmp_path / "backup"
    assert StorageManager.upload_folder(src, out.as_uri()) == out.as_uri()
    assert files_under(out) == files_under(src)


def test_exists_file_over_http(http: Server, refused_url: str) -> None:
    http.files["/here.txt"] = b"x"
    assert StorageManager.exists_file(http.url + "/here.txt")
    assert not StorageManager.exists_file(http.url + "/gone.txt")
    assert http.hits == {"/here.txt": 1, "/gone.txt": 1}
    with pytest.raises(StorageError, match=r"cannot check .*unreachable"):
        StorageManager.exists_file(refused_url)


def test_exists_file_locally(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_text("x")
    assert StorageManager.exists_file(f.as_uri())
    assert not StorageManager.exists_file(tmp_path)
    assert not StorageManager.exists_file(tmp_path / "missing")


# -- archives -----------------------------------------------------------------------------------


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def write_tar(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None
              ) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return path


def test_zip_is_extracted_into_a_cached_folder(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "data.zip", {"a.txt": b"a", "sub/b.txt": b"b"})
    folder = Path(StorageManager.get_local_copy(archive))
    assert folder.is_dir()
    assert files_under(folder) == {"a.txt": "a", "sub/b.txt": "b"}
    assert folder.is_relative_to(get_settings().cache_dir / "storage")
    assert StorageManager.get_local_copy(archive.as_uri()) == str(folder)
    assert StorageManager.get_local_copy(archive, extract_archive=False) == str(archive)
    # nothing half-extracted left beside it
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]

    write_zip(archive, {"a.txt": b"changed"})
    fresh = Path(StorageManager.get_local_copy(archive))
    assert fresh != folder and files_under(fresh) == {"a.txt": "changed"}


def test_downloaded_tar_gz_is_extracted(http: Server, tmp_path: Path) -> None:
    http.files["/ds.tar.gz"] = write_tar(tmp_path / "ds.tar.gz", {"rows.csv": b"1\n"}).read_bytes()
    folder = Path(StorageManager.get_local_copy(http.url + "/ds.tar.gz"))
    assert files_under(folder) == {"rows.csv": "1\n"}
    assert StorageManager.get_local_copy(http.url + "/ds.tar.gz") == str(folder)
    assert http.hits["/ds.tar.gz"] == 1


def test_zip_member_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "evil.zip", {"ok.txt": b"ok", "../evil.txt": b"evil"})
    with pytest.raises(StorageError, match=r"archive member '\.\./evil\.txt' would be written "
                                           "outside the extraction folder"):
        StorageManager.get_local_copy(archive)
    extracted = get_settings().cache_dir / "storage" / "extracted"
    assert list(extracted.iterdir()) == []
    assert not (extracted.parent / "evil.txt").exists()


@pytest.mark.parametrize("data_filter", [True, False], ids=["data-filter", "fallback"])
@pytest.mark.parametrize("members, symlinks", [
    ({"../evil.txt": b"evil"}, None),
    ({"/tmp/abs-evil.txt": b"evil"}, None),
    ({}, {"link": "/etc/passwd"}),
], ids=["dotdot", "absolute", "symlink-out"])
def test_tar_member_escaping_the_folder_is_refused(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   data_filter, members, symlinks) -> None:
    if data_filter and not storage._TAR_HAS_DATA_FILTER:
        pytest.skip("this Python has no tarfile data filter")
    monkeypatch.setattr(storage, "_TAR_HAS_DATA_FILTER", data_filter)
    archive = write_tar(tmp_path / "evil.tgz", {"ok.txt": b"ok", **members}, symlinks)
    with pytest.raises(StorageError, match="the archive was not extracted"):
        StorageManager.get_local_copy(archive)
    assert list((get_settings().cache_dir / "storage" / "extracted").iterdir()) == []


def test_corrupt_archive_is_one_error(tmp_path: Path) -> None:
    fake = tmp_path / "notes.zip"
    fake.write_text("not a zip")
    with pytest.raises(StorageError, match=r"cannot extract 'notes\.zip' .*"
                                           "extract_archive=False"):
        StorageManager.get_local_copy(fake)
    assert StorageManager.get_local_copy(fake, extract_archive=False) == str(fake)


# -- the docs -----------------------------------------------------------------------------------


def test_docs_example_runs(run_py, tmp_path: Path) -> None:
    """The first example of docs/storage.md runs as written and prints what it says."""
    text = (Path(__file__).parent.parent / "docs" / "storage.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    proc = run_py(code, env={"PIPEKIT_HOME": str(tmp_path / "docs-home")}, timeout=120)
    assert "rows: 3" in proc.stdout, proc.stdout + proc.stderr
    assert "successful: True" in proc.stdout, proc.stdout + proc.stderr
