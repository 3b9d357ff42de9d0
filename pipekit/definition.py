"""Checking a pipeline as defined, before anything runs: what the controller and the decorator
share.

* :func:`function_node` — a function step's :class:`~pipekit.nodes.Node` (``add_function_step``
  and ``@PipelineDecorator.component`` both make theirs here);
* :func:`check_retry`, :func:`check_task_overrides`, :func:`refuse_queues` — the per-step and
  per-run checks both APIs apply;
* :func:`check_arguments` — what ClearML checks as a function step is added: an argument that
  is a reference names a pipeline parameter or a step added before it;
* :func:`validate` — the whole pipeline: references, parents, cycles (a :class:`Dag`);
* :func:`check_added` — one node added to a running dynamic run (a component call);
* :func:`default_max_workers` — ``PIPEKIT_MAX_WORKERS``.

Every failure is a :class:`~pipekit.errors.DefinitionError` naming the step and the value.
Nothing here touches the store or runs anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from . import monitoring
from .config import MAX_WORKERS_ENV, setting
from .dag import Dag
from .errors import (
    BadReference,
    DefinitionError,
    DuplicateStepError,
    PipekitError,
    SerializationError,
    UnknownParentError,
    UnknownReference,
)
from .functions import KWARGS, pack
from .models import NAME_RE, TaskType
from .nodes import Node, PipelineSpec
from .references import Kind, check, find, step_dependencies

__all__ = ["MAX_WORKERS_ENV", "TASK_OVERRIDE_KEYS", "build_dag", "check_added",
           "check_arguments", "check_queues", "check_retry", "check_task_overrides",
           "default_max_workers", "function_node", "refuse_queues", "validate"]


#: ``task_overrides`` keys besides ``script.<field>``, as ClearML names them
TASK_OVERRIDE_KEYS = ("name", "comment", "tags")


def default_max_workers() -> int | None:
    """``PIPEKIT_MAX_WORKERS`` as a positive int, or ``None`` when unset.

    :raises PipekitError: it is set to something else.
    """
    raw = setting(MAX_WORKERS_ENV)
    if not raw:
        return None
    try:
        value = int(raw)
        if value < 1:
            raise ValueError
    except ValueError:
        raise PipekitError(f"{MAX_WORKERS_ENV}={raw!r} is not a positive integer") from None
    return value


# -- one step -----------------------------------------------------------------------------------


def check_retry(value: Any, what: str) -> None:
    """:raises DefinitionError: ``retry_on_failure`` is neither a count nor a callable."""
    if value is None or callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DefinitionError(f"{what}: retry_on_failure must be a non-negative int or a "
                              f"callable(pipeline, node, retries), not {value!r}")


def check_task_overrides(step: str, overrides: Iterable[str]) -> None:
    """:raises DefinitionError: a ``task_overrides`` key pipekit cannot apply."""
    for key in overrides:
        if key not in TASK_OVERRIDE_KEYS and not key.startswith("script."):
            raise DefinitionError(f"step {step!r}: task_overrides key {key!r} is not "
                                  "supported (use name, comment, tags or script.<field>)",
                                  step=step)


def refuse_queues(queue: str | None, what: str, instead: str) -> None:
    """Refuse steps on a queue where pipekit cannot send them yet (a decorated pipeline run
    remotely).

    :param what: the subject, e.g. ``"steps are"`` or ``"component 'x' is"``.
    :param instead: the local alternative to suggest.
    :raises PipekitError: ``queue`` is set.
    """
    if queue:
        raise PipekitError(f"{what} assigned to queue {queue!r}, and decorated pipelines "
                           f"cannot send steps to queues in this version of pipekit: {instead}")


def check_queues(spec: PipelineSpec) -> None:
    """Every step of a pipeline whose steps go to queues (remote mode) has one: its own
    ``execution_queue``, else the pipeline's default (as ClearML checks).

    :raises DefinitionError: a step has neither (a ``ValueError``, as in ClearML).
    """
    for node in spec.nodes.values():
        if not node.queue and not spec.default_queue:
            raise DefinitionError(f"Node {node.name!r} missing execution queue, no default "
                                  "queue defined and no specific node queue defined "
                                  "(set_default_execution_queue(), or run the steps here "
                                  "with start_locally(run_pipeline_steps_locally=True))",
                                  step=node.name)


def check_arguments(step: str, function_kwargs: Mapping[str, Any] | None,
                    spec: PipelineSpec) -> None:
    """Check a function step's arguments as it is added, where ClearML does.

    ClearML's ``add_function_step`` (automation/controller.py, ``_add_function_step``, when
    running locally) verifies each argument that *is* a reference (a string starting with
    ``${``): it must name a pipeline parameter already added, or a step already added (and
    one of its return values or ``artifacts``/``parameters``/``models``/``id``). So, as
    there, such an argument cannot refer to a step added later. A reference inside a longer
    string, and every reference of ``add_step``, are checked when the pipeline starts
    (:func:`validate`), as ClearML's ``_verify`` does.

    :raises DefinitionError: naming ``step`` and the reference (a ``ValueError``, as
        ClearML's).
    """
    for value in (function_kwargs or {}).values():
        if not isinstance(value, str) or not value.startswith("${"):
            continue
        try:
            ref = find(value)[0]
        except BadReference as exc:
            raise BadReference(exc.value, exc.reason, step=step) from None
        if ref.kind is Kind.PIPELINE and ref.name not in spec.parameters:
            raise UnknownReference(step, ref.text, spec.parameters, missing=ref.name,
                                   what="pipeline parameter",
                                   fix="add it with add_parameter() before the step")
        if ref.kind is Kind.PIPELINE or ref.step is None:
            continue
        if ref.step == step:
            raise BadReference(ref.text, "a step cannot refer to itself", step=step)
        if ref.step not in spec.nodes:
            added = ", ".join(repr(name) for name in spec.nodes) or "none"
            raise UnknownReference(
                step, ref.text, spec.nodes, missing=ref.step,
                fix=f"a function step's argument may refer only to a step added before it "
                    f"(added so far: {added})")
        source = spec.nodes[ref.step]
        if ref.kind is Kind.RETURN and ref.name not in source.return_artifacts:
            raise UnknownReference(step, ref.text, source.return_artifacts, missing=ref.name,
                                   what=f"return value of step {ref.step!r}")


def function_node(name: str, function: Callable[..., Any],
                  function_kwargs: Mapping[str, Any] | None,
                  function_return: Sequence[str] | None, *, project_name: str | None = None,
                  task_name: str | None = None, task_type: str | None = None,
                  parents: Sequence[str] | None = None, queue: str | None = None,
                  monitor_metrics: Sequence[Any] | None = None,
                  monitor_artifacts: Sequence[Any] | None = None,
                  monitor_models: Sequence[Any] | None = None, time_limit: float | None = None,
                  continue_on_fail: bool = False,
                  pre_execute_callback: Callable[..., Any] | None = None,
                  post_execute_callback: Callable[..., Any] | None = None, cache: bool = False,
                  retry_on_failure: int | Callable[..., bool] | None = None,
                  status_change_callback: Callable[..., Any] | None = None,
                  helper_functions: Sequence[Callable[..., Any]] | None = None,
                  cache_version: str | None = None) -> Node:
    """A function step's :class:`Node` (shared by the controller and the decorator).

    :raises DefinitionError: the function cannot be pickled, a return name is invalid, or a
        monitor spec is malformed.
    """
    monitoring.parse(name, monitor_metrics, monitor_artifacts, monitor_models)
    returns = [function_return] if isinstance(function_return, str) \
        else list(function_return or ())
    for ret in returns:
        if not isinstance(ret, str) or not NAME_RE.fullmatch(ret) or "." in ret:
            raise DefinitionError(f"step {name!r}: invalid function_return name {ret!r} "
                                  "(letters, digits, '_' and '-')", step=name)
    try:
        pack(function, name)
    except SerializationError as exc:
        raise DefinitionError(str(exc), step=name) from exc
    if task_type is not None:
        task_type = str(TaskType(task_type))
    return Node(name=name, queue=queue, parents=list(parents or ()), timeout=time_limit,
                parameters={f"{KWARGS}/{k}": v for k, v in (function_kwargs or {}).items()},
                job_type=task_type, job_code_section=getattr(function, "__name__", None),
                continue_on_fail=continue_on_fail, cache_executed_step=cache,
                return_artifacts=returns, monitor_metrics=list(monitor_metrics or ()),
                monitor_artifacts=list(monitor_artifacts or ()),
                monitor_models=list(monitor_models or ()), retry_on_failure=retry_on_failure,
                pre_execute_callback=pre_execute_callback,
                post_execute_callback=post_execute_callback,
                status_change_callback=status_change_callback, function=function,
                helper_functions=list(helper_functions or ()), project_name=project_name,
                cache_version=None if cache_version is None else str(cache_version),
                task_name=task_name)


# -- the whole pipeline -------------------------------------------------------------------------


def all_parents(node: Node) -> list[str]:
    """Declared parents plus every step the node's references name, in that order."""
    refs = step_dependencies([node.parameters, node.configurations, node.task_overrides])
    return list(dict.fromkeys([*node.parents, *sorted(refs)]))


def build_dag(nodes: Iterable[Node]) -> Dag:
    """The DAG of ``nodes``: declared parents plus every step their references name."""
    dag = Dag()
    for node in nodes:
        dag.add(node.name, all_parents(node))
    return dag


def validate(spec: PipelineSpec) -> Dag:
    """Check a whole pipeline before anything runs; returns its DAG.

    Each node's ``parents`` become the full list (as ClearML: referenced steps included).

    :raises DefinitionError: an unknown parent, a cycle, a malformed reference or one to an
        unknown step, pipeline parameter or return value; each names the step.
    """
    for node in spec.nodes.values():
        check_refs(node, spec)  # before the DAG: "unknown reference" says more
    dag = build_dag(spec.nodes.values())
    dag.validate()
    for node in spec.nodes.values():
        node.parents = list(dag.parents(node.name))
    return dag


def check_refs(node: Node, spec: PipelineSpec) -> None:
    """:raises DefinitionError: a reference of ``node`` names nothing ``spec`` defines (a
    reference to ``node`` itself is refused whether or not it is in ``spec`` yet).
    """
    values = [node.parameters, node.configurations, node.task_overrides]
    # (the steps as the dict's keys: looked up, never copied, so checking N nodes is O(N))
    check(values, spec.nodes.keys(), spec.parameters, node.name)
    for ref in find(values):
        if ref.kind is Kind.RETURN and ref.step in spec.nodes:
            source = spec.nodes[ref.step]
            if ref.name not in source.return_artifacts:
                raise UnknownReference(node.name, ref.text, source.return_artifacts,
                                       missing=ref.name,
                                       what=f"return value of step {ref.step!r}")


def check_added(node: Node, spec: PipelineSpec) -> list[str]:
    """Check a node added to a running dynamic run; returns its full parent list.

    :raises DefinitionError: a duplicate name, a parent that does not exist, or a bad
        reference.
    """
    if node.name in spec.nodes:
        raise DuplicateStepError(node.name)
    check_refs(node, spec)
    parents = all_parents(node)
    for parent in parents:
        if parent not in spec.nodes:
            raise UnknownParentError(node.name, parent, spec.nodes)
    return parents
