"""Pipeline runs as a whole: open one, start a script, run one again, resume or abort one.

Looking at a run is :mod:`pipekit.views`.

* :func:`open_run` — a pipeline about to run gets its controller task and run record: a new
  task, or the task this process was started to execute (``pipekit run``, ``pipekit rerun``,
  a pipeline that is a step of another), taken over with its ``Args``; and its version.
* :func:`launch_script` — ``pipekit run SCRIPT``: a draft controller task for the script,
  whose pipeline takes it over (:func:`pipekit.runner.Runner.start`), ``--param`` values
  becoming its ``Args``.
* :func:`clone_run` — ``Task.clone`` of a run with changed ``Args``: a draft run linked to
  its origin; :func:`execute` runs a draft (``pipekit rerun``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from . import context
from . import params as P
from .capture import StreamCapture
from .config import MODE_ENV, NO_CACHE_ENV, lease_ttl
from .dag import Dag
from .errors import DefinitionError, PipekitError, RunBusy, TaskNotFound
from .hashing import digest_file
from .models import ParamInfo, RunRecord, Status, TaskInfo, TaskType
from .nodes import PipelineSpec, RunInfo
from .script import script_info
from .store import Store, get_store
from .task import current_step
from .versioning import choose_version, provisional_version
from .views import has_run, owner_gone, require_run
from .worker import run_task

__all__ = ["OpenRun", "Ownership", "abort", "abort_run", "clone_run", "enqueue_controller",
           "execute", "launch_script", "open_run", "resume", "resume_as",
           "take_for_resume", "take_run"]

MODES = ("debug", "local")

log = logging.getLogger("pipekit.runs")


# -- opening a run ---------------------------------------------------------------------------------


@attrs.frozen
class OpenRun:
    """A run that has its controller task and run record, about to be driven.

    :param capture: the controller's console tee'd into its task's log, when this process
        is nobody's worker (else whoever launched it captures the output).
    """

    info: RunInfo
    capture: StreamCapture | None = None
    #: the run existed: this is its script run again by ``pipekit resume`` (or by an agent
    #: retrying its controller), its recorded nodes to be restored (:mod:`pipekit.restore`)
    resumed: bool = False


class Ownership:
    """The controller process's claim on the run it drives: it records itself as the run's
    owner and heartbeats every lease TTL / 3 from a thread of its own (a step running in the
    controller's thread does not silence it), so ``runs ls/show`` can tell a run nobody
    drives any more ("controller lost") from a slow one. Once another process has taken the
    run over (``pipekit resume --force``), :attr:`taken_by` names it and beats stop.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.owner = context.run_owner(run_id)
        self.taken_by: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"pipekit-owner-{run_id}",
                                        daemon=True)

    def start(self) -> Ownership:
        """Start beating.

        :raises RunBusy: another process owns the run.
        """
        if not get_store().beat_run(self.run_id, self.owner):
            raise busy(self.run_id, get_store().get_run(self.run_id).owner)
        self._thread.start()
        return self

    def _beat(self) -> None:
        interval = lease_ttl() / 3
        while not self._stop.wait(interval):
            try:
                if not get_store().beat_run(self.run_id, self.owner):
                    self.taken_by = get_store().get_run(self.run_id).owner or "?"
                    return
            except Exception:  # a busy store: the next beat tries again
                log.warning("run %s: heartbeat failed", self.run_id, exc_info=True)

    def stop(self) -> None:
        self._stop.set()


def owner_alive(run: RunRecord) -> bool:
    """Whether the run's owner still drives it: it heartbeat within a lease TTL, and, when
    it runs on this host, its process is alive (so a crash here is seen at once).
    """
    if not run.owner or run.heartbeat is None or run.heartbeat < time.time() - lease_ttl():
        return False
    return not owner_gone(run.owner)


