"""A Python function as a task: how it is stored, and how a stored one is called.

A function step's task keeps, as ClearML's do:

* its **code**: the function's source and its helper functions' sources (``task.code``, and
  their digest as ``code_digest``), so the UI shows it and cache keys see every change;
* the **callable** itself, cloudpickled into the object store (``script["callable"]`` is the
  digest; it is verified before it is unpickled);
* its **arguments**: plain values as parameters ``kwargs/<arg>`` (typed, editable, visible),
  anything else as a reference ``kwargs_artifacts/<arg> = <task id>.<artifact>`` to a stored
  artifact, usually a parent step's return value;
* the names of its **return values** (``script["return"]``): each becomes an artifact of the
  task, committed before the task counts as completed.

:func:`call` runs such a task in the current process. The worker calls it for every
executor: in the controller (inline, thread), in a pool process, or in a step subprocess.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from . import context, redact
from . import params as P
from .artifacts import artifact_uploaded, load_value, prepare_artifact
from .capture import ThreadCapture, open_log
from .errors import LeaseLost, PipekitError, SerializationError, StepFailed, TaskStateError
from .finish import finish_task
from .hashing import digest_bytes, digest_code, function_source
from .models import (
    FUNCTION_KIND,
    ArtifactInfo,
    Lease,
    ParamInfo,
    Status,
    TaskInfo,
    TaskType,
    check_name,
)
from .references import Kind, Ref, resolve
from .store import Store, get_store
from .task import Task, executing
from .tracebacks import relocate, user_traceback

__all__ = ["ArtifactInput", "FunctionCode", "call", "code_of", "pack_callable",
           "split_kwargs", "store_objects"]

KWARGS = "kwargs"
KWARGS_ARTIFACTS = "kwargs_artifacts"
KIND = FUNCTION_KIND

_PLAIN = (str, int, float, bool, type(None))


@attrs.frozen
class ArtifactInput:
    """An argument that is a stored artifact: ``task``'s artifact ``name``."""

    task: str
    name: str

    def __str__(self) -> str:
        return f"{self.task}.{self.name}"

    @classmethod
    def parse(cls, text: str) -> ArtifactInput:
        task, sep, name = text.partition(".")
        if not sep or not task or not name:
            raise PipekitError(f"bad artifact input {text!r}: expected '<task id>.<artifact>'")
        return cls(task, name)


@attrs.frozen
class FunctionCode:
    """What a function step's task records as its code."""

    source: str
    digest: str
    entry_point: str


def is_plain(value: Any) -> bool:
    """Whether ``value`` can be a ``kwargs/`` parameter: text that casts back to an equal value."""
    if isinstance(value, _PLAIN):
        return not isinstance(value, float) or value == value  # NaN never compares equal
    if isinstance(value, (list, tuple, dict)):
        try:
            text = P.to_text(value)
            return bool(P.cast(text, stored_type=type(value).__name__) == value)
        except (PipekitError, RecursionError):
            return False
    return False


def code_of(fn: Callable[..., Any], helpers: Iterable[Callable[..., Any]] = (),
            pickled: bytes | None = None) -> FunctionCode:
    """The source and digest a function step records (a helper's change changes the digest).

    A function without retrievable source (built in a REPL or by ``exec``) is identified by
    its pickle instead.
    """
    helpers = list(helpers)
    name = getattr(fn, "__qualname__", getattr(fn, "__name__", type(fn).__name__))
    try:
        parts = [function_source(fn), *(function_source(h) for h in helpers)]
        return FunctionCode("\n\n".join(parts), digest_code(fn, helpers), name)
    except (OSError, TypeError):
        data = pickled if pickled is not None else pack(fn, name)
        return FunctionCode(f"# source of {name} is not available\n", digest_bytes(data), name)


def pack(fn: Callable[..., Any], step: str) -> bytes:
    """``fn`` cloudpickled.

    :raises SerializationError: it cannot be pickled (naming the step and why).
    """
    # lazy: cloudpickle is needed only when a function is packed
    import cloudpickle

    try:
        return cloudpickle.dumps(fn)
    except Exception as exc:
        raise SerializationError(f"step {step!r}: function {getattr(fn, '__name__', fn)!r} "
                                 f"cannot be pickled: {type(exc).__name__}: {exc}") from exc


# In-process callables by digest: what the runner handed over or what was loaded (and
# verified) once. A digest names exact bytes, so one entry serves every step that uses it.
_callables: dict[str, Callable[..., Any]] = {}
_callables_lock = threading.Lock()


