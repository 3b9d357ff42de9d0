"""Where each step's box and each edge go when a DAG is drawn: a layered layout.

Layers come from :meth:`Dag.levels <pipekit.dag.Dag.levels>` (a step's layer is the longest
path to it from a root) and run top to bottom (``"TB"``, what exports draw), so every step sits
below all its parents, or left to right (``"LR"``, what the web UI draws). Long
edges get a dummy vertex in every layer they cross, so they are routed around boxes and take
part in crossing reduction (barycenter sweeps that keep the ordering with the fewest
crossings); then each row is centred under the widest one.

The result is a frozen :class:`Layout` in plain numbers: :mod:`pipekit.render.html` draws it
as SVG and :meth:`Layout.to_dict` hands the same coordinates to a browser as JSON.

This module computes geometry only. It must not check DAGs itself (the :class:`~pipekit.dag.Dag`
does), know about statuses or output formats, or do any I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from ..dag import Dag
from .view import dag_of

__all__ = ["DIRECTIONS", "DUMMY_W", "H_GAP", "MARGIN", "NODE_H", "NODE_W", "V_GAP", "Edge",
           "Layout", "Point", "layout"]

NODE_W, NODE_H = 200.0, 62.0
H_GAP, V_GAP = 28.0, 70.0
DUMMY_W = 14.0
MARGIN = 20.0
#: Left to right, boxes in a layer stack with this gap and layers sit this far apart.
LR_GAP, LR_LAYER_GAP = 18.0, 64.0
#: ``TB`` (top to bottom) or ``LR`` (left to right)
DIRECTIONS = ("TB", "LR")
#: Barycenter sweeps (down then up); a few converge on the DAGs pipelines have.
SWEEPS = 4


class Point(NamedTuple):
    """A position in the drawing, in pixels from its top-left corner."""

    x: float
    y: float


@dataclass(frozen=True)
class Edge:
    """A parent -> child edge routed from the bottom of the parent's box to just above the
    child's: curves between layers, straight through each dummy vertex on the way.

    ``points`` are the start, the top and bottom of each dummy vertex, and the end.
    """

    parent: str
    child: str
    points: tuple[Point, ...]
    #: laid out left to right: the edge leaves a box's right side and curves along x
    horizontal: bool = False

    @property
    def path(self) -> str:
        """The edge as SVG path data: a cubic curve between layers, a line through dummies."""
        parts = [f"M{self.points[0].x:.1f},{self.points[0].y:.1f}"]
        for i in range(len(self.points) - 1):
            (x0, y0), (x1, y1) = self.points[i], self.points[i + 1]
            if i % 2:  # through a dummy vertex
                parts.append(f"L{x1:.1f},{y1:.1f}")
            elif self.horizontal:
                mid = (x0 + x1) / 2
                parts.append(f"C{mid:.1f},{y0:.1f} {mid:.1f},{y1:.1f} {x1:.1f},{y1:.1f}")
            else:
                mid = (y0 + y1) / 2
                parts.append(f"C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}")
        return " ".join(parts)


@dataclass(frozen=True)
class Layout:
    """A drawn DAG: the canvas size, each step's box and each routed edge.

    Every box is :data:`NODE_W` by :data:`NODE_H`; ``boxes`` maps a step to its top-left
    corner and keeps the DAG's insertion order.
    """

    width: float
    height: float
    #: step name -> top-left corner of its box (read-only)
    boxes: Mapping[str, Point]
    #: steps of each layer in drawing order, first layer first
    layers: tuple[tuple[str, ...], ...]
    edges: tuple[Edge, ...]
    #: one of :data:`DIRECTIONS`
    direction: str = "TB"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form: numbers, strings and lists only.

        ``{"width", "height", "node_width", "node_height", "direction",
        "nodes": [{"name", "x", "y", "layer"}], "edges": [{"parent", "child", "points"}]}``,
        with ``points`` a list of ``[x, y]``.
        """
        layer_of = {name: i for i, layer in enumerate(self.layers) for name in layer}
        return {
            "width": self.width,
            "height": self.height,
            "node_width": NODE_W,
            "node_height": NODE_H,
            "direction": self.direction,
            "nodes": [{"name": name, "x": at.x, "y": at.y, "layer": layer_of[name]}
                      for name, at in self.boxes.items()],
            "edges": [{"parent": e.parent, "child": e.child,
                       "points": [[p.x, p.y] for p in e.points]} for e in self.edges],
        }