def take_run(run_id: str, owner: str, *, force: bool = False,
             store: Store | None = None) -> None:
    """Make ``owner`` the controller of run ``run_id``: the run's lease, taken only while
    nobody else holds it (or by ``force``). Of two processes taking a run at once, one wins.

    :raises RunBusy: a live process owns the run (naming it), and ``force`` is not set.
    """
    store = store or get_store()
    for _ in range(5):
        run = store.get_run(run_id)
        if run.owner == owner:
            return
        if not force and owner_alive(run):
            raise busy(run_id, run.owner)
        if store.take_run(run_id, owner, previous=(run.owner, run.heartbeat)):
            return
    raise busy(run_id, store.get_run(run_id).owner)


def busy(run_id: str, owner: str | None) -> RunBusy:
    """The error for a run ``owner`` holds."""
    where = context.owner_process(owner or "")
    who = f"PID {where[1]} on {where[0]}" if where else (owner or "another process")
    return RunBusy(run_id, who, resuming=bool(owner and owner.endswith(context.RESUME_MARK)))


#: controller tasks this process has taken over (each is run once)
_adopted: set[str] = set()
_adopted_lock = threading.Lock()


def open_run(spec: PipelineSpec, dag: Dag, *, structure: str | None,
             script: dict[str, Any] | None = None, pipeline: Any = None,
             step_task_created_callback: Callable[..., Any] | None = None,
             step_task_completed_callback: Callable[..., Any] | None = None) -> OpenRun:
    """Create (or take over) the controller task of a run of ``spec`` and its run record.

    :param structure: the run's structure hash, or ``None`` for a dynamic run (a decorated
        pipeline), whose version is settled when it ends.
    :param script: what the controller task records as its script (default: this process's).
    :raises PipekitError: the version cannot be chosen, or an adopted task's ``Args`` name a
        parameter the pipeline lacks; nothing is written then.
    """
    store = get_store()
    caller = current_step()
    # A pipeline started inside a step is nested in it and never takes over the task this
    # process was launched for (a step's process inherits its controller's PIPEKIT_TASK_ID).
    adopted = _adoptable(store) if caller is None else None
    # A task whose run a controller has driven is that run resumed: this process must own
    # it first. (A draft run, the clone ``pipekit rerun`` executes, has never had an owner.)
    resumed = adopted is not None and _driven(store, adopted.id)
    # Before anything is written: a version that cannot be chosen leaves nothing behind.
    if resumed:
        assert adopted is not None
        take_run(adopted.id, context.run_owner(adopted.id), store=store)
        version = store.get_run(adopted.id).version
    elif structure is not None:
        version = choose_version(store, project=spec.project, name=spec.name,
                                 requested=spec.version, auto_bump=spec.auto_version_bump,
                                 structure_hash=structure)
    else:  # provisional: settled once the structure is known
        version = provisional_version(store, spec)
    if adopted is not None:
        try:
            _apply_args(spec, store.get_parameters(adopted.id))
        except PipekitError as exc:  # the worker ends the task: tell it why
            store.update_task(adopted.id, status_reason=f"{type(exc).__name__}: {exc}")
            raise
    params = [ParamInfo("Args", name, P.to_text(value),
                        spec.parameter_types.get(name) or P.type_name(value),
                        spec.parameter_descriptions.get(name, ""))
              for name, value in spec.parameters.items()]
    configurations = {name: P.config_text(value)
                      for name, value in spec.configurations.items()}
    if adopted is not None:
        info = _take_over(store, spec, adopted, params, configurations)
    else:
        script = script if script is not None else script_info()
        info = store.create_task(project=spec.project, name=spec.name,
                                 type=TaskType.controller.value,
                                 status=Status.in_progress, script=script,
                                 code_digest=script.get("digest"),
                                 tags=["pipeline", *spec.tags], params=params,
                                 configurations=configurations,
                                 parent=caller.id if caller is not None else None)
    capture = None
    if adopted is None and caller is None and not context.launched_task_id() \
            and context.process_task() is None:
        # The controller's console is its task's log (a worker running the controller as
        # a task, a step running a nested pipeline, or a Task.init() task capture it).
        capture = StreamCapture(store.log_path(info.id))
    if resumed:
        store.resume_run(info.id, dag=dag.to_dict())
        log.info("run %s: resumed", info.id)
    else:
        store.create_run(info.id, dag=dag.to_dict(), version=version, structure_hash=structure,
                         pipeline=(spec.project, spec.name) if structure else None)
    return OpenRun(RunInfo(id=info.id, name=spec.name, project=spec.project, version=version,
                           pipeline=pipeline,
                           step_task_created_callback=step_task_created_callback,
                           step_task_completed_callback=step_task_completed_callback),
                   capture, resumed)


