"""A run view as one self-contained HTML page that draws the DAG as inline SVG.

The page has a header (name, id, project, status, version, times, parameters), a legend, and
the DAG placed by :func:`pipekit.render.layout.layout`; nested runs follow as sections of their
own, linked from their step's box. Every text is escaped, the page loads nothing from the
network, and its Content-Security-Policy forbids scripts, so it can be mailed or attached to a
ticket as it is.

This module writes HTML text only. It must not check DAGs (:mod:`~pipekit.render.view` does),
compute positions (:mod:`~pipekit.render.layout` does), reference anything outside the page,
or do any I/O.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from .layout import NODE_H, NODE_W, Point, layout
from .view import (
    STATUS_COLOURS,
    RunView,
    checked,
    duration,
    runs,
    status,
    status_class,
    status_line,
    timestamp,
)

__all__ = ["to_html"]

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

    :param view: the run view (see :mod:`pipekit.render.view`).
    :return: the page, ending with a newline.
    :raises DefinitionError: if a run's nodes are not a valid DAG.
    """
    # Breadth-first: the top-level run is section 0 and the nested runs of one step get
    # consecutive sections, so a step's box can link to the first of them.
    queue: list[tuple[RunView, str | None]] = [(view, None)]
    #: (section, step name) -> section of the step's first nested run
    links: dict[tuple[int, str], int] = {}
    number = 0
    while number < len(queue):
        nodes, _ = checked(queue[number][0])
        for node in nodes:
            nested = runs(node)
            if nested:
                links[(number, str(node["name"]))] = len(queue)
                queue.extend((run, str(node["name"])) for run in nested)
        number += 1
    sections = [_html_section(run, number, host, links)
                for number, (run, host) in enumerate(queue)]
    page_title = _e(view.get("name") or view.get("id") or "pipeline run")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" "
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{page_title} · pipekit run</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def _html_section(run: RunView, number: int, host: str | None,
                  links: dict[tuple[int, str], int]) -> str:
    shown = status(run)
    fill, _, colour = STATUS_COLOURS[status_class(shown)]
    name = run.get("name") or run.get("id") or "pipeline run"
    heading = (
        f'<h1>{_e(name)} <span class="badge" style="background:{fill};color:{colour}">'
        f"{_e(shown)}</span></h1>"
        if host is None else
        f'<h2>{_e(name)} <span class="badge" style="background:{fill};color:{colour}">'
        f"{_e(shown)}</span> <small>run inside step {_e(host)}</small></h2>"
    )
    meta = [("id", run.get("id")), ("project", run.get("project")),
            ("version", run.get("version")), ("started", timestamp(run.get("started"))),
            ("ended", timestamp(run.get("ended"))), ("duration", duration(run) or "—")]
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
        f'<span><i style="background:{fill}"></i>{_e(key)}</span>'
        for key, (fill, _, _) in STATUS_COLOURS.items() if key != "unknown"
    ) + "</div>"
    return (
        f'<section id="run-{number}"{css}>\n'
        f"<{tag}>{heading}<dl class=\"meta\">{rows}</dl>{table}</{tag}>\n{legend}"
        f"<div class=\"dag\">{_svg(run, number, links)}</div>\n</section>"
    )


def _svg(run: RunView, number: int, links: dict[tuple[int, str], int]) -> str:
    nodes, dag = checked(run)
    if not nodes:
        return "<p>This run has no steps.</p>"
    placed = layout(dag)
    marker = f"arrow-{number}"  # one id per SVG: ids are document-wide
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{placed.width:.0f}" '
        f'height="{placed.height:.0f}" viewBox="0 0 {placed.width:.0f} {placed.height:.0f}" '
        f'role="img" aria-label="pipeline DAG">',
        f'<defs><marker id="{marker}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" '
        'fill="#555"/></marker></defs>',
        '<g class="edges" fill="none" stroke="#555" stroke-width="1.4">',
    ]
    for edge in placed.edges:
        out.append(f'<path d="{edge.path}" marker-end="url(#{marker})">'
                   f"<title>{_e(edge.parent)} → {_e(edge.child)}</title></path>")
    out.append("</g>")
    for node in nodes:
        name = str(node["name"])
        out.append(_svg_node(node, placed.boxes[name], links.get((number, name))))
    out.append("</svg>")
    return "".join(out)


def _svg_node(node: Mapping[str, Any], at: Point, link: int | None) -> str:
    name = str(node["name"])
    shown = status(node)
    fill, stroke, colour = STATUS_COLOURS[status_class(shown)]
    x, y = at
    tooltip = [name, status_line(node)]
    if node.get("task"):
        tooltip.append(f"task {node['task']}")
    attempt = node.get("attempt")
    if isinstance(attempt, int) and attempt > 0:
        tooltip.append(f"attempt {attempt + 1}")
    if node.get("reason"):
        tooltip.append(str(node["reason"]))
    parts = [
        f'<g class="node s-{status_class(shown)}">',
        f"<title>{_e(chr(10).join(tooltip))}</title>",
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W:.0f}" height="{NODE_H:.0f}" rx="7" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>',
        f'<text class="name" x="{x + 10:.1f}" y="{y + 20:.1f}" fill="{colour}">'
        f"{_e(_short(name))}</text>",
        f'<text x="{x + 10:.1f}" y="{y + 37:.1f}" fill="{colour}">'
        f"{_e(_short(status_line(node), 30))}</text>",
    ]
    nested = runs(node)
    if nested and link is not None:
        # Links to the nested run's section of this same page: a fragment, never a URL.
        label = f"▸ {len(nested)} nested run{'s' if len(nested) > 1 else ''}"
        parts.append(f'<a href="#run-{link}"><text x="{x + 10:.1f}" '
                     f'y="{y + 54:.1f}" fill="{colour}">{_e(label)}</text></a>')
    parts.append("</g>")
    return "".join(parts)