def layout(graph: Dag | Sequence[Mapping[str, Any]], direction: str = "TB") -> Layout:
    """Lay out a DAG in layers: longest-path layers, dummy vertices on long edges, barycenter
    ordering, each layer centred on the widest one.

    :param graph: a :class:`~pipekit.dag.Dag`, or a run view's ``nodes`` list (checked by
        :func:`~pipekit.render.view.dag_of`, so any text is a valid name).
    :param direction: ``"TB"``, layers top to bottom, or ``"LR"``, layers left to right.
    :raises DefinitionError: if ``graph`` is not a valid DAG.
    :raises ValueError: if ``direction`` is not one of :data:`DIRECTIONS`.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown layout direction {direction!r}: use one of {DIRECTIONS}")
    dag = graph if isinstance(graph, Dag) else dag_of(list(graph))
    names = list(dag)
    # Vertices are ints: 0..len(names)-1 are steps, the rest dummies.
    vlayer = [0] * len(names)
    index = {n: i for i, n in enumerate(names)}
    for level, members in enumerate(dag.levels()):
        for name in members:
            vlayer[index[name]] = level
    up: list[list[int]] = [[] for _ in names]
    down: list[list[int]] = [[] for _ in names]
    chains: list[tuple[str, str, list[int]]] = []
    for child, name in enumerate(names):
        for parent_name in dag.parents(name):
            prev, chain = index[parent_name], []
            for level in range(vlayer[prev] + 1, vlayer[child]):
                dummy = len(vlayer)
                vlayer.append(level)
                up.append([prev])
                down.append([])
                down[prev].append(dummy)
                chain.append(dummy)
                prev = dummy
            down[prev].append(child)
            up[child].append(prev)
            chains.append((parent_name, name, chain))

    depth = max(vlayer, default=-1) + 1
    rows: list[list[int]] = [[] for _ in range(depth)]
    for v, level in enumerate(vlayer):
        rows[level].append(v)
    rows = _order(rows, up, down)

    # The same geometry both ways: "across" is where a vertex sits within its layer (x top to
    # bottom, y left to right), "along" is where its layer sits.
    wide = direction == "TB"
    box_across, box_along = (NODE_W, NODE_H) if wide else (NODE_H, NODE_W)
    gap = H_GAP if wide else LR_GAP
    layer_step = box_along + (V_GAP if wide else LR_LAYER_GAP)

    def size(v: int) -> float:
        return box_across if v < len(names) else DUMMY_W

    extents = [sum(size(v) for v in row) + gap * max(len(row) - 1, 0) for row in rows]
    inner = max(extents, default=0.0)
    across: dict[int, float] = {}
    for row, extent in zip(rows, extents, strict=True):
        at = MARGIN + (inner - extent) / 2
        for v in row:
            across[v] = at
            at += size(v) + gap

    def along(level: int) -> float:
        return MARGIN + level * layer_step

    def point(a: float, b: float) -> Point:  # (across, along) -> drawing coordinates
        return Point(a, b) if wide else Point(b, a)

    boxes = {name: point(across[i], along(vlayer[i])) for i, name in enumerate(names)}
    edges = []
    for parent, child, chain in chains:
        p, c = index[parent], index[child]
        points = [point(across[p] + box_across / 2, along(vlayer[p]) + box_along)]
        for dummy in chain:
            mid = across[dummy] + DUMMY_W / 2
            points += [point(mid, along(vlayer[dummy])),
                       point(mid, along(vlayer[dummy]) + box_along)]
        # -2: leave room for the arrow tip
        points.append(point(across[c] + box_across / 2, along(vlayer[c]) - 2))
        edges.append(Edge(parent, child, tuple(points), horizontal=not wide))
    length = along(depth) - (layer_step - box_along) + MARGIN if depth else 2 * MARGIN
    breadth = inner + 2 * MARGIN
    return Layout(
        width=breadth if wide else length,
        height=length if wide else breadth,
        boxes=MappingProxyType(boxes),
        layers=tuple(tuple(names[v] for v in row if v < len(names)) for row in rows),
        edges=tuple(edges),
        direction=direction,
    )


def _order(rows: list[list[int]], up: list[list[int]], down: list[list[int]]) -> list[list[int]]:
    """Reorder each row by the barycenter of its neighbours in the row above (down sweeps) or
    below (up sweeps); keep the ordering with the fewest crossings seen.
    """
    best = [list(r) for r in rows]
    best_crossings = _crossings(best, down)
    current = [list(r) for r in rows]
    for _ in range(SWEEPS):
        for span, neighbours in ((range(1, len(current)), up),
                                 (range(len(current) - 2, -1, -1), down)):
            for level in span:
                ref = current[level - 1] if neighbours is up else current[level + 1]
                pos = {v: i for i, v in enumerate(ref)}
                here = {v: i for i, v in enumerate(current[level])}

                def barycenter(v: int, pos: dict[int, int] = pos,
                               here: dict[int, int] = here,
                               neighbours: list[list[int]] = neighbours) -> float:
                    adj = neighbours[v]
                    # A vertex without neighbours on that side keeps its place.
                    return sum(pos[u] for u in adj) / len(adj) if adj else float(here[v])

                current[level].sort(key=barycenter)
            crossings = _crossings(current, down)
            if crossings < best_crossings:
                best, best_crossings = [list(r) for r in current], crossings
        if best_crossings == 0:
            break
    return best


def _crossings(rows: list[list[int]], down: list[list[int]]) -> int:
    """Edge crossings between consecutive rows: inversions of the lower end positions once the
    edges are sorted by their upper end, counted with bisect in O(E log E) per row pair.
    """
    total = 0
    for level in range(len(rows) - 1):
        pos = {v: i for i, v in enumerate(rows[level + 1])}
        ends = sorted((i, pos[w]) for i, v in enumerate(rows[level]) for w in down[v])
        seen: list[int] = []
        for _, lower in ends:
            # Edges already seen start left of (or at) this one; those ending right of it cross.
            total += len(seen) - bisect.bisect_right(seen, lower)
            bisect.insort(seen, lower)
    return total
