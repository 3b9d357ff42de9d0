"""A run view as a Mermaid flowchart: pipekit's one Mermaid writer.

Node ids are generated (``n0``, ``n1`` …) and names appear only inside quoted labels, with
every character Mermaid could interpret written as an entity: a step may be called ``x]-->y``
or ``%%{init: {}}%%``. A bare :class:`~pipekit.dag.Dag` is drawn through
:func:`~pipekit.render.view.view_of_dag`.

This module writes Mermaid text only. It must not check DAGs (:mod:`~pipekit.render.view`
does), lay anything out, or do any I/O.
"""

from __future__ import annotations

from .view import (
    STATUS_COLOURS,
    Ids,
    RunView,
    checked,
    runs,
    status,
    status_class,
    status_line,
    title,
)

__all__ = ["MERMAID_MAX_EDGES", "to_mermaid"]

#: Mermaid refuses a diagram with more edges than this (its ``maxEdges`` default, a "secure"
#: setting that a diagram cannot raise for itself); callers may warn and suggest DOT or HTML.
MERMAID_MAX_EDGES = 500

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

    :param view: the run view (see :mod:`pipekit.render.view`).
    :return: the diagram source, ending with a newline.
    :raises DefinitionError: if a run's nodes are not a valid DAG.
    """
    lines = ["flowchart TD"]
    _mermaid_run(view, lines, Ids(), indent="  ")
    for shown, (fill, stroke, colour) in STATUS_COLOURS.items():
        lines.append(f"  classDef {shown} fill:{fill},stroke:{stroke},color:{colour}")
    return "\n".join(lines) + "\n"


def _mermaid_run(view: RunView, lines: list[str], ids: Ids, indent: str) -> None:
    """Append the run's nodes, nested runs and edges."""
    nodes, dag = checked(view)
    node_id = {str(n["name"]): ids.node() for n in nodes}
    if not nodes:
        placeholder = ids.node()
        lines.append(f'{indent}{placeholder}["{_mermaid_text("(no steps)")}"]')
        return
    links: list[str] = []
    for node in nodes:
        name = str(node["name"])
        label = f"{_mermaid_text(name)}<br/>{_mermaid_text(status_line(node))}"
        lines.append(f'{indent}{node_id[name]}["{label}"]:::{status_class(status(node))}')
        for parent in dag.parents(name):
            links.append(f"{indent}{node_id[parent]} --> {node_id[name]}")
        for run in runs(node):
            group = ids.group("s")
            lines.append(f'{indent}subgraph {group}["{_mermaid_text(title(run))}"]')
            _mermaid_run(run, lines, ids, indent + "  ")
            lines.append(f"{indent}end")
            links.append(f"{indent}{node_id[name]} -.-> {group}")
    # Edges come after every node of this run: an edge written inside a subgraph block before
    # its nodes are declared would pull those nodes into the subgraph.
    lines.extend(links)
