"""Drawing a pipeline run's DAG: Mermaid, Graphviz DOT, or one self-contained HTML page.

``pipekit export`` calls :func:`render` on the run view it builds from the store; the coming
web UI reuses :func:`layout` and :meth:`Layout.to_dict`. The package is made of:

- :mod:`~pipekit.render.view`: the run-view shape, statuses and colours, durations, and the
  node checks (built on :class:`~pipekit.dag.Dag`); :func:`view_of_dag` for a bare DAG;
- :mod:`~pipekit.render.layout`: the layered layout, a frozen value of coordinates;
- :mod:`~pipekit.render.mermaid`, :mod:`~pipekit.render.dot`, :mod:`~pipekit.render.html`: one
  writer per format, each turning a run view into text.

Every string in a view is untrusted data: a step may be called ``<script>`` or ``x]-->y``.
Mermaid and DOT node ids are therefore generated (``n0``, ``n1`` …) and names appear only as
escaped, quoted labels; the HTML page escapes all text, loads nothing from the network and
forbids scripts with a Content-Security-Policy.

The package is pure and must stay so: no store, no hooks, no clock, no file or network I/O. It
imports only :mod:`pipekit.errors`, :mod:`pipekit.dag`, :mod:`pipekit.hashing`,
:mod:`pipekit.models` and the standard library. Malformed views (duplicate step names, unknown
parents, cycles) raise the same :mod:`pipekit.errors` a pipeline definition would.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UnknownFormatError
from .dot import to_dot
from .html import to_html
from .layout import Layout, layout
from .mermaid import MERMAID_MAX_EDGES, to_mermaid
from .view import STATUS_COLOURS, RunView, view_of_dag

__all__ = ["FORMATS", "MERMAID_MAX_EDGES", "STATUS_COLOURS", "Layout", "RunView",
           "UnknownFormatError", "layout", "render", "to_dot", "to_html", "to_mermaid",
           "view_of_dag"]

#: Output formats :func:`render` knows, in the order the CLI lists them.
FORMATS: tuple[str, ...] = ("mermaid", "dot", "html")

_RENDERERS: dict[str, Callable[[RunView], str]] = {
    "mermaid": to_mermaid,
    "dot": to_dot,
    "html": to_html,
}


def render(view: RunView, fmt: str) -> str:
    """Render ``view`` in format ``fmt`` (one of :data:`FORMATS`).

    :param view: the run view (see :mod:`pipekit.render.view`).
    :param fmt: ``"mermaid"``, ``"dot"`` or ``"html"``.
    :return: the rendered text.
    :raises UnknownFormatError: if ``fmt`` is not one of :data:`FORMATS`.
    :raises DefinitionError: if a run's nodes are not a valid DAG.
    """
    try:
        renderer = _RENDERERS[fmt]
    except (KeyError, TypeError):
        raise UnknownFormatError(fmt, FORMATS) from None
    return renderer(view)
