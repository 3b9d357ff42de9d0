"""Artifacts: every built-in serializer round-trips; objects are content-addressed, written
atomically (RELIABILITY 17) and verified before loading (RELIABILITY 17, 22); names that would
become paths are checked (RELIABILITY 19)."""

from __future__ import annotations

import hashlib
import io
import math
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import (
    HOSTILE_EXAMPLES,
    folder_trees,
    hostile_names,
    materialize_tree,
    read_tree,
    serializer_values,
    valid_names,
)

from pipekit.errors import ArtifactCorrupt, ArtifactNotFound, InvalidName
from pipekit.hashing import digest_bytes, digest_file
from pipekit.models import ObjectRef, check_name
from pipekit.store import Store
from pipekit.store import tables as t
from pipekit.task import Task
from pipekit.testing import wait_until


def objects(home: Path) -> list[Path]:
    """Every stored object file: ``artifacts/<2 hex>/<digest>``."""
    return sorted(p for p in (home / "artifacts").glob("??/*"))


@pytest.fixture
def task(store: Store) -> Task:
    return Task(store.create_task(project="art", name="owner").id)


class Point:
    """A custom class: stored with pickle."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (other.x, other.y) == (self.x, self.y)


# -- round trips --------------------------------------------------------------------------------


def test_json_round_trip_with_unicode(task):
    value = {"ünïcödé": "日本語 ✓", "list": [1, 2.5, None, True, "é"], "nested": {"a": []}}
    task.upload_artifact("j", value)
    art = task.artifacts["j"]
    assert art.type == "json"
    assert art.get() == value
    assert art.value_type == "dict"


@pytest.mark.parametrize("value", [
    (1, 2, "three"),
    {1: "int key", 2: "b"},
    [1, (2, 3)],
    {"nan": math.nan},
    {3, 4},
    1 + 2j,
], ids=["tuple", "int-keys", "nested-tuple", "nan", "set", "complex"])
def test_values_json_would_change_fall_back_to_pickle(task, value):
    task.upload_artifact("p", value)
    art = task.artifacts["p"]
    assert art.type == "pickle"
    got = art.get()
    if isinstance(value, dict) and "nan" in value:
        assert math.isnan(got["nan"])
    else:
        assert got == value and type(got) is type(value)


def test_bytes_round_trip(task):
    task.upload_artifact("b", b"\x00\xffbinary")
    task.upload_artifact("ba", bytearray(b"mutable"))
    assert task.artifacts["b"].type == "bytes"
    assert task.artifacts["b"].get() == b"\x00\xffbinary"
    assert task.artifacts["ba"].get() == b"mutable"


def test_numpy_small_inline_and_large_as_blob(task, store, pipekit_home):
    small = np.arange(10, dtype=np.int16)
    task.upload_artifact("small", small)
    assert objects(pipekit_home) == []
    assert store.get_artifact(task.id, "small").ref.inline is not None
    large = np.random.default_rng(0).standard_normal(10_000)  # 80 KB > 32 KiB
    task.upload_artifact("large", large)
    ref = store.get_artifact(task.id, "large").ref
    assert ref.inline is None and ref.size > 32 * 1024
    assert objects(pipekit_home) == [pipekit_home / "artifacts" / ref.digest[:2] / ref.digest]
    for name, value in (("small", small), ("large", large)):
        got = task.artifacts[name].get()
        assert task.artifacts[name].type == "numpy"
        assert got.dtype == value.dtype
        np.testing.assert_array_equal(got, value)


def test_pandas_dataframe_round_trip_as_parquet(task):
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, None, 2.5], "c": ["x", "ü", None]})
    task.upload_artifact("df", frame)
    art = task.artifacts["df"]
    assert art.type == "pandas.parquet"
    pd.testing.assert_frame_equal(art.get(), frame)
    assert "3 rows x 3 columns" in art.preview


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "Path"])
def test_file_round_trip_keeps_bytes_and_file_name(task, tmp_path, pipekit_home, as_path):
    src = tmp_path / "measurements.csv"
    payload = os.urandom(50_000)
    src.write_bytes(payload)
    task.upload_artifact("f", src if as_path else str(src))
    art = task.artifacts["f"]
    assert art.type == "file"
    got = Path(art.get())
    copy = Path(art.get_local_copy())
    for path in (got, copy):
        assert path.name == "measurements.csv"
        assert path.read_bytes() == payload
        assert path.resolve().is_relative_to(pipekit_home.resolve())
    assert src.read_bytes() == payload  # the original is left alone


def test_folder_round_trip_extracts_the_same_tree(task, tmp_path, pipekit_home):
    tree = {"a.txt": b"alpha", "sub/b.bin": os.urandom(40_000), "sub/deeper/c": b"",
            "ü/name with space.txt": b"unicode"}
    src = materialize_tree(tmp_path / "dataset", tree)
    (src / "empty-dir").mkdir()
    task.upload_artifact("folder", src)
    art = task.artifacts["folder"]
    assert art.type == "folder"
    out = Path(art.get())
    assert out.is_dir() and out.name == "dataset"
    assert out.resolve().is_relative_to(pipekit_home.resolve())
    assert read_tree(out) == tree
    assert (out / "empty-dir").is_dir()
    assert Path(art.get_local_copy()) == out


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=folder_trees())
def test_folder_property_same_tree_same_digest(task, tmp_path_factory, tree):
    a = materialize_tree(tmp_path_factory.mktemp("a") / "data", tree)
    b = materialize_tree(tmp_path_factory.mktemp("b") / "data", tree)
    task.upload_artifact("one", a)
    task.upload_artifact("two", b)
    assert task.artifacts["one"].digest == task.artifacts["two"].digest  # deterministic zip
    assert read_tree(Path(task.artifacts["two"].get())) == tree


def test_pickle_of_custom_class_and_lambda(task):
    task.upload_artifact("point", Point(1, 2))
    task.upload_artifact("fn", lambda x: x * 3)
    assert task.artifacts["point"].type == "pickle"
    assert task.artifacts["point"].get() == Point(1, 2)
    assert task.artifacts["fn"].get()(4) == 12


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(pair=serializer_values())
def test_property_each_serializer_round_trips(task, pair):
    kind, value = pair
    task.upload_artifact("v", value)
    art = task.artifacts["v"]
    assert art.type == kind
    got = art.get()
    if kind == "numpy":
        assert got.dtype == value.dtype and got.shape == value.shape
        np.testing.assert_array_equal(got, value)
    elif kind == "pandas.parquet":
        pd.testing.assert_frame_equal(got, value, check_index_type=False)
    elif isinstance(value, float) and math.isnan(value):  # pragma: no cover
        assert math.isnan(got)
    else:
        assert got == value
        assert type(got) is (bytes if kind == "bytes" else type(value))


# -- content addressing -------------------------------------------------------------------------


def test_identical_content_is_stored_once(store, pipekit_home):
    payload = os.urandom(100_000)
    a = Task(store.create_task(project="p", name="a").id)
    b = Task(store.create_task(project="p", name="b").id)
    a.upload_artifact("data", payload)
    b.upload_artifact("same", payload)
    a.upload_artifact("again", bytearray(payload))
    assert a.artifacts["data"].digest == b.artifacts["same"].digest == a.artifacts["again"].digest
    files = objects(pipekit_home)
    assert len(files) == 1
    assert files[0].name == a.artifacts["data"].digest
    assert files[0].read_bytes() == payload
    assert b.artifacts["same"].get() == payload


def test_small_values_live_inline(task, store, pipekit_home):
    task.upload_artifact("small", {"x": 1})
    task.upload_artifact("small_bytes", b"x" * 1000)
    for name in ("small", "small_bytes"):
        ref = store.get_artifact(task.id, name).ref
        assert ref.inline is not None and len(ref.inline) == ref.size
    assert not (pipekit_home / "artifacts").exists() or not any(
        p.is_file() for p in (pipekit_home / "artifacts").rglob("*"))


@pytest.mark.parametrize("value", [{"inline": True}, b"b" * 70_000], ids=["inline", "blob"])
def test_url_is_a_file_url_whose_bytes_hash_to_the_digest(task, pipekit_home, value):
    task.upload_artifact("u", value)
    art = task.artifacts["u"]
    url = art.url
    parsed = urllib.parse.urlparse(url)
    assert parsed.scheme == "file"
    path = Path(urllib.parse.unquote(parsed.path))
    assert path.resolve().is_relative_to(pipekit_home.resolve())
    assert digest_file(path) == art.digest
    assert digest_bytes(path.read_bytes()) == art.digest
    assert path.stat().st_size == art.size


def test_object_files_are_private(task, pipekit_home):
    task.upload_artifact("big", os.urandom(40_000))
    (obj,) = objects(pipekit_home)
    assert stat.S_IMODE(obj.stat().st_mode) == 0o600
    assert stat.S_IMODE(obj.parent.stat().st_mode) == 0o700


# -- RELIABILITY 17: SIGKILL during a large artifact write -------------------------------------

KILLED_UPLOAD = """
import os, sys, threading
from pathlib import Path