def pack_callable(store: Store, fn: Callable[..., Any], data: bytes) -> str:
    """Store ``fn``'s pickle ``data`` as an object; returns its digest.

    The controller process remembers ``fn`` under that digest, so steps it runs itself call
    the original object (breakpoints work) instead of an unpickled copy.
    """
    digest = digest_bytes(data)
    store.blobs.put_bytes(data)  # a no-op when the object exists
    with _callables_lock:
        _callables[digest] = fn
    return digest


def _defined_in(fn: Callable[..., Any]) -> str | None:
    code = getattr(fn, "__code__", None)
    filename = getattr(code, "co_filename", None)
    return None if not filename or filename.startswith("<") else filename


def _load_callable(store: Store, digest: str, name: str, file: str | None = None
                   ) -> Callable[..., Any]:
    fn = _callables.get(digest)
    if fn is None:
        path = store.blobs.verified_path(digest, f"{name} (function)")
        with open(path, "rb") as fh:
            fn = pickle.load(fh)  # noqa: S301 - digest verified just above
        relocate(fn, file)
        with _callables_lock:
            _callables[digest] = fn
    return fn


def split_kwargs(kwargs: Mapping[str, Any]) -> tuple[list[ParamInfo], dict[str, ArtifactInput],
                                                     dict[str, Any]]:
    """Sort resolved arguments into ``kwargs/`` parameters, artifact inputs and other objects
    (which the caller stores as artifacts and then passes as inputs).
    """
    plain: list[ParamInfo] = []
    inputs: dict[str, ArtifactInput] = {}
    objects: dict[str, Any] = {}
    for name, value in kwargs.items():
        if isinstance(value, ArtifactInput):
            inputs[name] = value
        elif is_plain(value):
            plain.append(ParamInfo(KWARGS, name, P.to_text(value), P.type_name(value)))
        else:
            objects[name] = value
    return plain, inputs, objects


def input_params(inputs: Mapping[str, ArtifactInput]) -> list[ParamInfo]:
    return [ParamInfo(KWARGS_ARTIFACTS, name, str(ref), "artifact")
            for name, ref in inputs.items()]


def script_of(code: FunctionCode, callable_digest: str, returns: Iterable[str],
              file: str | None = None) -> dict[str, Any]:
    """The ``script`` record of a function step's task.

    :param file: where the function was defined (its tracebacks name it again).
    """
    return {"kind": KIND, "entry_point": code.entry_point, "callable": callable_digest,
            "return": list(returns), "path": None, "file": file}


def store_objects(kwargs: Mapping[str, Any], *, name: str, owner: str) -> dict[str, Any]:
    """``kwargs`` with every argument that is neither a plain value nor an artifact input
    stored as artifact ``<name>.<arg>`` of task ``owner`` and replaced by that input.

    The step then loads it, verified, like any other input (and its digest is what the
    cache key sees).
    """
    out = dict(kwargs)
    for arg, value in kwargs.items():
        if not isinstance(value, ArtifactInput) and not is_plain(value):
            Task(owner).upload_artifact(f"{name}.{arg}", value)
            out[arg] = ArtifactInput(owner, f"{name}.{arg}")
    return out


def create_task(store: Store, fn: Callable[..., Any], data: bytes, code: FunctionCode,
                kwargs: Mapping[str, Any], returns: Iterable[str], *, project: str, name: str,
                type: str | None, parent: str, tags: Iterable[str] = (),
                cache_key: str | None = None) -> TaskInfo:
    """Create the ``created`` task of one call of ``fn(**kwargs)`` (``data`` its pickle).

    ``kwargs`` holds plain values and artifact inputs only: other objects are stored first,
    by :func:`store_objects` (so the cache key can see their digests).

    :raises PipekitError: an argument is neither (it was not stored first).
    """
    digest = pack_callable(store, fn, data)
    plain, inputs, objects = split_kwargs(kwargs)
    if objects:
        raise PipekitError(f"step {name!r}: argument {next(iter(objects))!r} must be stored "
                           "with store_objects() before the task is created")
    return store.create_task(project=project, name=name,
                             type=type or TaskType.data_processing.value, parent=parent,
                             script=script_of(code, digest, returns, _defined_in(fn)),
                             code_digest=code.digest,
                             code=code.source, tags=tuple(tags),
                             params=[*plain, *input_params(inputs)], cache_key=cache_key)


# -- running a function task ----------------------------------------------------------------


