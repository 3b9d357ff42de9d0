"""Turn values into stored objects and back, through the serializers plugins register.

Writing: the first serializer (by descending ``priority``) that accepts a value dumps it into
a :class:`~pipekit.store.blobs.BlobSink`, which hashes as it writes; small results are kept
inline in the database, large ones become content-addressed files. Reading: the digest is
verified *before* the serializer sees a byte, so a tampered pickle is never unpickled.

Pickle runs code when loaded: only load artifacts from stores whose writers you trust.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, ClassVar

from . import context, crash
from .errors import ArtifactCorrupt, PipekitError, SerializationError, StoreError
from .hashing import digest_file
from .models import NAME_RE, ArtifactInfo, ModelInfo, ObjectRef, check_name
from .plugin_manager import Registration, Registry, has_impls, lazy, notify
from .store import Store, get_store
from .store.blobs import verify_inline
from .store.outputs import artifact_info


class Serializer:
    """Base class of artifact serializers; subclass it and register it from a plugin.

    Override :meth:`accepts`, :meth:`dump` and :meth:`load`; the rest has sensible defaults.
    """

    #: Unique name, recorded with every object it writes.
    name: ClassVar[str] = ""
    #: Higher is tried first. Built-ins use 0, the pickle fallback -1000.
    priority: ClassVar[int] = 0
    #: Suffix of a local copy's file name.
    extension: ClassVar[str] = ".bin"
    #: The value was a local file or folder: ``get()`` returns the path of a local copy.
    returns_path: ClassVar[bool] = False

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def dump(self, value: Any, fp: IO[bytes]) -> None:
        raise NotImplementedError

    def load(self, fp: IO[bytes]) -> Any:
        raise NotImplementedError

    def preview(self, value: Any) -> str:
        """A short human-readable description shown by the CLI and UI."""
        text = repr(value)
        return text if len(text) <= 200 else text[:199] + "…"

    def filename(self, value: Any, name: str) -> str:
        """What a local copy of this object is called."""
        return f"{name}{self.extension}"

    def unpack(self, obj: Path, dest: Path) -> Path:
        """Materialise a verified object file at ``dest`` (a folder serializer extracts)."""
        shutil.copyfile(obj, dest)
        return dest


def _ordered(found: list[Registration]) -> list[Serializer]:
    ordered = sorted(enumerate(r.value for r in found), key=lambda item: (-item[1].priority,
                                                                          item[0]))
    return [s for _, s in ordered]


def _accept(serializer: Serializer) -> tuple[str, Serializer]:
    if not isinstance(serializer, Serializer) or not serializer.name:
        raise TypeError(f"{serializer!r}, which is not a named pipekit.artifacts.Serializer")
    return serializer.name, serializer


_registry = Registry("pipekit_serializers", "serializer", _accept, _ordered)


def serializers() -> list[Serializer]:
    """Registered serializers, in the order they are tried."""
    return _registry.get()  # type: ignore[no-any-return]


def reset_registry() -> None:
    """Ask the plugins again next time (registering a plugin does this by itself)."""
    _registry.reset()


def serializer_named(name: str) -> Serializer:
    for serializer in serializers():
        if serializer.name == name:
            return serializer
    raise SerializationError(f"no serializer named {name!r} is registered; install the "
                             "plugin that wrote this object")


def choose(value: Any) -> Serializer:
    for serializer in serializers():
        if serializer.accepts(value):
            return serializer
    raise SerializationError(f"no serializer accepts a value of type {type(value).__name__}")


def type_name(value: Any) -> str:
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def store_value(store: Store, value: Any, name: str) -> tuple[ObjectRef, str]:
    """Serialize ``value`` into the store; returns its reference and a preview.

    :param name: the artifact's (already validated) name, used for error messages and the
        default local file name.
    """
    serializer = choose(value)
    sink = store.blobs.sink()
    try:
        serializer.dump(value, sink)
    except BaseException as exc:
        sink.abort()
        if isinstance(exc, (SerializationError, KeyboardInterrupt, SystemExit)):
            raise
        raise SerializationError(f"serializer {serializer.name!r} could not store artifact "
                                 f"{name!r}: {exc}", artifact=name) from exc
    try:
        written = sink.commit()
    except BaseException as exc:
        sink.abort()
        if isinstance(exc, (PipekitError, KeyboardInterrupt, SystemExit)):
            raise
        # the disk, or the object store behind PIPEKIT_ARTIFACTS, refused the bytes
        raise StoreError(f"could not store artifact {name!r} in {store.blobs.where}: "
                         f"{exc}") from exc
    filename = serializer.filename(value, name)
    if not NAME_RE.fullmatch(filename):
        filename = f"{name}{serializer.extension}"
    ref = ObjectRef(digest=written.digest, size=written.size, serializer=serializer.name,
                    type=type_name(value), filename=filename, inline=written.inline)
    return ref, serializer.preview(value)


@contextmanager
def open_verified(store: Store, ref: ObjectRef, name: str) -> Iterator[IO[bytes]]:
    """A binary stream over an object whose digest has just been verified."""
    if ref.inline is not None:
        yield io.BytesIO(verify_inline(ref.inline, ref.digest, name))
        return
    with open(store.blobs.verified_path(ref.digest, name), "rb") as fh:
        yield fh


def load_value(store: Store, ref: ObjectRef, name: str) -> Any:
    """The stored value, after verifying its digest (files and folders: a local path)."""
    serializer = serializer_named(ref.serializer)
    if serializer.returns_path:
        return local_copy(store, ref, name)
    with open_verified(store, ref, name) as fh:
        try:
            return serializer.load(fh)
        except Exception as exc:
            raise SerializationError(f"serializer {serializer.name!r} could not load artifact "
                                     f"{name!r}: {exc}", artifact=name) from exc


def unverified(store: Store, task_id: str) -> str | None:
    """Why task ``task_id``'s outputs cannot be used (an artifact's or model's object is
    missing or changed: which one, and its digest), or ``None`` when every one verifies.

    A cache hit and a resumed run's completed step are kept only when this says ``None``.
    """
    for kind, name, digest, inline in store.output_objects(task_id):
        try:
            if inline is not None:
                verify_inline(inline, digest, name)
            else:
                store.blobs.verified_path(digest, name)
        except ArtifactCorrupt as exc:
            state = "is missing" if exc.actual is None else f"hashes to {exc.actual}"
            where = " (stored inline)" if inline is not None else ""
            return (f"{kind} {name!r} of task {task_id} does not verify: object "
                    f"{digest}{where} {state}")
    return None


def object_path(store: Store, ref: ObjectRef, name: str) -> Path:
    """A verified file holding the object's bytes (an inline object is written out first)."""
    if ref.inline is not None:
        verify_inline(ref.inline, ref.digest, name)
        return store.blobs.put_bytes(ref.inline)
    return store.blobs.verified_path(ref.digest, name)