def settle_version(info: RunInfo, spec: PipelineSpec, structure: Callable[[], str]) -> RunInfo:
    """Record a dynamic run's version once its structure (``structure()``, its hash) is
    known; returns the run with it (unchanged, with a warning, if none can be chosen).
    """
    store = get_store()
    try:
        digest = structure()
        version = choose_version(store, project=spec.project, name=spec.name,
                                 requested=spec.version, auto_bump=spec.auto_version_bump,
                                 structure_hash=digest)
    except PipekitError as exc:
        log.warning("run %s: version not recorded: %s", info.id, exc)
        return info
    store.record_run_version(info.id, project=spec.project, name=spec.name, version=version,
                             structure_hash=digest)
    return attrs.evolve(info, version=version)


def _adoptable(store: Store) -> TaskInfo | None:
    """The controller task this process was started to execute, the first time it is asked.

    ``pipekit run`` and ``pipekit rerun`` create it (a draft, or a clone of a run with new
    ``Args``); a worker executing a pipeline that is a step of another passes its clone.
    """
    task_id = context.launched_task_id()
    if not task_id:
        return None
    with _adopted_lock:
        if task_id in _adopted:
            return None
        try:
            info = store.get_task(task_id)
        except TaskNotFound:
            return None
        if info.type != TaskType.controller.value or info.status not in (
                Status.created.value, Status.queued.value, Status.in_progress.value):
            return None
        _adopted.add(task_id)
    return info


def _apply_args(spec: PipelineSpec, stored: dict[str, ParamInfo]) -> None:
    """Set parameter values from an adopted controller task's ``Args``."""
    for param in stored.values():
        if param.section != "Args":
            continue
        if param.name not in spec.parameters:
            known = ", ".join(sorted(spec.parameters)) or "none"
            raise DefinitionError(f"pipeline {spec.name!r} has no parameter "
                                  f"{param.name!r} (its parameters: {known})")
        default = spec.parameters[param.name]
        spec.parameters[param.name] = (
            P.cast(param.value, like=default, name=param.key)
            if default is not None and param.type == "str" else P.cast_param(param))


def _take_over(store: Store, spec: PipelineSpec, adopted: TaskInfo, params: list[ParamInfo],
               configurations: dict[str, tuple[str, str]]) -> TaskInfo:
    store.update_task(adopted.id, name=spec.name, project=spec.project)
    store.add_tags(adopted.id, ["pipeline", *spec.tags])
    store.set_parameters(adopted.id, params)
    for name, (text, kind) in configurations.items():
        store.set_configuration(adopted.id, name, text, kind)
    store.set_status(adopted.id, Status.in_progress)  # a worker may have done it already
    return store.get_task(adopted.id)


def _driven(store: Store, task_id: str) -> bool:
    """Whether task ``task_id`` has a run that some controller has owned."""
    try:
        return store.get_run(task_id).owner is not None
    except PipekitError:
        return False


def _args(store: Store, task_id: str, overrides: Mapping[str, str]) -> list[ParamInfo]:
    """``--param k=v`` values as ``Args`` parameters of ``task_id``, typed like the existing
    ones; a name may omit its ``Args/`` section.
    """
    named = {key if "/" in key else f"Args/{key}": value for key, value in overrides.items()}
    for key in named:
        if not key.startswith("Args/"):
            raise PipekitError(f"--param {key!r}: a pipeline's parameters are in section Args")
    existing = store.get_parameters(task_id)
    return P.as_params(P.typed_overrides(existing, named), existing)


