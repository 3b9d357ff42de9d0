"""The shape of a pipeline: which steps exist and which steps each one waits for.

:class:`Dag` is what ``PipelineController.add_step`` and the decorator build up, what the
runner asks for its ready set and for the steps to skip when one fails, and what is stored on
the controller task (:meth:`Dag.to_dict`) and hashed for versioning (:meth:`Dag.structure_hash`).

It checks names, parents and cycles, raising :class:`~pipekit.errors.DefinitionError`
subclasses that name the step and the offending value, and it orders steps with the standard
library's :class:`graphlib.TopologicalSorter`. Drawing a DAG is :mod:`pipekit.render`'s job
(``render.to_mermaid(render.view_of_dag(dag))``); render imports this module, never the reverse.

This module is pure and must stay so: no store, no hooks, no I/O, no knowledge of tasks or
executors. Every walk is iterative over adjacency dicts, so a DAG of tens of thousands of steps
(or a chain that deep) costs linear time and never meets the recursion limit.
"""

from __future__ import annotations

import graphlib
import heapq
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .errors import (
    DefinitionError,
    DuplicateStepError,
    InvalidStepName,
    PipelineCycleError,
    UnknownParentError,
    UnknownStepError,
)
from .hashing import canonical_json, digest_bytes

__all__ = ["Dag"]

#: Tag hashed with every structure, so a change to what is hashed changes every hash.
_HASH_FORMAT = "pipekit.dag/1"


#: Step names: letters, digits, ``_`` and ``-``; no dots, since a reference's step part ends at
#: the first dot.
STEP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