def local_copy(store: Store, ref: ObjectRef, name: str) -> Path:
    """A local file (or folder) a user may read or change without harming the store.

    Copies live in ``PIPEKIT_HOME/cache/objects/<digest>/<filename>``. A file copy is
    re-verified on reuse and made afresh if it was changed; an extracted folder is reused
    as it is.
    """
    serializer = serializer_named(ref.serializer)
    folder = store.settings.cache_dir / "objects" / ref.digest
    dest = folder / ref.filename
    if dest.is_file() and digest_file(dest) == ref.digest:
        return dest  # a file copy is reused only while it still holds the object's bytes
    if dest.is_dir():
        return dest
    dest.unlink(missing_ok=True)  # an edited copy: make it afresh
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    src = object_path(store, ref, name)
    tmp = folder / f".{ref.filename}.partial-{threading.get_ident()}"
    try:
        serializer.unpack(src, tmp)
        tmp.rename(dest)
    except FileExistsError:
        pass  # another thread or process made the same copy first
    except OSError:
        if not dest.exists():
            raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return dest


class StoredObject:
    """What an artifact and a model have in common: a named object in the store, read back
    only after its digest is verified.
    """

    def __init__(self, store: Store, info: ArtifactInfo | ModelInfo) -> None:
        self._store = store
        self._info = info

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def digest(self) -> str:
        return self._info.ref.digest

    @property
    def size(self) -> int:
        return self._info.ref.size

    @property
    def url(self) -> str:
        """``file://`` URL of the verified object's bytes (what ``StorageManager`` fetches)."""
        return object_path(self._store, self._info.ref, self.name).as_uri()

    def get(self) -> Any:
        """The value (files and folders: the path of a local copy), digest verified first."""
        return load_value(self._store, self._info.ref, self.name)

    def get_local_copy(self, extract_archive: bool = True) -> str:
        """Path of a local copy of the object (a folder is extracted)."""
        return str(local_copy(self._store, self._info.ref, self.name))