def launch_script(script: str, args: list[str] | None = None,
                  params: Mapping[str, str] | None = None, *, project: str = "default",
                  store: Store | None = None) -> TaskInfo:
    """A draft controller task that runs ``script`` (see :func:`execute`).

    :raises PipekitError: the script does not exist.
    """
    store = store or get_store()
    path = Path(script).resolve()
    if not path.is_file():
        raise PipekitError(f"script not found: {script}")
    info = store.create_task(
        project=project, name=path.stem, type=TaskType.controller.value,
        script={"path": str(path), "argv": list(args or ()), "working_dir": os.getcwd(),
                "python": sys.executable, "entry_point": path.name,
                "digest": digest_file(path)},
        code_digest=digest_file(path), tags=["pipeline"])
    if params:
        store.set_parameters(info.id, _args(store, info.id, params))
    return info


def enqueue_controller(spec: PipelineSpec, queue: str, *, script: str | None = None,
                       args: list[str] | None = None) -> TaskInfo:
    """A draft controller task that re-runs this script (``script``, default ``sys.argv[0]``)
    with ``spec``'s parameters as its ``Args``, put on ``queue`` for an agent: what
    ``PipelineController.start(queue=...)`` does, as ClearML's ``execute_remotely``.

    :raises PipekitError: there is no script file to run again (an interactive session).
    :raises QueueNotFound: ``queue`` does not exist.
    """
    store = get_store()
    path = script or (sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else "")
    if not path or not Path(path).is_file():
        raise PipekitError(f"pipeline {spec.name!r}: start(queue={queue!r}) runs this script "
                           "again on an agent, but there is no script file (an interactive "
                           "session?): use start_locally()")
    info = launch_script(path, list(sys.argv[1:] if args is None else args),
                         project=spec.project, store=store)
    store.update_task(info.id, name=spec.name)
    store.set_parameters(info.id, [
        ParamInfo("Args", name, P.to_text(value),
                  spec.parameter_types.get(name) or P.type_name(value),
                  spec.parameter_descriptions.get(name, ""))
        for name, value in spec.parameters.items()])
    store.enqueue(info.id, queue)
    return store.get_task(info.id)


def clone_run(run_id: str, params: Mapping[str, str] | None = None, *,
              store: Store | None = None) -> TaskInfo:
    """A draft copy of run ``run_id`` with ``Args`` changed by ``params``, linked to it.

    :raises PipekitError: not a run, a parameter it does not have, or a value its type
        cannot read.
    """
    store = store or get_store()
    run_id = require_run(store, run_id)
    source = store.get_task(run_id)
    if not source.script.get("path"):
        raise PipekitError(f"run {run_id} has no script to run again "
                           f"(it was started from {source.script.get('entry_point')!r})")
    unknown = [k for k in (params or {}) if k.split("/")[-1] not in
               {p.name for p in store.get_parameters(run_id).values() if p.section == "Args"}]
    if unknown:
        raise PipekitError(f"run {run_id} has no parameter {unknown[0]!r}")
    args = _args(store, run_id, params) if params else []  # refused before anything is made
    clone = store.clone_task(run_id, name=source.name)
    if args:
        store.set_parameters(clone.id, args)
    return clone


def execute(task_id: str, *, mode: str | None = None, no_cache: bool = False,
            echo: Any = None, on_start: Callable[[int], None] | None = None,
            env: Mapping[str, str] | None = None) -> TaskInfo:
    """Run draft controller task ``task_id`` here: its script in a child process, whose
    pipeline takes the task over. Returns the task once final.

    :param mode: ``debug`` or ``local``, overriding the script's own choice.
    :param no_cache: run every cached step again.
    :param env: more environment for the script (e.g. :func:`pipekit.alias.clearml_env`).
    """
    if mode is not None and mode not in MODES:
        raise PipekitError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    # (what the caller's environment already says, e.g. PIPEKIT_NO_CACHE=1, stays)
    env = dict(env or {})
    if mode:
        env[MODE_ENV] = mode
    if no_cache:
        env[NO_CACHE_ENV] = "1"
    return run_task(task_id, echo=echo, on_start=on_start, env=env)


