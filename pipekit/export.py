"""Render one pipeline run's DAG as text: a Mermaid flowchart, a Graphviz DOT graph, or one
self-contained HTML page that draws the DAG as inline SVG.

The input is a plain *run view* mapping (the CLI's ``pipekit export`` builds it from the store)::

    {"id": str, "name": str, "project": str, "status": str, "version": str,
     "started": float | None, "ended": float | None, "parameters": {str: str},
     "nodes": [{"name": str, "parents": [str], "status": str, "task": str | None,
                "started": float | None, "ended": float | None, "attempt": int,
                "cached": bool, "runs": [<run view>, ...]}, ...]}

``runs`` (optional) holds the pipelines run inside a step, drawn as Mermaid subgraphs, DOT
clusters or linked sections of the HTML page.

Every string in a view is untrusted data: a step may be called ``<script>`` or ``x]-->y``.
Mermaid and DOT node ids are therefore generated (``n0``, ``n1`` …) and names appear only as
escaped, quoted labels; the HTML page escapes all text, loads nothing from the network and
forbids scripts with a Content-Security-Policy.

This module is pure and must stay so: no store, no hooks, no I/O. Malformed views (duplicate
step names, unknown parents, cycles) raise the same :mod:`pipekit.errors` a pipeline definition
would.
"""

from __future__ import annotations

import bisect
import graphlib
import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import (
    DuplicateStepError,
    PipelineCycleError,
    UnknownFormatError,
    UnknownParentError,
)

__all__ = ["FORMATS", "MERMAID_MAX_EDGES", "UnknownFormatError", "render", "to_dot", "to_html",
           "to_mermaid"]

RunView = Mapping[str, Any]

#: Output formats :func:`render` knows, in the order the CLI lists them.
FORMATS: tuple[str, ...] = ("mermaid", "dot", "html")

#: Mermaid refuses a diagram with more edges than this (its ``maxEdges`` default, a "secure"
#: setting that a diagram cannot raise for itself); callers may warn and suggest DOT or HTML.
MERMAID_MAX_EDGES = 500


# -- statuses, durations, validation -------------------------------------------------------

#: status -> (fill, stroke, text colour). ``unknown`` catches statuses this module predates.
STATUS_COLOURS: dict[str, tuple[str, str, str]] = {
    "completed": ("#2e7d32", "#1b5e20", "#ffffff"),
    "cached": ("#00897b", "#00695c", "#ffffff"),
    "failed": ("#c62828", "#8e0000", "#ffffff"),
    "stopped": ("#ffb300", "#c68400", "#000000"),
    "skipped": ("#9e9e9e", "#707070", "#000000"),
    "in_progress": ("#1565c0", "#003c8f", "#ffffff"),
    "pending": ("#e0e0e0", "#aeaeae", "#000000"),
    "unknown": ("#ffffff", "#555555", "#000000"),
}


def _status(item: Mapping[str, Any]) -> str:
    """The status to show: a completed node whose result came from the cache shows as cached."""
    status = str(item.get("status") or "unknown")
    if item.get("cached") and status == "completed":
        return "cached"
    return status


def _status_class(status: str) -> str:
    # Only known statuses become class names: the status string itself is data.
    return status if status in STATUS_COLOURS else "unknown"


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _duration(item: Mapping[str, Any]) -> str | None:
    """``"0.42s"``, ``"12.3s"``, ``"4m 05s"``, ``"2h 03m"``, or ``None`` if not both ends known.

    There is no "still running for …": that would need the clock, and rendering stays pure.
    """
    started, ended = _number(item.get("started")), _number(item.get("ended"))
    if started is None or ended is None or ended < started:
        return None
    seconds = ended - started
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


def _status_line(item: Mapping[str, Any]) -> str:
    status, took = _status(item), _duration(item)
    return f"{status} ({took})" if took else status