class Artifact(StoredObject):
    """A stored artifact as ``task.artifacts[name]`` shows it (ClearML's attributes)."""

    _info: ArtifactInfo

    hash = StoredObject.digest

    @property
    def type(self) -> str:
        """The serializer that wrote it (``json``, ``numpy``, ``pickle``, ``file`` …)."""
        return self._info.ref.serializer

    @property
    def value_type(self) -> str:
        """The Python type of the uploaded value."""
        return self._info.ref.type

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._info.metadata)

    @property
    def preview(self) -> str:
        return self._info.preview

    def __repr__(self) -> str:
        return f"<Artifact {self.name!r} {self.type} {self.size} bytes {self.digest[:12]}>"


class Model(StoredObject):
    """An uploaded model: ``task.models["output"][i]``."""

    _info: ModelInfo

    @property
    def id(self) -> str:
        return self._info.id

    @property
    def task(self) -> str:
        return self._info.task

    @property
    def framework(self) -> str | None:
        return self._info.framework

    def __repr__(self) -> str:
        return f"<Model {self.name!r} id={self.id}>"


def store_artifact(task_id: str, name: str, value: Any,
                   metadata: Mapping[str, Any] | None = None, preview: Any = None) -> None:
    """Store ``value`` as artifact ``name`` of task ``task_id``, as it is: a ``pathlib.Path``
    is the file or folder it names, a string stays a string (what a step's return values
    get; :meth:`pipekit.Task.upload_artifact` adds ClearML's reading of a string as a path).

    :raises SerializationError: a ``Path`` that names nothing, or a value no serializer takes.
    """
    store = get_store()
    pending = prepare_artifact(store, task_id, name, value, metadata, preview)
    info = store.put_artifact(task_id, name, pending.ref, pending.metadata, pending.preview,
                              lease=context.lease_for(task_id))
    artifact_uploaded(store, info)


def prepare_artifact(store: Store, task_id: str, name: str, value: Any,
                     metadata: Mapping[str, Any] | None = None, preview: Any = None
                     ) -> ArtifactInfo:
    """Store ``value``'s object (as :func:`store_artifact` does) and return the artifact to
    record, not yet recorded: a step's return values are recorded with its final status
    (:func:`pipekit.finish.finish_task`), in one transaction.

    :raises SerializationError: as :func:`store_artifact`.
    """
    check_name("artifact", name)
    if isinstance(value, os.PathLike) and not os.path.exists(value):
        raise SerializationError(f"artifact {name!r}: no such file or folder "
                                 f"{os.fspath(value)!r}", artifact=name)
    ref, auto_preview = store_value(store, value, name)
    if crash.armed():
        crash.point("artifact-written", store.get_task(task_id).name)
    shown = str(preview) if preview is not None else auto_preview
    return artifact_info(task_id, name, ref, metadata, shown)


def artifact_uploaded(store: Store, info: ArtifactInfo) -> None:
    """Tell plugins an artifact was recorded (after its transaction committed)."""
    if has_impls("pipekit_artifact_uploaded"):
        notify("pipekit_artifact_uploaded", task=lazy(lambda: store.get_task(info.task)),
               artifact=info)