import pipekit
from pipekit import artifacts, plugin_manager
from pipekit.artifacts import Serializer
from pipekit.task import Task

task_id, ready = sys.argv[1], Path(sys.argv[2])


class Huge:
    pass


class StallingSerializer(Serializer):
    # Writes 8 MiB, says so, then never finishes: the parent SIGKILLs it mid-write.
    name = "test.stalling"
    priority = 1000

    def accepts(self, value):
        return isinstance(value, Huge)

    def dump(self, value, fp):
        chunk = os.urandom(1 << 20)
        for _ in range(8):
            fp.write(chunk)
        tmp = ready.with_name(ready.name + ".tmp")
        tmp.write_text(str(fp.tell()))
        os.replace(tmp, ready)  # appears whole, never empty
        threading.Event().wait()

    def load(self, fp):
        raise AssertionError("never stored, never loaded")


class StallingPlugin:
    @pipekit.hookimpl
    def pipekit_serializers(self, register):
        register(StallingSerializer())


plugin_manager.get_plugin_manager().register(StallingPlugin(), name="test-stalling")
artifacts.reset_registry()
Task(task_id).upload_artifact("huge", Huge())
"""


@pytest.mark.timeout(120)
def test_sigkill_during_large_artifact_write_leaves_no_partial_object(task, store, tmp_path,
                                                                      pipekit_home):
    task.upload_artifact("before", os.urandom(40_000))  # an existing object must survive
    existing = objects(pipekit_home)
    assert len(existing) == 1
    ready = tmp_path / "ready"
    script = tmp_path / "killed_upload.py"
    script.write_text(textwrap.dedent(KILLED_UPLOAD))
    proc = subprocess.Popen([sys.executable, str(script), task.id, str(ready)],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, 60,
                   "the child to be mid-write")
        assert proc.poll() is None, proc.stderr.read()
        assert int(ready.read_text()) == 8 << 20
        # The bytes so far are on disk somewhere, only never under an object address.
        assert objects(pipekit_home) == existing
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    assert objects(pipekit_home) == existing
    for obj in objects(pipekit_home):
        assert digest_file(obj) == obj.name  # every addressed object is whole
    assert [a.name for a in store.list_artifacts(task.id)] == ["before"]
    with pytest.raises(ArtifactNotFound):
        store.get_artifact(task.id, "huge")
    assert t.Artifact.select().where(t.Artifact.name == "huge").count() == 0
    # Anything left over is an unaddressed temp file, outside every object folder.
    leftovers = [p for p in (pipekit_home / "artifacts").rglob("*") if p.is_file()
                 and p not in existing]
    assert all(p.parent == pipekit_home / "artifacts" / "tmp" for p in leftovers), leftovers
    # The store keeps working: the same name uploads and reads back.
    payload = os.urandom(50_000)
    task.upload_artifact("huge", payload)
    assert task.artifacts["huge"].get() == payload
    assert store.integrity_check() == "ok"


# -- RELIABILITY 17/22: corruption is detected before anything is loaded ------------------------


class Gadget:
    """Unpickling this creates ``path``: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def flip_bit(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_pickle_gadget_control_loads_when_intact(task, tmp_path):
    """Control for the tamper tests below: untampered, the gadget does run on load."""
    marker = tmp_path / "control-marker"
    task.upload_artifact("gadget", [Gadget(marker), b"p" * 40_000])
    task.upload_artifact("small_gadget", Gadget(tmp_path / "control-small"))
    task.artifacts["gadget"].get()
    task.artifacts["small_gadget"].get()
    assert marker.exists() and (tmp_path / "control-small").exists()


def test_flipped_bit_in_blob_raises_artifact_corrupt_and_never_unpickles(task, store,
                                                                         tmp_path,
                                                                         pipekit_home):
    marker = tmp_path / "marker"
    task.upload_artifact("evil", [Gadget(marker), b"p" * 40_000])
    ref = store.get_artifact(task.id, "evil").ref
    assert ref.inline is None and ref.serializer == "pickle"
    (obj,) = objects(pipekit_home)
    flip_bit(obj, obj.stat().st_size // 2)
    art = task.artifacts["evil"]
    for read in (art.get, art.get_local_copy, lambda: art.url):
        with pytest.raises(ArtifactCorrupt) as err:
            read()
        assert err.value.artifact == "evil"
        assert "'evil'" in str(err.value)
        assert not marker.exists()
    assert not marker.exists()


def test_missing_blob_raises_artifact_corrupt(task, pipekit_home):
    task.upload_artifact("gone", os.urandom(40_000))
    (obj,) = objects(pipekit_home)
    obj.unlink()
    with pytest.raises(ArtifactCorrupt, match="'gone'.*missing"):
        task.artifacts["gone"].get()


def test_tampered_inline_pickle_is_never_loaded(task, store, tmp_path):
    """The attacker rewrites the pickle in the database to point the gadget elsewhere (a
    valid pickle of the same length): the digest check refuses it before unpickling."""
    marker = tmp_path / "marker-a"
    redirected = tmp_path / "marker-b"
    task.upload_artifact("evil", Gadget(marker))
    ref = store.get_artifact(task.id, "evil").ref
    assert ref.inline is not None and ref.serializer == "pickle"
    tampered = ref.inline.replace(str(marker).encode(), str(redirected).encode())
    assert tampered != ref.inline and len(tampered) == len(ref.inline)
    db = sqlite3.connect(store.settings.sqlite_path)
    try:
        db.execute("UPDATE artifact SET inline = ? WHERE task_id = ? AND name = 'evil'",
                   (tampered, task.id))
        db.commit()
    finally:
        db.close()
    art = task.artifacts["evil"]
    for read in (art.get, art.get_local_copy, lambda: art.url):
        with pytest.raises(ArtifactCorrupt) as err:
            read()
        assert err.value.artifact == "evil" and "'evil'" in str(err.value)
    assert not marker.exists() and not redirected.exists()


def test_tampered_file_artifact_is_refused(task, tmp_path, pipekit_home):
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(60_000))
    task.upload_artifact("weights", src)
    (obj,) = objects(pipekit_home)
    flip_bit(obj, 0)
    with pytest.raises(ArtifactCorrupt, match="'weights'"):
        task.artifacts["weights"].get_local_copy()
    assert not (pipekit_home / "cache" / "objects").exists() or not any(
        p.is_file() for p in (pipekit_home / "cache" / "objects").rglob("*"))


# -- RELIABILITY 19: names ----------------------------------------------------------------------


def _files_outside(root: Path, home: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and not p.is_relative_to(home)}


@pytest.fixture
def watched(tmp_path, pipekit_home, monkeypatch):
    """Run in an empty working directory; yields a check that nothing changed outside
    PIPEKIT_HOME (in the test's temp dir, including the cwd, and /etc/passwd)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    passwd = Path("/etc/passwd")
    before = (_files_outside(tmp_path, pipekit_home),
              passwd.read_bytes() if passwd.exists() else None)

    def check() -> None:
        after = (_files_outside(tmp_path, pipekit_home),
                 passwd.read_bytes() if passwd.exists() else None)
        assert after == before

    return check


def test_hand_picked_hostile_names_are_rejected(task, watched):
    for name in HOSTILE_EXAMPLES:
        for kind in ("artifact", "model", "step"):
            with pytest.raises(InvalidName) as err:
                check_name(kind, name)
            assert repr(name) in str(err.value) and kind in str(err.value)
        with pytest.raises(InvalidName) as err:
            task.upload_artifact(name, b"x" * 40_000)
        assert repr(name) in str(err.value)
        assert err.value.name == name
        with pytest.raises(InvalidName):
            task.upload_model(name, b"weights")
    for not_a_string in (None, 1, b"bytes", Path("x")):
        with pytest.raises(InvalidName):
            check_name("artifact", not_a_string)
    assert list(task.artifacts) == []
    assert task.models["output"] == []
    watched()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=hostile_names())
def test_property_hostile_names_are_rejected(task, watched, name):
    with pytest.raises(InvalidName) as err:
        check_name("artifact", name)
    assert repr(name) in str(err.value)
    with pytest.raises(InvalidName) as err:
        task.upload_artifact(name, {"v": 1})
    assert repr(name) in str(err.value)
    assert list(task.artifacts) == []
    watched()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=valid_names(), big=st.booleans())
def test_property_valid_names_are_accepted_and_stay_inside_home(task, watched, pipekit_home,
                                                                name, big):
    assert check_name("artifact", name) == name
    value = os.urandom(40_000) if big else {"name": name}
    task.upload_artifact(name, value)
    art = task.artifacts[name]
    assert art.get() == value
    copy = Path(art.get_local_copy())
    assert copy.resolve().is_relative_to(pipekit_home.resolve())
    assert copy.name.startswith(name)
    watched()


def test_hostile_file_name_does_not_become_the_local_copy_name(task, tmp_path, pipekit_home):
    src = tmp_path / "a;b $(id).txt"
    src.write_bytes(b"content")
    task.upload_artifact("upload", src)
    copy = Path(task.artifacts["upload"].get())
    assert copy.read_bytes() == b"content"
    assert copy.name == "upload.bin"
    assert copy.resolve().is_relative_to(pipekit_home.resolve())


def test_folder_object_whose_zip_escapes_is_not_extracted(task, store, tmp_path):
    """A folder object written by a hostile writer (valid digest, ``../`` members) never
    extracts outside the local copy's folder."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr("../../../../escaped.txt", b"gotcha")
    sink = store.blobs.sink(inline_limit=-1)
    sink.write(buf.getvalue())
    written = sink.commit()
    ref = ObjectRef(digest=written.digest, size=written.size, serializer="folder",
                    type="pathlib.PosixPath", filename="data", inline=None)
    store.put_artifact(task.id, "zipslip", ref)
    with pytest.raises(Exception, match="escapes"):
        task.artifacts["zipslip"].get()
    assert not list(tmp_path.rglob("escaped.txt"))


#: member-name prefixes that climb out of the local copy's folder: at most 5 levels, which
#: reaches the test's own temp folder and no further (so that even a broken extractor, run
#: as root, could only ever write where this test looks)
_CLIMBS = ["", "../", "../../", "../../../", "../../../../", "../../../../../", "a/../../"]


def _relative(name: str) -> bool:
    """A name that does not itself reach further than the climb in front of it."""
    return not name.startswith(("/", "\\", "~")) and ".." not in name and "\0" not in name


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=st.lists(st.tuples(st.sampled_from(_CLIMBS),
                                  (hostile_names() | valid_names(max_size=12))
                                  .filter(_relative)), min_size=1, max_size=4))