class Dag:
    """A pipeline's steps and their parents, in the order the steps were added.

    Build it step by step with :meth:`add` (as ``add_step`` does) or all at once with
    :meth:`from_edges` / :meth:`from_dict`. A parent may be named before it is added, so
    unknown parents and cycles are reported by :meth:`validate`, which every ordering and
    walking method calls first (its result is kept until the next change).

    Iterating yields step names in insertion order; ``len()`` and ``in`` work as on a set.
    """

    __slots__ = ("_parents", "_children", "_order")

    def __init__(self) -> None:
        #: step -> its parents, both in insertion order
        self._parents: dict[str, list[str]] = {}
        #: step (or a parent not added yet) -> its children, in the order the edges were added
        self._children: dict[str, list[str]] = {}
        #: the topological order, once validated; ``None`` after any change
        self._order: list[str] | None = None

    # -- building ---------------------------------------------------------------------------

    def add(self, name: str, parents: Iterable[str] | str | None = (), *,
            check_name: bool = True) -> None:
        """Add step ``name`` that waits for ``parents`` (steps that may be added later).

        :param name: the step's name: :data:`STEP_NAME_RE` (a valid name without dots, so
            ``${name.id}`` can address it) and not the reserved ``pipeline``.
        :param parents: names of the steps it depends on; a single string is one name.
            Repeated names count once.
        :param check_name: ``False`` accepts any string as a name, for a DAG read back as
            data rather than defined (:mod:`pipekit.render` draws views whose names are
            untrusted text); every other check still applies.
        :raises InvalidStepName: if ``name`` is not a valid name.
        :raises DuplicateStepError: if a step called ``name`` was already added.
        """
        if check_name and (not isinstance(name, str) or not STEP_NAME_RE.fullmatch(name)
                           or name == "pipeline"):
            raise InvalidStepName(name)
        if name in self._parents:
            raise DuplicateStepError(name)
        self._parents[name] = []
        self._children.setdefault(name, [])
        for parent in _names(parents):
            self._link(name, parent)
        self._order = None

    def add_parent(self, name: str, parent: str) -> None:
        """Make ``name`` wait for ``parent`` too (e.g. a reference found after ``add``).

        Adding an edge that exists already does nothing. ``parent`` need not exist yet.

        :raises UnknownStepError: if there is no step ``name``.
        """
        if parent not in self._require(name):
            self._link(name, parent)
            self._order = None

    def _link(self, name: str, parent: str) -> None:
        if parent not in self._parents[name]:
            self._parents[name].append(parent)
            self._children.setdefault(parent, []).append(name)

    @classmethod
    def from_edges(cls, edges: Mapping[str, Iterable[str]]) -> Dag:
        """A validated DAG from ``{step: [parents]}``, steps added in the mapping's order.

        :raises DefinitionError: as :meth:`add` and :meth:`validate` do.
        """
        dag = cls()
        for name, parents in edges.items():
            dag.add(name, parents)
        dag.validate()
        return dag

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, ``{"nodes": [{"name": ..., "parents": [...]}, ...]}``."""
        return {"nodes": [{"name": name, "parents": list(parents)}
                          for name, parents in self._parents.items()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Dag:
        """The validated DAG that :meth:`to_dict` returned (unknown keys are ignored).

        :raises DefinitionError: if ``data`` is malformed or describes an invalid DAG.
        """
        nodes = data.get("nodes") if isinstance(data, Mapping) else None
        if not isinstance(nodes, list) or not all(
                isinstance(n, Mapping) and "name" in n
                and isinstance(n.get("parents", []), list) for n in nodes):
            raise DefinitionError(
                'malformed DAG: expected {"nodes": [{"name": ..., "parents": [...]}, ...]}, '
                f"got {_clip(data)}"
            )
        dag = cls()
        for node in nodes:  # a repeated name raises DuplicateStepError, as add_step would
            dag.add(node["name"], node.get("parents", []))
        dag.validate()
        return dag

    # -- checking and ordering --------------------------------------------------------------

    def validate(self) -> None:
        """Check that every parent is a step and that the steps form no cycle.

        Calling it again without a change in between is free and gives the same outcome.

        :raises UnknownParentError: naming the first step (in insertion order) with a parent
            that is not a step, and that parent, with close matches.
        :raises PipelineCycleError: naming one loop, ``a -> b -> a``; raised from the
            :class:`graphlib.CycleError` that found it.
        """
        if self._order is not None:
            return
        for name, parents in self._parents.items():
            for parent in parents:
                if parent not in self._parents:
                    raise UnknownParentError(name, parent, known=self._parents)
        sorter = graphlib.TopologicalSorter(self._parents)
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            raise PipelineCycleError(self._rotate(exc.args[1])) from exc
        # Kahn's algorithm through graphlib, taking the earliest-added ready step each time.
        names = list(self._parents)
        index = {name: i for i, name in enumerate(names)}
        heap = [index[n] for n in sorter.get_ready()]
        heapq.heapify(heap)
        order: list[str] = []
        while heap:
            name = names[heapq.heappop(heap)]
            order.append(name)
            sorter.done(name)
            for ready in sorter.get_ready():
                heapq.heappush(heap, index[ready])
        self._order = order

    def _rotate(self, cycle: list[str]) -> list[str]:
        """``cycle`` (first == last) started at its earliest-added step, for a stable message."""
        loop = list(cycle[:-1])
        index = {name: i for i, name in enumerate(self._parents)}
        start = min(range(len(loop)), key=lambda i: index[loop[i]])
        loop = loop[start:] + loop[:start]
        return loop + loop[:1]

    def order(self) -> list[str]:
        """Every step, each after all its parents; ties go to the step added first.

        So a DAG whose steps were added parents-first orders exactly as added.
        """
        self.validate()
        assert self._order is not None
        return list(self._order)

    def levels(self) -> list[list[str]]:
        """Steps grouped by depth; the steps of one level can run together.

        Level 0 holds the roots; a step at level *k* has a parent at level *k - 1* and all its
        parents at lower levels. Each level lists its steps in insertion order.
        """
        self.validate()
        assert self._order is not None
        depth: dict[str, int] = {}
        for name in self._order:
            depth[name] = 1 + max((depth[p] for p in self._parents[name]), default=-1)
        levels: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for name in self._parents:
            levels[depth[name]].append(name)
        return levels

    def ready(self, done: Iterable[str] = (), running: Iterable[str] = (),
              blocked: Iterable[str] = ()) -> list[str]:
        """The scheduler's ready set: steps that can start now, in insertion order.

        A step is ready when all its parents are in ``done`` and it is not itself done,
        ``running`` or ``blocked`` (failed or skipped).
        """
        self.validate()
        done, busy = set(done), set(running) | set(blocked)
        return [name for name, parents in self._parents.items()
                if name not in done and name not in busy
                and all(p in done for p in parents)]

    # -- queries ----------------------------------------------------------------------------

    def parents(self, name: str) -> tuple[str, ...]:
        """The steps ``name`` waits for directly, in the order they were given."""
        return tuple(self._require(name))

    def children(self, name: str) -> tuple[str, ...]:
        """The steps that wait for ``name`` directly, in the order those edges were added."""
        self._require(name)
        return tuple(self._children.get(name, ()))

    def ancestors(self, name: str) -> set[str]:
        """Every step ``name`` waits for, directly or not (not ``name`` itself)."""
        self.validate()
        return self._walk(name, self._parents)

    def descendants(self, name: str) -> set[str]:
        """Every step that waits for ``name``, directly or not (not ``name`` itself).

        These are the steps to skip when ``name`` fails; the walk is linear in their number.
        """
        self.validate()
        return self._walk(name, self._children)

    def _walk(self, name: str, edges: Mapping[str, list[str]]) -> set[str]:
        self._require(name)
        seen: set[str] = set()
        queue = deque(edges.get(name, ()))
        while queue:
            step = queue.popleft()
            if step not in seen:
                seen.add(step)
                queue.extend(edges.get(step, ()))
        return seen

    def roots(self) -> list[str]:
        """Steps without parents, in insertion order."""
        return [name for name, parents in self._parents.items() if not parents]

    def leaves(self) -> list[str]:
        """Steps no step waits for, in insertion order."""
        return [name for name in self._parents if not self._children.get(name)]

    def subgraph(self, names: Iterable[str]) -> Dag:
        """A new DAG of just ``names`` and the edges between them (insertion order kept).

        :raises UnknownStepError: if a name is not a step.
        """
        self.validate()
        keep = set()
        for name in _names(names):
            self._require(name)
            keep.add(name)
        sub = Dag()
        for name, parents in self._parents.items():
            if name in keep:
                sub.add(name, [p for p in parents if p in keep])
        sub.validate()
        return sub

    def __contains__(self, name: object) -> bool:
        return name in self._parents

    def __len__(self) -> int:
        return len(self._parents)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._parents))

    def __repr__(self) -> str:
        edges = sum(len(p) for p in self._parents.values())
        return f"<Dag {len(self)} steps, {edges} edges>"

    def _require(self, name: str) -> list[str]:
        try:
            return self._parents[name]
        except (KeyError, TypeError):
            raise UnknownStepError(name, known=self._parents) from None

    # -- hashing ----------------------------------------------------------------------------

    def structure_hash(self, code_digests: Mapping[str, str] | None = None,
                       defaults: Mapping[str, Any] | None = None) -> str:
        """A blake3 digest of the pipeline's structure, for versioning.

        It covers step names, each step's parents (as a set), each step's code digest and the
        parameter defaults, and nothing else: insertion order and dict order do not matter.

        :param code_digests: step -> digest of its code (steps left out hash as ``None``).
        :param defaults: pipeline parameter -> default value (canonical JSON-encodable).
        :raises UnknownStepError: if ``code_digests`` names a step that is not in the DAG.
        :raises DefinitionError: if a default cannot be encoded canonically.
        """
        self.validate()
        code_digests, defaults = dict(code_digests or {}), dict(defaults or {})
        for name in code_digests:
            self._require(name)
        steps = {name: {"parents": sorted(parents), "code": code_digests.get(name)}
                 for name, parents in self._parents.items()}
        for key, value in defaults.items():
            try:
                canonical_json(value)
            except (TypeError, ValueError) as exc:
                raise DefinitionError(
                    f"parameter {key!r} has a default of type {type(value).__name__} that "
                    "cannot be hashed for versioning: use a JSON value (str, number, bool, "
                    "None, list, dict)"
                ) from exc
        payload = {"format": _HASH_FORMAT, "steps": steps,
                   "defaults": {str(k): v for k, v in defaults.items()}}
        return digest_bytes(canonical_json(payload).encode())


def _names(value: Iterable[str] | str | None) -> list[str]:
    """``value`` as a list of names: ``None`` is none, a string is one name."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _clip(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
