"""A ready node becomes a task: the launch half of a step's life (SPEC §3).

For a node whose parents all succeeded, :meth:`Launcher.launch` does, in order::

    resolve references -> pre_execute callbacks and hooks (may veto or edit)
    -> objects become artifacts -> cache key -> cache lookup (a hit is served only while
    its outputs verify) -> create the step's task (parameters, configuration, task
    overrides, tags)

and says what came of it (:class:`Launch`): a task to submit, a cached task standing in, a
veto, or a failure with its reason (its traceback logged at DEBUG and kept in the step's log,
or the run's when no step task exists). The run loop (:mod:`pipekit.runner`) does the rest.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

import attrs

from . import caching, functions
from . import params as P
from .artifacts import unverified
from .capture import open_log
from .definition import TASK_OVERRIDE_KEYS
from .errors import DefinitionError, PipekitError, PluginError
from .hashing import digest_params
from .models import Status
from .nodes import Node, PipelineSpec, RunInfo
from .plugin_manager import call_each, call_first
from .references import Kind, Ref, resolve
from .store import get_store
from .task import Task

__all__ = ["FunctionCodes", "Launch", "Launcher", "StepJob", "hook_error"]

log = logging.getLogger("pipekit.runner")

_NO = object()


class StepJob:
    """``node.job``: the step's task, with the few ``ClearmlJob`` methods callbacks use."""

    def __init__(self, task_id: str) -> None:
        self.task = Task(task_id)

    def task_id(self) -> str:
        return self.task.id

    def status(self) -> str:
        return self.task.get_status()

    def is_completed(self) -> bool:
        return self.status() in (Status.completed.value, Status.published.value)

    def is_failed(self) -> bool:
        return self.status() == Status.failed.value

    def is_stopped(self) -> bool:
        return Status(self.status()).is_final

    def __repr__(self) -> str:
        return f"<StepJob {self.task.id}>"


class FunctionCodes:
    """A run's function nodes' pickles and code (:class:`pipekit.functions.FunctionCode`).

    Many nodes may share one function (a fan-out, a component called in a loop): each is
    pickled and hashed once per run, not once per node.
    """

    def __init__(self) -> None:
        self._by_node: dict[str, tuple[bytes, functions.FunctionCode]] = {}
        # keyed by the objects, not their ids, so an id cannot be reused while the entry lives
        self._by_function: dict[tuple[Any, ...], tuple[bytes, functions.FunctionCode]] = {}

    def __call__(self, node: Node) -> tuple[bytes, functions.FunctionCode]:
        made = self._by_node.get(node.name)
        if made is not None:
            return made
        assert node.function is not None
        key: tuple[Any, ...] | None = (node.function, *node.helper_functions)
        try:
            made = self._by_function.get(key)  # type: ignore[arg-type]
        except TypeError:  # an unhashable callable object: nothing to share
            made = key = None
        if made is None:
            data = functions.pack(node.function, node.name)
            made = (data, functions.code_of(node.function, node.helper_functions, data))
            if key is not None:
                self._by_function[key] = made
        self._by_node[node.name] = made
        return made


@attrs.frozen
class Launch:
    """What became of a ready node: exactly one field is set."""

    #: the step's new task, to hand to an executor
    task: str | None = None
    #: a previous task whose outputs stand in for the step (a cache hit)
    cached: str | None = None
    #: why the step will not run (a pre-execute veto)
    skipped: str | None = None
    #: why the step could not be launched
    failed: str | None = None