def test_property_exports_never_write_outside_their_target(task, store, tmp_path, watched,
                                                           members):
    """RELIABILITY 19: whatever member names a folder object holds (written by a hostile
    writer: a valid digest, members from the hostile-name strategy behind ``../`` climbs),
    reading it back writes only inside its own local-copy folder, or refuses."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for member in dict.fromkeys(f"{climb}{name}"[:200] or "x" for climb, name in members):
            zf.writestr(member, b"data")
    sink = store.blobs.sink(inline_limit=-1)
    sink.write(buf.getvalue())
    written = sink.commit()
    ref = ObjectRef(digest=written.digest, size=written.size, serializer="folder",
                    type="pathlib.PosixPath", filename="data", inline=None)
    store.put_artifact(task.id, "exported", ref)
    target = store.settings.cache_dir / "objects" / written.digest
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    try:
        folder = Path(task.artifacts["exported"].get())
    except Exception:
        pass  # refused: fine, as long as nothing was written
    else:
        assert folder.resolve().is_relative_to(target.resolve())
    new = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    assert [p for p in new if not p.resolve().is_relative_to(target.resolve())] == []
    watched()


def test_an_edited_local_copy_is_made_afresh(task, tmp_path):
    src = tmp_path / "data.csv"
    src.write_bytes(b"a,b\n1,2\n")
    task.upload_artifact("data", src)
    first = Path(task.artifacts["data"].get_local_copy())
    first.write_bytes(b"tampered by the user\n")
    again = Path(task.artifacts["data"].get())
    assert again.read_bytes() == b"a,b\n1,2\n"


def test_temp_files_left_by_killed_writers_are_swept(pipekit_home):
    store = Store()
    tmp = store.blobs.tmp_dir()
    stale, fresh = tmp / "obj-stale", tmp / "obj-fresh"
    stale.write_bytes(b"x" * 10)
    fresh.write_bytes(b"y" * 10)
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    assert store.blobs.sweep_tmp() == 1
    assert not stale.exists() and fresh.exists()  # a live writer's file is left alone