def resume(run_id: str, *, force: bool = False, echo: Any = None,
           on_start: Callable[[int], None] | None = None,
           env: Mapping[str, str] | None = None) -> TaskInfo:
    """Continue run ``run_id`` (an id or unique prefix) after its controller was lost: take
    the run's controller lease (:func:`take_for_resume`), then run its script again here as
    the same run (:func:`resume_as`), which keeps every completed step whose artifacts
    verify, waits for a step still in flight, and runs the rest (:mod:`pipekit.restore`).
    Returns the run's task once final.

    :param force: take the run even while its controller looks alive; that controller then
        stops driving it.
    :param env: more environment for the script (e.g. :func:`pipekit.alias.clearml_env`).
    :raises PipekitError: see :func:`take_for_resume`.
    """
    run_id, owner = take_for_resume(run_id, force=force)
    return resume_as(run_id, owner, echo=echo, on_start=on_start, env=env)


def take_for_resume(run_id: str, *, force: bool = False) -> tuple[str, str]:
    """Take run ``run_id`` over to resume it; returns its full id and the owner it is held
    as (for :func:`resume_as`).

    :raises PipekitError: not a run; the run has already ended (``pipekit rerun`` runs it
        again); its script is gone.
    :raises RunBusy: a live controller or another resume holds the run (unless ``force``).
    """
    store = get_store()
    run_id = require_run(store, run_id)
    info = store.get_task(run_id)
    if info.status != Status.in_progress.value:
        raise PipekitError(f"run {run_id} has already ended ({info.status}): nothing to "
                           f"resume; pipekit rerun {run_id[:12]} runs it again")
    path = info.script.get("path")
    if not path or not os.path.isfile(path):
        raise PipekitError(f"run {run_id} cannot be resumed: its script "
                           f"{path or info.script.get('entry_point')!r} is gone")
    owner = context.worker_id() + context.RESUME_MARK
    take_run(run_id, owner, force=force, store=store)
    # An agent's claim on the controller task ends here: its late result is fenced out.
    store.release_claim(run_id)
    return run_id, owner


def resume_as(run_id: str, owner: str, *, echo: Any = None,
              on_start: Callable[[int], None] | None = None,
              env: Mapping[str, str] | None = None) -> TaskInfo:
    """Run the script of run ``run_id``, taken over as ``owner``, as that run; returns the
    run's task once final (see :func:`resume`).
    """
    log.info("run %s: resuming", run_id)
    return run_task(run_id, echo=echo, on_start=on_start, env=env, owner=owner)


def abort(task_id: str, reason: str = "aborted by user", *,
          store: Store | None = None) -> TaskInfo:
    """Stop a task that has not finished. A pipeline run ends ``stopped`` together with every
    step and node in one transaction (a terminal run never keeps a running step); its live
    controller, and the agents running its steps, then kill what still runs. Returns the task.

    :raises PipekitError: the task has already finished (naming its status).
    """
    store = store or get_store()
    task_id = store.resolve_task_id(task_id)
    stopped = store.finish_run(task_id, Status.stopped, reason) if has_run(store, task_id) \
        else store.set_status(task_id, Status.stopped, reason=reason)
    info = store.get_task(task_id)
    if not stopped:
        raise PipekitError(f"task {task_id} is already {info.status}")
    return info


def abort_run(run_id: str, reason: str = "aborted by user") -> TaskInfo:
    """:func:`abort` for a pipeline run only (``pipekit runs abort``).

    :raises PipekitError: ``run_id`` is not a run, or it has already finished.
    """
    store = get_store()
    return abort(require_run(store, run_id), reason, store=store)