def _arguments(store: Store, task_id: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for param in store.get_parameters(task_id).values():
        if param.section == KWARGS:
            kwargs[param.name] = P.cast_param(param)
        elif param.section == KWARGS_ARTIFACTS:
            ref = ArtifactInput.parse(param.value)
            # Loading verifies the object's digest: a step never starts on a value that
            # was not committed whole (RELIABILITY 18).
            kwargs[param.name] = _load_input(store, ref)
    # Secrets are resolved here, in the step, and never written back (SPEC: ${env:NAME}).
    return resolve(kwargs, _env_lookup, env=True)


def _load_input(store: Store, ref: ArtifactInput) -> Any:
    info = store.get_artifact(ref.task, ref.name)
    return load_value(store, info.ref, ref.name)


def _env_lookup(ref: Ref) -> Any:
    if ref.kind is not Kind.ENV:
        raise PipekitError(f"unresolved reference {ref.text!r} reached the step")
    try:
        value = os.environ[ref.name or ""]
    except KeyError:
        raise PipekitError(f"environment variable {ref.name!r} (from {ref.text}) is not set "
                           "in the step's environment") from None
    redact.register(value)  # from now on masked in whatever this process writes
    return value


def _outputs(result: Any, names: list[str], step: str) -> list[tuple[str, Any]]:
    if not names:
        return []
    if len(names) == 1:
        return [(names[0], result)]
    if not isinstance(result, (tuple, list)):
        raise StepFailed(step, "failed", f"returned one {type(result).__name__} but "
                         f"function_return names {len(names)} values {names}")
    if len(result) != len(names):
        raise StepFailed(step, "failed", f"returned {len(result)} values but function_return "
                         f"names {len(names)} {names}")
    return list(zip(names, result, strict=True))


def call(task_id: str, *, worker: str | None = None, capture: bool = True,
         lease: Lease | None = None, before_finish: Callable[[], None] | None = None,
         info: TaskInfo | None = None) -> TaskInfo:
    """Run a ``created``/``queued`` function task here to its final status; returns it.

    The task is ``completed`` only after each return value's artifact is committed; an
    exception fails it with ``Type: message`` and the traceback in its log.

    :param capture: copy this thread's output into the task log (a step subprocess
        redirects its whole output instead).
    :param lease: an agent claimed the task (it is ``in_progress`` already) under this lease;
        its results are committed only while the lease is current.
    :param before_finish: called once the function returned or raised, before the task
        gets its final status (the step process drains its output into the log then, so
        the log is whole when the task is seen to end).
    :param info: the task as the caller just read it (else it is read here).
    :raises TaskStateError: the task is not in a runnable status.
    """
    store = get_store()
    info = info if info is not None and info.id == task_id else store.get_task(task_id)
    if lease is not None:
        if info.status != Status.in_progress.value:
            raise TaskStateError(info.id, info.status, "run")
    elif info.status not in (Status.created.value, Status.queued.value):
        raise TaskStateError(info.id, info.status, "run")
    else:
        store.transition(info.id, Status.in_progress, worker=worker or context.worker_id())
    script = info.script
    log = ThreadCapture(store.log_path(info.id)) if capture else None
    failure: str | None = None
    stopped: str | None = None
    returned: list[ArtifactInfo] = []
    try:
        with executing(info.id):
            fn = _load_callable(store, script["callable"], info.name, script.get("file"))
            kwargs = _arguments(store, info.id)
            result = fn(**kwargs)
            for name, value in _outputs(result, list(script.get("return") or ()), info.name):
                # a returned string stays a string, even one that names a path; the objects
                # are stored now, their records go in with the final status
                returned.append(prepare_artifact(store, info.id, check_name("artifact", name),
                                                 value))
    except KeyboardInterrupt:
        stopped = "stopped by user (KeyboardInterrupt)"
        raise
    except BaseException as exc:
        if isinstance(exc, StepFailed):
            failure = exc.reason
        else:
            failure = f"{type(exc).__name__}: {exc}"
        text = user_traceback(exc)
        if log is not None:
            log.write_log(text)
        else:
            sys.stderr.write(text)
            sys.stderr.flush()
    finally:
        size = log.stop() if log is not None else None
        if before_finish is not None:
            before_finish()
        if stopped:
            finish_task(info.id, Status.stopped, stopped, log_size=size, lease=lease)
        elif failure is not None:
            finish_task(info.id, Status.failed, failure, log_size=size, lease=lease)
        elif finish_task(info.id, Status.completed, log_size=size, lease=lease,
                         artifacts=returned):
            for artifact in returned:
                artifact_uploaded(store, artifact)
        elif lease is not None and store.lease_of(info.id)[0] != lease:
            # A late attempt: its task was reaped and runs again elsewhere. Say so in its log.
            with open_log(store.log_path(info.id)) as fh:
                fh.write(f"LeaseLost: {LeaseLost(info.id, lease)}\n".encode())
    return store.get_task(info.id)
