"""What a step's ``monitor_metrics``, ``monitor_artifacts`` and ``monitor_models`` mean.

ClearML's forms (SPEC §3), each entry naming something the step reports and, optionally,
the name its copy gets on the pipeline's controller task:

* ``monitor_metrics``: ``(title, series)``, or ``((title, series), (target_title,
  target_series))``;
* ``monitor_artifacts``: ``"name"``, or ``("name", "target_name")``;
* ``monitor_models``: ``"name"``, ``("name", "target_name")``, or ``"*"`` alone (every output
  model of the step, each under its own name).

:func:`parse` turns them into one :class:`MonitorSpec` of ``(source, target)`` pairs, or
raises :class:`~pipekit.errors.DefinitionError` naming the step and the offending value. The
controller calls it as a step is added; the ``monitor`` plugin acts on the result.

Pure: no store, no hooks, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .errors import DefinitionError
from .models import NAME_RE

__all__ = ["ALL_MODELS", "MonitorSpec", "parse", "spec_of"]

#: ``monitor_models=["*"]``: every output model of the step
ALL_MODELS = "*"

_METRIC_FORM = "(title, series) or ((title, series), (target_title, target_series))"
_NAMED_FORM = "'name' or ('name', 'target_name')"


@attrs.frozen
class MonitorSpec:
    """A step's monitoring, normalized to ``(source, target)`` pairs."""

    #: ``((title, series), (target_title, target_series))`` pairs
    metrics: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = ()
    #: ``(artifact, target_artifact)`` pairs
    artifacts: tuple[tuple[str, str], ...] = ()
    #: ``(model, target_model)`` pairs (empty when :attr:`all_models`)
    models: tuple[tuple[str, str], ...] = ()
    #: ``monitor_models=["*"]``: copy every output model under its own name
    all_models: bool = False

    def __bool__(self) -> bool:
        return bool(self.metrics or self.artifacts or self.models or self.all_models)


def parse(step: str, monitor_metrics: Any = None, monitor_artifacts: Any = None,
          monitor_models: Any = None) -> MonitorSpec:
    """Check and normalize a step's monitoring arguments, as given to ``add_step``.

    Pass the arguments as the user gave them (before any ``list()``): a bare string is an
    error here rather than a list of one-letter names.

    :param step: the step's name, for messages.
    :raises DefinitionError: a value of the wrong shape, a name that cannot be an artifact
        or model name, two entries copying to the same target, or ``"*"`` combined with
        other models; the message names the step and the value.
    """
    metrics = tuple(_metric(step, i, entry)
                    for i, entry in enumerate(_entries(step, "monitor_metrics",
                                                       monitor_metrics)))
    _unique(step, "monitor_metrics", [target for _, target in metrics])
    artifacts = tuple(_named(step, f"monitor_artifacts[{i}]", entry)
                      for i, entry in enumerate(_entries(step, "monitor_artifacts",
                                                         monitor_artifacts)))
    _unique(step, "monitor_artifacts", [target for _, target in artifacts])
    entries = _entries(step, "monitor_models", monitor_models)
    if ALL_MODELS in entries:
        if len(entries) > 1:
            raise DefinitionError(
                f"step {step!r}: monitor_models {entries!r} combines '*' with other entries; "
                "'*' already copies every output model under its own name", step=step)
        return MonitorSpec(metrics, artifacts, (), True)
    models = tuple(_named(step, f"monitor_models[{i}]", entry, wildcard=True)
                   for i, entry in enumerate(entries))
    _unique(step, "monitor_models", [target for _, target in models])
    return MonitorSpec(metrics, artifacts, models, False)


def spec_of(node: Any) -> MonitorSpec:
    """:func:`parse` of a :class:`~pipekit.nodes.Node`'s three monitor lists."""
    return parse(node.name, node.monitor_metrics, node.monitor_artifacts, node.monitor_models)


def _entries(step: str, what: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        example = "[('title', 'series')]" if what == "monitor_metrics" else "['name']"
        raise DefinitionError(f"step {step!r}: {what} must be a list (e.g. {what}={example}), "
                              f"not {type(value).__name__} {value!r}", step=step)
    return list(value)


def _is_pair(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _metric(step: str, index: int, entry: Any) -> tuple[tuple[str, str], tuple[str, str]]:
    if _is_pair(entry) and all(_is_pair(part) for part in entry):
        source, target = (tuple(part) for part in entry)
    elif _is_pair(entry) and not any(isinstance(part, (tuple, list)) for part in entry):
        source = target = tuple(entry)
    else:
        source = target = ()
    if not (source and all(_text(part) for part in (*source, *target))):
        raise DefinitionError(f"step {step!r}: monitor_metrics[{index}] must be "
                              f"{_METRIC_FORM} of non-empty strings, not {entry!r}", step=step)
    return (source[0], source[1]), (target[0], target[1])


def _named(step: str, where: str, entry: Any, wildcard: bool = False) -> tuple[str, str]:
    if isinstance(entry, str):
        source = target = entry
    elif _is_pair(entry) and all(isinstance(part, str) for part in entry):
        source, target = entry
    else:
        extra = " or '*'" if wildcard else ""
        raise DefinitionError(f"step {step!r}: {where} must be {_NAMED_FORM}{extra}, "
                              f"not {entry!r}", step=step)
    for name in (source, target):
        if wildcard and "*" in name:
            raise DefinitionError(f"step {step!r}: {where} {entry!r}: only '*' alone (every "
                                  "output model) is supported, not a pattern", step=step)
        if not NAME_RE.fullmatch(name):
            raise DefinitionError(f"step {step!r}: {where} {entry!r}: {name!r} is not a valid "
                                  "name (letters, digits, '.', '_' and '-', starting with a "
                                  "letter or digit)", step=step)
    return source, target


def _unique(step: str, what: str, targets: list[Any]) -> None:
    seen: set[Any] = set()
    for target in targets:
        if target in seen:
            raise DefinitionError(f"step {step!r}: two {what} entries copy to {target!r}; "
                                  "give each a different target name", step=step)
        seen.add(target)