def _timestamp(value: object) -> str:
    seconds = _number(value)
    if seconds is None:
        return "—"
    try:
        moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "—"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _nodes(view: RunView) -> list[Mapping[str, Any]]:
    """The run's nodes, checked: unique names, known parents, no cycle.

    The store only holds DAGs that passed :class:`~pipekit.dag.Dag` validation, so a failure
    here means a damaged store or a hand-made view; it is reported with the same errors.
    """
    nodes = list(view.get("nodes") or ())
    names: list[str] = []
    seen: set[str] = set()
    for node in nodes:
        name = str(node["name"])
        if name in seen:
            raise DuplicateStepError(name)
        seen.add(name)
        names.append(name)
    for node in nodes:
        for parent in _parents(node):
            if parent not in seen:
                raise UnknownParentError(str(node["name"]), parent, names)
    return nodes


def _parents(node: Mapping[str, Any]) -> list[str]:
    # dict.fromkeys: drop repeated parents but keep their order, so output is deterministic.
    return list(dict.fromkeys(str(p) for p in node.get("parents") or ()))


def _layers(nodes: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Layer of every node: the length of the longest path to it from a root."""
    graph = {str(n["name"]): _parents(n) for n in nodes}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        # graphlib lists the loop parent-first with its first step repeated at the end.
        raise PipelineCycleError([str(s) for s in exc.args[1]]) from exc
    layer: dict[str, int] = {}
    for name in order:
        layer[name] = max((layer[p] + 1 for p in graph[name]), default=0)
    return layer


def _runs(node: Mapping[str, Any]) -> list[RunView]:
    return list(node.get("runs") or ())


# -- Mermaid ----------------------------------------------------------------------------------

#: Characters a label keeps as they are; everything else becomes a ``#<code>;`` entity. Left
#: out on purpose: ``"`` (ends the string), ``#`` and ``;`` (entity syntax), ``<`` ``>`` ``&``
#: (HTML labels), backtick and ``*`` ``_``-adjacent markdown, ``:`` (mermaid's pre-parser
#: rewrites ``style…:…#…;`` spans), ``%`` (directives and comments) and every control character.
_MERMAID_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,/()+=@!?'"
)


def _mermaid_text(text: str) -> str:
    """``text`` as the inside of a quoted Mermaid label, with no character that Mermaid's lexer,
    entity decoder, markdown or HTML label rendering could interpret.
    """
    return "".join(
        ch if ch in _MERMAID_SAFE or (ch.isalnum() and ord(ch) > 127) else f"#{ord(ch)};"
        for ch in text
    )


def to_mermaid(view: RunView) -> str:
    """A Mermaid ``flowchart TD`` of the run: one node per step labelled with its name, status
    and duration, coloured by a ``classDef`` per status, with parent ``-->`` child edges and
    each nested run as a ``subgraph`` that its step points to with a dotted edge.

    Mermaid viewers refuse diagrams with more than :data:`MERMAID_MAX_EDGES` edges (dotted
    edges to nested runs included); use DOT or HTML for bigger runs.

    :param view: the run view (see the module docstring).
    :return: the diagram source, ending with a newline.
    """
    lines = ["flowchart TD"]
    ids = _Ids()
    _mermaid_run(view, lines, ids, indent="  ")
    for status, (fill, stroke, colour) in STATUS_COLOURS.items():
        lines.append(f"  classDef {status} fill:{fill},stroke:{stroke},color:{colour}")
    return "\n".join(lines) + "\n"


@dataclass
class _Ids:
    """Generated ids; shared across nested runs so two runs' ``train`` steps never merge."""

    nodes: int = 0
    groups: int = 0

    def node(self) -> str:
        self.nodes += 1
        return f"n{self.nodes - 1}"

    def group(self, prefix: str) -> str:
        self.groups += 1
        return f"{prefix}{self.groups - 1}"


def _mermaid_run(view: RunView, lines: list[str], ids: _Ids, indent: str) -> None:
    """Append the run's nodes, nested runs and edges."""
    nodes = _nodes(view)
    _layers(nodes)  # only to reject cycles, as the other formats do
    node_id = {str(n["name"]): ids.node() for n in nodes}
    if not nodes:
        placeholder = ids.node()
        lines.append(f'{indent}{placeholder}["{_mermaid_text("(no steps)")}"]')
        return
    links: list[str] = []
    for node in nodes:
        name = str(node["name"])
        label = f"{_mermaid_text(name)}<br/>{_mermaid_text(_status_line(node))}"
        lines.append(f'{indent}{node_id[name]}["{label}"]:::{_status_class(_status(node))}')
        for parent in _parents(node):
            links.append(f"{indent}{node_id[parent]} --> {node_id[name]}")
        for run in _runs(node):
            group = ids.group("s")
            title = f"{run.get('name') or run.get('id') or 'run'} · {_status_line(run)}"
            lines.append(f'{indent}subgraph {group}["{_mermaid_text(title)}"]')
            _mermaid_run(run, lines, ids, indent + "  ")
            lines.append(f"{indent}end")
            links.append(f"{indent}{node_id[name]} -.-> {group}")
    # Edges come after every node of this run: an edge written inside a subgraph block before
    # its nodes are declared would pull those nodes into the subgraph.
    lines.extend(links)


# -- DOT ----------------------------------------------------------------------------------------


def _dot_string(text: str) -> str:
    r"""``text`` as a quoted DOT string whose label shows exactly ``text``.

    Backslashes are doubled because Graphviz reads ``\N``, ``\G``, ``\l`` … in labels, a
    trailing one would escape the closing quote; line breaks become ``\n``; other control
    characters are dropped.
    """
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 32 or ord(ch) == 127:
            continue
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def to_dot(view: RunView) -> str:
    """A Graphviz ``digraph`` of the run: filled boxes coloured by status, labelled with name,
    status and duration; each nested run is a ``cluster`` subgraph its step points to.

    :param view: the run view (see the module docstring).
    :return: the DOT source, ending with a newline.
    """
    title = f"{view.get('name') or view.get('id') or 'run'} · {_status_line(view)}"
    lines = [
        "digraph pipeline {",
        f"  graph [rankdir=TB, compound=true, labelloc=t, fontname=Helvetica, "
        f"label={_dot_string(title)}];",
        '  node [shape=box, style="filled,rounded", fontname=Helvetica];',
        "  edge [color=\"#555555\"];",
    ]
    _dot_run(view, lines, _Ids(), indent="  ")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_run(view: RunView, lines: list[str], ids: _Ids, indent: str) -> str:
    """Append the run's nodes, clusters and edges; return the id of its first node."""
    nodes = _nodes(view)
    _layers(nodes)
    node_id = {str(n["name"]): ids.node() for n in nodes}
    if not nodes:
        placeholder = ids.node()
        lines.append(f'{indent}{placeholder} [label="(no steps)", style=dashed];')
        return placeholder
    links: list[str] = []
    for node in nodes:
        name = str(node["name"])
        fill, stroke, colour = STATUS_COLOURS[_status_class(_status(node))]
        label = _dot_string(f"{name}\n{_status_line(node)}")
        lines.append(
            f'{indent}{node_id[name]} [label={label}, fillcolor="{fill}", color="{stroke}", '
            f'fontcolor="{colour}"];'
        )
        for parent in _parents(node):
            links.append(f"{indent}{node_id[parent]} -> {node_id[name]};")
        for run in _runs(node):
            cluster = ids.group("cluster_")
            title = f"{run.get('name') or run.get('id') or 'run'} · {_status_line(run)}"
            lines.append(f"{indent}subgraph {cluster} {{")
            lines.append(f"{indent}  label={_dot_string(title)}; style=dashed;")
            first = _dot_run(run, lines, ids, indent + "  ")
            lines.append(f"{indent}}}")
            # compound=true + lhead draws the arrow to the cluster's border, not its first node.
            links.append(
                f"{indent}{node_id[name]} -> {first} [style=dashed, lhead={cluster}];"
            )
    lines.extend(links)
    return node_id[str(nodes[0]["name"])]


# -- layered layout (for the HTML page) -------------------------------------------------------

NODE_W, NODE_H = 200.0, 62.0
H_GAP, V_GAP = 28.0, 70.0
DUMMY_W = 14.0
MARGIN = 20.0
#: Barycenter sweeps (down then up); a few converge on the DAGs pipelines have.
SWEEPS = 4


@dataclass
class _Layout:
    width: float
    height: float
    #: step name -> (x, y) of its box's top-left corner
    boxes: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: (parent, child, SVG path data)
    edges: list[tuple[str, str, str]] = field(default_factory=list)


def _layout(nodes: Sequence[Mapping[str, Any]]) -> _Layout:
    """Sugiyama-style layout: longest-path layers, a dummy vertex wherever an edge crosses a
    layer (so long edges are routed around boxes and take part in crossing reduction),
    barycenter ordering, then rows centred under each other.
    """
    layer_of = _layers(nodes)
    names = [str(n["name"]) for n in nodes]
    # Vertices are ints: 0..len(names)-1 are steps, the rest dummies.
    vlayer = [layer_of[n] for n in names]
    up: list[list[int]] = [[] for _ in names]
    down: list[list[int]] = [[] for _ in names]
    index = {n: i for i, n in enumerate(names)}
    chains: list[tuple[str, str, list[int]]] = []
    for node in nodes:
        child = index[str(node["name"])]
        for parent_name in _parents(node):
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
            chains.append((parent_name, names[child], chain))

    depth = max(vlayer, default=-1) + 1
    rows: list[list[int]] = [[] for _ in range(depth)]
    for v, level in enumerate(vlayer):
        rows[level].append(v)
    rows = _order(rows, up, down)

    widths = [sum(NODE_W if v < len(names) else DUMMY_W for v in row)
              + H_GAP * max(len(row) - 1, 0) for row in rows]
    inner = max(widths, default=0.0)
    xs: dict[int, float] = {}
    for row, row_width in zip(rows, widths, strict=True):
        x = MARGIN + (inner - row_width) / 2
        for v in row:
            xs[v] = x
            x += (NODE_W if v < len(names) else DUMMY_W) + H_GAP

    def top(level: int) -> float:
        return MARGIN + level * (NODE_H + V_GAP)

    layout = _Layout(width=inner + 2 * MARGIN, height=top(depth) - V_GAP + MARGIN)
    for i, name in enumerate(names):
        layout.boxes[name] = (xs[i], top(vlayer[i]))
    for parent, child, chain in chains:
        px, py = layout.boxes[parent]
        cx, cy = layout.boxes[child]
        x0, y0 = px + NODE_W / 2, py + NODE_H
        path = [f"M{x0:.1f},{y0:.1f}"]
        for dummy in chain:
            dx, dy = xs[dummy] + DUMMY_W / 2, top(vlayer[dummy])
            path.append(_curve(x0, y0, dx, dy))
            path.append(f"L{dx:.1f},{dy + NODE_H:.1f}")
            x0, y0 = dx, dy + NODE_H
        path.append(_curve(x0, y0, cx + NODE_W / 2, cy - 2))  # -2: leave room for the arrow tip
        layout.edges.append((parent, child, " ".join(path)))
    return layout


def _curve(x0: float, y0: float, x1: float, y1: float) -> str:
    mid = (y0 + y1) / 2
    return f"C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}"


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


# -- HTML ---------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 6px}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:0 0 10px}
dl.meta dt{color:#666}dl.meta dd{margin:0;word-break:break-all}
table.params{border-collapse:collapse;margin:0 0 12px}
table.params td,table.params th{border:1px solid #ddd;padding:2px 8px;text-align:left;
vertical-align:top;word-break:break-all}
.legend{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0 12px;font-size:12px}
.legend span{display:inline-flex;align-items:center;gap:4px}
.legend i{display:inline-block;width:14px;height:14px;border:1px solid #555;border-radius:3px}
.dag{overflow:auto;border:1px solid #ddd;border-radius:6px;max-height:85vh;background:#fafafa}
.dag text{font-size:12px;font-family:inherit}.dag .name{font-weight:600}
.dag a text{text-decoration:underline}
section.nested{border-top:2px solid #ddd;margin-top:28px}
.badge{font-size:12px;padding:1px 8px;border-radius:9px;border:1px solid #555}
"""

#: Characters of a name that fit in a box at 12px; longer names are cut, the full name is in
#: the box's tooltip.
_NAME_CHARS = 26


def _short(text: str, limit: int = _NAME_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: C0 controls except tab and newline, and DEL: most are invalid in XML (an SVG copied out of
#: the page would not load) and a lone CR is rewritten by HTML parsers; they are dropped.
_CONTROLS = dict.fromkeys([*range(9), *range(11, 32), 127])


def _e(value: object) -> str:
    return html.escape(str(value).translate(_CONTROLS), quote=True)


def to_html(view: RunView) -> str:
    """One self-contained HTML page drawing the run's DAG as inline SVG, with a header (name,
    id, project, status, version, times, parameters) and a legend. Nested runs follow as
    sections of their own, linked from their step's box.

    The page references nothing outside itself and its Content-Security-Policy forbids scripts,
    so it can be mailed or attached to a ticket as it is.

    :param view: the run view (see the module docstring).
    :return: the page, ending with a newline.
    """
    # Breadth-first: the top-level run is section 0 and the nested runs of one step get
    # consecutive sections, so a step's box can link to the first of them.
    queue: list[tuple[RunView, str | None]] = [(view, None)]
    #: (section, step name) -> section of the step's first nested run
    links: dict[tuple[int, str], int] = {}
    number = 0
    while number < len(queue):
        for node in _nodes(queue[number][0]):
            runs = _runs(node)
            if runs:
                links[(number, str(node["name"]))] = len(queue)
                queue.extend((run, str(node["name"])) for run in runs)
        number += 1
    sections = [_html_section(run, number, host, links)
                for number, (run, host) in enumerate(queue)]
    title = _e(view.get("name") or view.get("id") or "pipeline run")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" "
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{title} · pipekit run</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def _html_section(run: RunView, number: int, host: str | None,
                  links: dict[tuple[int, str], int]) -> str:
    status = _status(run)
    fill, _, colour = STATUS_COLOURS[_status_class(status)]
    name = run.get("name") or run.get("id") or "pipeline run"
    heading = (
        f'<h1>{_e(name)} <span class="badge" style="background:{fill};color:{colour}">'
        f"{_e(status)}</span></h1>"
        if host is None else
        f'<h2>{_e(name)} <span class="badge" style="background:{fill};color:{colour}">'
        f"{_e(status)}</span> <small>run inside step {_e(host)}</small></h2>"
    )
    meta = [("id", run.get("id")), ("project", run.get("project")),
            ("version", run.get("version")), ("started", _timestamp(run.get("started"))),
            ("ended", _timestamp(run.get("ended"))), ("duration", _duration(run) or "—")]
    if run.get("reason"):
        meta.append(("reason", run["reason"]))
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v if v is not None else '—')}</dd>" for k, v in meta)
    params = run.get("parameters") or {}
    table = (
        "<table class=\"params\"><tr><th>parameter</th><th>value</th></tr>"
        + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in params.items())
        + "</table>"
        if params else "<p>No parameters.</p>"
    )
    tag = "header" if host is None else "div"
    css = "" if host is None else ' class="nested"'
    legend = "" if host is not None else '<div class="legend">' + "".join(
        f'<span><i style="background:{fill}"></i>{_e(status)}</span>'
        for status, (fill, _, _) in STATUS_COLOURS.items() if status != "unknown"
    ) + "</div>"
    return (
        f'<section id="run-{number}"{css}>\n'
        f"<{tag}>{heading}<dl class=\"meta\">{rows}</dl>{table}</{tag}>\n{legend}"
        f"<div class=\"dag\">{_svg(run, number, links)}</div>\n</section>"
    )


def _svg(run: RunView, number: int, links: dict[tuple[int, str], int]) -> str:
    nodes = _nodes(run)
    if not nodes:
        return "<p>This run has no steps.</p>"
    layout = _layout(nodes)
    marker = f"arrow-{number}"  # one id per SVG: ids are document-wide
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{layout.width:.0f}" '
        f'height="{layout.height:.0f}" viewBox="0 0 {layout.width:.0f} {layout.height:.0f}" '
        f'role="img" aria-label="pipeline DAG">',
        f'<defs><marker id="{marker}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" '
        'fill="#555"/></marker></defs>',
        '<g class="edges" fill="none" stroke="#555" stroke-width="1.4">',
    ]
    for parent, child, path in layout.edges:
        out.append(f'<path d="{path}" marker-end="url(#{marker})">'
                   f"<title>{_e(parent)} → {_e(child)}</title></path>")
    out.append("</g>")
    for node in nodes:
        name = str(node["name"])
        out.append(_svg_node(node, layout.boxes[name], links.get((number, name))))
    out.append("</svg>")
    return "".join(out)


def _svg_node(node: Mapping[str, Any], at: tuple[float, float], link: int | None) -> str:
    name = str(node["name"])
    status = _status(node)
    fill, stroke, colour = STATUS_COLOURS[_status_class(status)]
    x, y = at
    tooltip = [name, _status_line(node)]
    if node.get("task"):
        tooltip.append(f"task {node['task']}")
    attempt = node.get("attempt")
    if isinstance(attempt, int) and attempt > 0:
        tooltip.append(f"attempt {attempt + 1}")
    if node.get("reason"):
        tooltip.append(str(node["reason"]))
    parts = [
        f'<g class="node s-{_status_class(status)}">',
        f"<title>{_e(chr(10).join(tooltip))}</title>",
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W:.0f}" height="{NODE_H:.0f}" rx="7" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>',
        f'<text class="name" x="{x + 10:.1f}" y="{y + 20:.1f}" fill="{colour}">'
        f"{_e(_short(name))}</text>",
        f'<text x="{x + 10:.1f}" y="{y + 37:.1f}" fill="{colour}">'
        f"{_e(_short(_status_line(node), 30))}</text>",
    ]
    runs = _runs(node)
    if runs and link is not None:
        # Links to the nested run's section of this same page: a fragment, never a URL.
        label = f"▸ {len(runs)} nested run{'s' if len(runs) > 1 else ''}"
        parts.append(f'<a href="#run-{link}"><text x="{x + 10:.1f}" '
                     f'y="{y + 54:.1f}" fill="{colour}">{_e(label)}</text></a>')
    parts.append("</g>")
    return "".join(parts)


# -- dispatch -------------------------------------------------------------------------------------

_RENDERERS: dict[str, Callable[[RunView], str]] = {
    "mermaid": to_mermaid,
    "dot": to_dot,
    "html": to_html,
}


def render(view: RunView, fmt: str) -> str:
    """Render ``view`` in format ``fmt`` (one of :data:`FORMATS`).

    :param view: the run view (see the module docstring).
    :param fmt: ``"mermaid"``, ``"dot"`` or ``"html"``.
    :return: the rendered text.
    :raises UnknownFormatError: if ``fmt`` is not one of :data:`FORMATS`.
    """
    try:
        renderer = _RENDERERS[fmt]
    except (KeyError, TypeError):
        raise UnknownFormatError(fmt, FORMATS) from None
    return renderer(view)