class Launcher:
    """Launches the nodes of one run (``run`` is its :class:`RunInfo`)."""

    def __init__(self, spec: PipelineSpec, run: RunInfo, *, refresh: bool,
                 code: Callable[[Node], tuple[bytes, functions.FunctionCode]]) -> None:
        """
        :param refresh: run every cached step again (its new result then serves later runs).
        :param code: a function node's pickle and code, made once per node.
        """
        self.spec, self.run, self.refresh, self.code = spec, run, refresh, code
        #: the run's store, looked up once (every node of a run uses the same one)
        self.store = get_store()

    def launch(self, node: Node) -> Launch:
        created: list[str] = []
        try:
            return self._launch(node, created)
        except Exception as exc:
            reason = hook_error(exc)
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            log.debug("step %r failed at launch: %s\n%s", node.name, reason, text)
            self._keep_traceback(created[0] if created else None, node.name, reason, text)
            return Launch(failed=reason)

    def _keep_traceback(self, task_id: str | None, step: str, reason: str, text: str) -> None:
        """Append a launch failure's traceback to the step's log (the run's, if no task)."""
        try:
            path = self.store.log_path(task_id or self.run.id)
            with open_log(path) as fh:
                fh.write(f"step {step!r} failed at launch: {reason}\n{text}".encode())
        except OSError:
            log.debug("could not keep the launch traceback of step %r", step, exc_info=True)

    def _launch(self, node: Node, created: list[str]) -> Launch:
        resolved = self.resolve(node)
        snapshot = dict(node.parameters)
        veto = call_each("pipekit_step_pre_execute", node=node, run=self.run,
                         parameters=resolved)
        if node.skip_job or any(v is False for v in veto):
            return Launch(skipped="skipped by pre_execute callback")
        if node.parameters != snapshot:  # a callback edited node.parameters: re-resolve
            edited = {k: v for k, v in node.parameters.items() if snapshot.get(k, _NO) != v}
            resolved.update(self.resolve(node, edited))
            for key in set(snapshot) - set(node.parameters):
                resolved.pop(key, None)
        if node.function is not None:  # objects become artifacts: their digests are inputs
            kwargs = functions.store_objects(
                {key.partition("/")[2]: value for key, value in resolved.items()},
                name=node.task_name or node.name, owner=self.run.id)
            resolved = {f"{functions.KWARGS}/{arg}": value for arg, value in kwargs.items()}
        if node.cache_executed_step:
            node.cache_key = self.cache_key(node, resolved)
            hit = None if node.cache_key is None or self.refresh else call_first(
                "pipekit_cache_lookup", key=node.cache_key, node=node)
            if hit is not None:
                bad = unverified(self.store, hit)
                if bad is None:
                    return Launch(cached=hit)
                log.warning("step %r: the cached result is not used, %s; the step runs "
                            "again", node.name, bad)
        return Launch(task=self.create_task(node, resolved, created))

    # -- references ---------------------------------------------------------------------------

    def lookup(self, ref: Ref) -> Any:
        """The value of one reference of a node about to launch."""
        store = self.store
        if ref.kind is Kind.PIPELINE:
            return self.spec.parameters[ref.name]
        node = self.spec.nodes[ref.step]
        task_id = node.executed
        if not isinstance(task_id, str):
            raise PipekitError(f"{ref.text}: step {ref.step!r} has no task ({node.status})")
        if ref.kind is Kind.ID:
            return task_id
        if ref.kind is Kind.PARAMETER:
            section, key = P.split_name(ref.name or "")
            param = store.get_parameters(task_id).get(f"{section}/{key}")
            if param is None:
                raise PipekitError(f"{ref.text}: step {ref.step!r} has no parameter "
                                   f"{section}/{key}")
            return P.cast_param(param)
        if ref.kind in (Kind.ARTIFACT, Kind.RETURN):
            store.get_artifact(task_id, ref.name or "")  # raises ArtifactNotFound
            return functions.ArtifactInput(task_id, ref.name or "")
        if ref.kind is Kind.ARTIFACT_URL:
            return Task(task_id).artifacts[ref.name or ""].url
        if ref.kind is Kind.MODEL:
            models = Task(task_id).models["output"]
            try:
                model = models[ref.index or 0]
            except IndexError:
                raise PipekitError(f"{ref.text}: step {ref.step!r} has {len(models)} output "
                                   "models") from None
            return model.id if ref.attr == "id" else model.url
        raise PipekitError(f"{ref.text}: cannot be resolved by the controller")

    def lookup_text(self, ref: Ref) -> Any:
        """A reference inside a longer string: a return value or artifact is loaded (its
        digest verified) so its text can be pasted in.
        """
        value = self.lookup(ref)
        if isinstance(value, functions.ArtifactInput):
            return Task(value.task).artifacts[value.name].get()
        return value

    def resolve(self, node: Node, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """A node's parameters with their references resolved. A whole ``${step.output}``
        stays an input by reference; one inside a list, tuple or dict is loaded (verified),
        so the step gets the container of values.
        """
        source = node.parameters if values is None else values
        return {key: _load_nested(resolve(value, self.lookup, text_lookup=self.lookup_text))
                for key, value in source.items()}

    # -- cache key ----------------------------------------------------------------------------

    def cache_key(self, node: Node, resolved: dict[str, Any]) -> str | None:
        """The node's cache key, or ``None`` (with a warning) when it cannot have one."""
        store = self.store
        params: dict[str, Any] = {}
        inputs: dict[str, str] = {}
        for key, value in resolved.items():
            if isinstance(value, functions.ArtifactInput):
                inputs[key] = store.get_artifact(value.task, value.name).ref.digest
            else:
                params[key] = value if node.function is not None else P.to_text(value)
        configuration: dict[str, Any] = {}
        if node.function is not None:
            code = self.code(node)[1]
            digest, entry_point = code.digest, code.entry_point
        elif node.base_task_factory is not None:
            log.warning("step %r runs uncached: a base_task_factory step's task is not known "
                        "before it is made", node.name)
            return None
        else:
            assert node.base_task_id is not None
            base = store.get_task(node.base_task_id)
            digest = base.code_digest or digest_params(base.script)
            entry_point = str(base.script.get("entry_point") or base.script.get("path") or "")
            stored = {f"{p.section}/{p.name}": p.value
                      for p in store.get_parameters(base.id).values()}
            params = {**stored, **{"/".join(P.split_name(k)): v for k, v in params.items()}}
            configuration = {name: value for name, (value, _) in
                             store.list_configurations(base.id).items()}
            configuration.update({name: P.config_text(value)[0] for name, value in
                                  resolve(node.configurations, self.lookup).items()})
            configuration["task_overrides"] = resolve(node.task_overrides, self.lookup)
        try:
            return caching.cache_key(
                code=digest, entry_point=entry_point, parameters=params, inputs=inputs,
                configuration=configuration, returns=node.return_artifacts,
                extra=caching.hook_parts(call_each("pipekit_cache_key", node=node)),
                version=node.cache_version)
        except caching.CacheKeyError as exc:
            log.warning("step %r runs uncached: its inputs %s", node.name, exc)
            return None

    # -- the step's task ----------------------------------------------------------------------

    def create_task(self, node: Node, resolved: dict[str, Any], created: list[str]) -> str:
        """Make the step's task; its id is appended to ``created`` as soon as it exists."""
        store = self.store
        run_id, spec = self.run.id, self.spec
        tags = [f"pipe: {run_id}"] if spec.add_pipeline_tags else []
        project = node.project_name or spec.target_project or spec.project
        if node.function is not None:
            data, code = self.code(node)
            kwargs = {key.partition("/")[2]: value for key, value in resolved.items()
                      if key.startswith(f"{functions.KWARGS}/")}
            task_id = functions.create_task(
                store, node.function, data, code, kwargs, node.return_artifacts,
                project=project, name=node.task_name or node.name, type=node.job_type,
                parent=run_id, tags=tags, cache_key=node.cache_key).id
            created.append(task_id)
            return task_id
        if node.base_task_factory is not None:
            made = node.base_task_factory(node)
            task_id = made.id if isinstance(made, Task) else str(made)
            created.append(task_id)
            store.update_task(task_id, parent=run_id)
        elif node.clone_task:
            assert node.base_task_id is not None
            task_id = store.clone_task(node.base_task_id, name=node.task_name or node.name,
                                       parent=run_id,
                                       project=node.project_name or spec.target_project,
                                       cache_key=node.cache_key).id
            created.append(task_id)
        else:
            assert node.base_task_id is not None
            task_id = node.base_task_id
            created.append(task_id)
            store.update_task(task_id, parent=run_id, cache_key=node.cache_key)
        if resolved:
            store.set_parameters(task_id, P.as_params(resolved, store.get_parameters(task_id)))
        for name, value in resolve(node.configurations, self.lookup).items():
            text, kind = P.config_text(value)
            store.set_configuration(task_id, name, text, kind)
        if node.task_overrides:
            apply_task_overrides(task_id, resolve(node.task_overrides, self.lookup))
        if tags:
            store.add_tags(task_id, tags)
        return task_id


def apply_task_overrides(task_id: str, overrides: dict[str, Any]) -> None:
    """``task_overrides`` as ClearML names them: ``name``, ``comment``, ``tags`` and
    ``script.<field>`` (e.g. ``script.argv``, ``script.working_dir``).
    """
    store = get_store()
    info = store.get_task(task_id)
    script = dict(info.script)
    fields: dict[str, Any] = {}
    for key, value in overrides.items():
        if key == "tags":
            store.add_tags(task_id, [value] if isinstance(value, str) else list(value))
        elif key.startswith("script."):
            script[key.partition(".")[2]] = value
        elif key in TASK_OVERRIDE_KEYS:
            fields[key] = str(value)
        else:
            raise DefinitionError(f"task_overrides key {key!r} is not supported: use name, "
                                  "comment, tags or script.<field>")
    if script != info.script:
        fields["script"] = script
    if fields:
        store.update_task(task_id, **fields)


def cause(exc: BaseException) -> str:
    """``Type: message`` of what went wrong (the cause, when ``exc`` wraps one)."""
    inner = exc.__cause__ or exc
    return f"{type(inner).__name__}: {inner}"


def hook_error(exc: BaseException) -> str:
    """Why launching or finishing a node failed: a ClearML callback's own error, another
    plugin's error naming the plugin, or pipekit's own message.
    """
    if isinstance(exc, PluginError):
        if exc.plugin == "callbacks":
            return f"callback raised {cause(exc)}"
        return str(exc)
    if isinstance(exc, PipekitError) and exc.__cause__ is None:
        return str(exc)
    return cause(exc)


def _load_nested(value: Any, depth: int = 0) -> Any:
    """``value`` with every artifact input inside a list, tuple or dict loaded."""
    if isinstance(value, functions.ArtifactInput):
        return Task(value.task).artifacts[value.name].get() if depth else value
    if isinstance(value, list):
        return [_load_nested(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(_load_nested(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return {k: _load_nested(v, depth + 1) for k, v in value.items()}
    return value

