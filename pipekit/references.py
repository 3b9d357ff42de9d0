"""``${...}`` references between pipeline steps: parse them, find them, substitute them.

A reference may appear anywhere inside a string value of a step's parameter overrides or
function kwargs (ClearML syntax)::

    ${pipeline.<param>}                       a pipeline parameter (Kind.PIPELINE)
    ${<step>.id}                              the step's task id (Kind.ID)
    ${<step>.parameters.<Section/key>}        a parameter of the step's task (Kind.PARAMETER)
    ${<step>.artifacts.<name>}                an artifact's value (Kind.ARTIFACT)
    ${<step>.artifacts.<name>.url}            an artifact's url (Kind.ARTIFACT_URL)
    ${<step>.models.output.<index>.id|url}    a model of the step, index may be -1 (Kind.MODEL)
    ${<step>.<return_name>}                   a function step's named return value (Kind.RETURN)
    ${env:NAME}                               a secret read from the step's environment (Kind.ENV)

Every ``${`` in a string starts a reference: it runs to the next ``}`` and must be one of the
forms above, or :class:`~pipekit.errors.BadReference` is raised (there is no escape syntax).
A string with no ``${`` is never touched.

This module is pure: no store, no hooks, no I/O. :func:`resolve` gets its values from a
``lookup`` callable that the caller injects, and lets that callable's errors through.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Collection, Iterator
from typing import Any

import attrs

from .errors import BadReference, UnknownReference

__all__ = [
    "PIPELINE",
    "Kind",
    "Ref",
    "check",
    "find",
    "is_secret",
    "parse",
    "resolve",
    "step_dependencies",
]

#: The reserved first part of ``${pipeline.<param>}``; no step can be referred to by this name.
PIPELINE = "pipeline"
_ENV_PREFIX = "env:"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INDEX = re.compile(r"-?[0-9]+")
_INDEX_DIGITS = 9
_MODEL_LISTS = ("output", "input")
_MODEL_ATTRS = ("id", "url")
_FORMS = (
    "use ${pipeline.<param>}, ${<step>.id}, ${<step>.parameters.<Section/key>}, "
    "${<step>.artifacts.<name>[.url]}, ${<step>.models.output.<index>.id|url}, "
    "${<step>.<return_name>} or ${env:<NAME>}"
)


class Kind(str, enum.Enum):
    """What a reference points at (the value is its lower-case name)."""

    PIPELINE = "pipeline"
    ID = "id"
    PARAMETER = "parameter"
    ARTIFACT = "artifact"
    ARTIFACT_URL = "artifact_url"
    MODEL = "model"
    RETURN = "return"
    ENV = "env"


def _canonical_text(ref: Ref) -> str:
    kind, step, name = ref.kind, ref.step, ref.name
    body = {
        Kind.PIPELINE: f"{PIPELINE}.{name}",
        Kind.ID: f"{step}.id",
        Kind.PARAMETER: f"{step}.parameters.{name}",
        Kind.ARTIFACT: f"{step}.artifacts.{name}",
        Kind.ARTIFACT_URL: f"{step}.artifacts.{name}.url",
        Kind.MODEL: f"{step}.models.{name}.{ref.index}.{ref.attr}",
        Kind.RETURN: f"{step}.{name}",
        Kind.ENV: f"{_ENV_PREFIX}{name}",
    }[Kind(kind)]
    return "${" + body + "}"


@attrs.frozen(kw_only=True)
class Ref:
    """One parsed reference.

    :param kind: what it points at, a :class:`Kind`.
    :param step: the referenced step's name; ``None`` for ``pipeline`` and ``env``.
    :param name: the parameter (``Section/key``), artifact, return value, pipeline parameter
        or environment variable name; for ``model`` the model list, ``"output"`` (or
        ``"input"``, which ClearML also accepts); ``None`` for ``id``.
    :param index: the model index for ``model`` (``-1`` is the last), else ``None``.
    :param attr: ``"id"`` or ``"url"`` for ``model``, else ``None``.
    :param text: the exact ``${...}`` source; built from the other fields when omitted.
    """

    kind: Kind = attrs.field(converter=Kind)
    step: str | None = None
    name: str | None = None
    index: int | None = None
    attr: str | None = None
    text: str = attrs.field(default=attrs.Factory(_canonical_text, takes_self=True))

    def __str__(self) -> str:
        return self.text


def _parse_body(body: str, text: str) -> Ref:
    """Parse the part between ``${`` and ``}``; ``text`` is what errors quote."""

    def bad(reason: str) -> BadReference:
        return BadReference(text, reason)

    if not body:
        raise bad(f"empty reference: {_FORMS}")
    if "{" in body or "}" in body:
        raise bad("'{' or '}' inside a reference: references cannot be nested "
                  "(is a closing '}' missing?)")
    if not body.isprintable():
        raise bad("a reference cannot contain control or non-printable characters")
    if body != body.strip():
        raise bad("remove the spaces after '${' / before '}'")
    if body.startswith(_ENV_PREFIX):
        name = body[len(_ENV_PREFIX):]
        if not name:
            raise bad("empty environment variable name after 'env:'")
        if not _ENV_NAME.fullmatch(name):
            raise bad(f"environment variable name {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
        return Ref(kind=Kind.ENV, name=name, text=text)
    parts = body.split(".")
    head = parts[0]
    if not head:
        raise bad("empty step name before '.'")
    if len(parts) == 1:
        if head == PIPELINE:
            raise bad("'pipeline' needs a parameter name, e.g. ${pipeline.url}")
        raise bad(f"unknown reference kind: {_FORMS}")
    if not all(parts[1:]):
        raise bad("empty name between dots (a '.' is doubled, or the reference ends in '.')")
    rest = ".".join(parts[2:])
    if head == PIPELINE:
        return Ref(kind=Kind.PIPELINE, name=".".join(parts[1:]), text=text)
    what = parts[1]
    if what == "id":
        if rest:
            raise bad(f"nothing may follow '.id' (got {rest!r})")
        return Ref(kind=Kind.ID, step=head, text=text)
    if what == "parameters":
        if not rest:
            raise bad("'parameters' needs a parameter name, e.g. ${step.parameters.General/x}")
        return Ref(kind=Kind.PARAMETER, step=head, name=rest, text=text)
    if what == "artifacts":
        if not rest:
            raise bad("'artifacts' needs an artifact name, e.g. ${step.artifacts.data.url}")
        if len(parts) > 3 and parts[-1] == "url":
            return Ref(kind=Kind.ARTIFACT_URL, step=head, name=".".join(parts[2:-1]), text=text)
        return Ref(kind=Kind.ARTIFACT, step=head, name=rest, text=text)
    if what == "models":
        return _parse_model(head, parts[2:], text)
    if len(parts) > 2:
        raise bad(f"unknown reference kind {what!r}: {_FORMS}")
    return Ref(kind=Kind.RETURN, step=head, name=what, text=text)


def _parse_model(step: str, parts: list[str], text: str) -> Ref:
    if len(parts) != 3:
        raise BadReference(text, "a model reference is ${<step>.models.output.<index>.id|url}")
    which, index, attr = parts
    if which not in _MODEL_LISTS:
        raise BadReference(text, f"model list must be 'output' or 'input', not {which!r}")
    if not _INDEX.fullmatch(index):
        raise BadReference(text, f"model index must be an integer, not {index!r}")
    if len(index.lstrip("-")) > _INDEX_DIGITS:
        raise BadReference(text, f"model index {index} is out of range")
    if attr not in _MODEL_ATTRS:
        raise BadReference(text, f"a model reference ends in '.id' or '.url', not {attr!r}")
    return Ref(kind=Kind.MODEL, step=step, name=which, index=int(index), attr=attr, text=text)


def _scan(value: str) -> Iterator[tuple[int, int, Ref]]:
    """``(start, end, ref)`` for each reference in ``value``, in order."""
    pos = 0
    while (start := value.find("${", pos)) != -1:
        end = value.find("}", start + 2)
        if end == -1:
            raise BadReference(value[start:], "unterminated '${': add the closing '}'")
        yield start, end + 1, _parse_body(value[start + 2:end], value[start:end + 1])
        pos = end + 1


def parse(text: str) -> Ref:
    """Parse one reference, given whole (``"${step.id}"``) or as its body (``"step.id"``).

    :raises BadReference: if ``text`` is not exactly one well-formed reference.
    """
    if not isinstance(text, str):
        raise TypeError(f"a reference is a str, not {type(text).__name__}")
    if not text.startswith("${"):
        return _parse_body(text, "${" + text + "}")
    refs = list(_scan(text))
    if len(refs) != 1 or refs[0][1] != len(text):
        raise BadReference(text, "expected exactly one reference and nothing around it")
    return refs[0][2]


def find(value: Any) -> list[Ref]:
    """Every reference inside ``value``, in order, walking str, list, tuple and dict (keys,
    then values). Other types hold no references.

    :raises BadReference: on the first malformed reference.
    """
    found: list[Ref] = []
    _find_into(value, found)
    return found


def _find_into(value: Any, found: list[Ref]) -> None:
    if isinstance(value, str):
        if "${" in value:
            found.extend(ref for _, _, ref in _scan(value))
    elif isinstance(value, (list, tuple)):
        for item in value:
            _find_into(item, found)
    elif isinstance(value, dict):
        for key, item in value.items():
            _find_into(key, found)
            _find_into(item, found)


def step_dependencies(value: Any) -> set[str]:
    """The names of the steps that ``value`` refers to (they become the step's parents).

    :raises BadReference: on a malformed reference.
    """
    return {ref.step for ref in find(value) if ref.step is not None}


def is_secret(value: Any) -> bool:
    """Whether ``value`` holds an ``${env:...}`` reference (keep it out of the store).

    :raises BadReference: on a malformed reference.
    """
    return any(ref.kind is Kind.ENV for ref in find(value))


def resolve(value: Any, lookup: Callable[[Ref], Any], *, env: bool = False,
            text_lookup: Callable[[Ref], Any] | None = None) -> Any:
    """A copy of ``value`` with its references replaced by what ``lookup(ref)`` returns.

    A string that is exactly one reference becomes the looked-up object itself, of any type;
    a reference inside a longer string is replaced by ``str(obj)``. Lists, tuples (named
    tuples keep their type) and dicts are rebuilt with their items resolved; a dict key is
    always resolved as text (``str(obj)``), so it stays hashable. A string without ``${`` and
    any other object are returned as they are.

    ``${env:NAME}`` references are left as text unless ``env=True``; then they go through
    ``lookup`` like the rest (the step process does this, so secrets never reach the store).

    Each string is checked whole before ``lookup`` is called for it. Whatever ``lookup``
    raises propagates unchanged: the caller decides what a missing value means.

    :param value: the value to resolve.
    :param lookup: returns the value of one :class:`Ref`.
    :param env: also resolve ``${env:...}`` references.
    :param text_lookup: gives the value whose text replaces a reference inside a longer
        string (default: ``lookup``), e.g. a loaded value where ``lookup`` gives a handle.
    :raises BadReference: on a malformed reference.
    """
    text = text_lookup or lookup
    if isinstance(value, str):
        return _resolve_str(value, lookup, env, whole=True, text_lookup=text)
    if isinstance(value, list):
        return [resolve(item, lookup, env=env, text_lookup=text) for item in value]
    if isinstance(value, tuple):
        items = [resolve(item, lookup, env=env, text_lookup=text) for item in value]
        make = getattr(type(value), "_make", None)
        return make(items) if make is not None else tuple(items)
    if isinstance(value, dict):
        return {
            (_resolve_str(key, lookup, env, whole=False, text_lookup=text)
             if isinstance(key, str) else key):
                resolve(item, lookup, env=env, text_lookup=text)
            for key, item in value.items()
        }
    return value


def _resolve_str(value: str, lookup: Callable[[Ref], Any], env: bool, whole: bool,
                 text_lookup: Callable[[Ref], Any] | None = None) -> Any:
    if "${" not in value:
        return value
    spans = [span for span in _scan(value) if env or span[2].kind is not Kind.ENV]
    if not spans:
        return value
    if whole and len(spans) == 1 and spans[0][0] == 0 and spans[0][1] == len(value):
        return lookup(spans[0][2])
    pieces: list[str] = []
    pos = 0
    for start, end, ref in spans:
        pieces.append(value[pos:start])
        pieces.append(str((text_lookup or lookup)(ref)))
        pos = end
    pieces.append(value[pos:])
    return "".join(pieces)


def check(value: Any, steps: Collection[str], params: Collection[str], step: str) -> None:
    """Check that every reference in ``value``, which belongs to step ``step``, names a known
    step or pipeline parameter (``${env:...}`` is checked in the step process, not here).

    :param steps: the names of the pipeline's steps.
    :param params: the names of the pipeline's parameters.
    :param step: the step whose value this is; errors name it.
    :raises BadReference: on a malformed reference, or one to ``step`` itself.
    :raises UnknownReference: on a reference to an unknown step or pipeline parameter.
    """
    try:
        refs = find(value)
    except BadReference as exc:
        raise BadReference(exc.value, exc.reason, step=step) from None
    for ref in refs:
        if ref.kind is Kind.PIPELINE:
            if ref.name not in params:
                raise UnknownReference(step, ref.text, params, missing=ref.name,
                                       what="pipeline parameter")
        elif ref.step is not None:
            if ref.step == step:
                raise BadReference(ref.text, "a step cannot refer to itself", step=step)
            if ref.step not in steps:
                raise UnknownReference(step, ref.text, [s for s in steps if s != step],
                                       missing=ref.step)
