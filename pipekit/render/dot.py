r"""A run view as a Graphviz DOT graph (``dot -Tsvg`` draws it).

Node ids are generated (``n0``, ``n1`` …) and names appear only as escaped, quoted labels, so
a step called ``\N`` or ``a"b`` shows as it is. Graphviz does its own layout; this module
only says what to draw.

This module writes DOT text only. It must not check DAGs (:mod:`~pipekit.render.view` does),
lay anything out, or do any I/O.
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

__all__ = ["to_dot"]


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

    :param view: the run view (see :mod:`pipekit.render.view`).
    :return: the DOT source, ending with a newline.
    :raises DefinitionError: if a run's nodes are not a valid DAG.
    """
    lines = [
        "digraph pipeline {",
        f"  graph [rankdir=TB, compound=true, labelloc=t, fontname=Helvetica, "
        f"label={_dot_string(title(view))}];",
        '  node [shape=box, style="filled,rounded", fontname=Helvetica];',
        "  edge [color=\"#555555\"];",
    ]
    _dot_run(view, lines, Ids(), indent="  ")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_run(view: RunView, lines: list[str], ids: Ids, indent: str) -> str:
    """Append the run's nodes, clusters and edges; return the id of its first node."""
    nodes, dag = checked(view)
    node_id = {str(n["name"]): ids.node() for n in nodes}
    if not nodes:
        placeholder = ids.node()
        lines.append(f'{indent}{placeholder} [label="(no steps)", style=dashed];')
        return placeholder
    links: list[str] = []
    for node in nodes:
        name = str(node["name"])
        fill, stroke, colour = STATUS_COLOURS[status_class(status(node))]
        label = _dot_string(f"{name}\n{status_line(node)}")
        lines.append(
            f'{indent}{node_id[name]} [label={label}, fillcolor="{fill}", color="{stroke}", '
            f'fontcolor="{colour}"];'
        )
        for parent in dag.parents(name):
            links.append(f"{indent}{node_id[parent]} -> {node_id[name]};")
        for run in runs(node):
            cluster = ids.group("cluster_")
            lines.append(f"{indent}subgraph {cluster} {{")
            lines.append(f"{indent}  label={_dot_string(title(run))}; style=dashed;")
            first = _dot_run(run, lines, ids, indent + "  ")
            lines.append(f"{indent}}}")
            # compound=true + lhead draws the arrow to the cluster's border, not its first node.
            links.append(
                f"{indent}{node_id[name]} -> {first} [style=dashed, lhead={cluster}];"
            )
    lines.extend(links)
    return node_id[str(nodes[0]["name"])]
