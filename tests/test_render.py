"""pipekit.render as a package: the layout as a value the web UI can reuse, a bare Dag drawn
through the one Mermaid writer, and the package's purity.

The formats themselves (Mermaid, DOT, HTML of run views) are tested in ``test_export.py``.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import chain, dags, diamond

import pipekit.render
from pipekit.dag import Dag
from pipekit.errors import DuplicateStepError, PipelineCycleError, UnknownParentError
from pipekit.render import Layout, layout, render, to_dot, to_html, to_mermaid, view_of_dag
from pipekit.render.layout import NODE_H, NODE_W
from pipekit.render.view import dag_of

# -- layout as a value --------------------------------------------------------------------------


@given(dags(max_size=20))
def test_layout_to_dict_round_trips_through_json_with_one_coordinate_per_node(dag: Dag) -> None:
    placed = layout(dag)
    data = placed.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert [n["name"] for n in data["nodes"]] == list(dag)
    for n in data["nodes"]:
        assert (n["x"], n["y"]) == placed.boxes[n["name"]]
        assert 0 <= n["x"] and n["x"] + data["node_width"] <= data["width"]
        assert 0 <= n["y"] and n["y"] + data["node_height"] <= data["height"]
    assert sorted((e["parent"], e["child"]) for e in data["edges"]) == sorted(
        (p, n) for n in dag for p in dag.parents(n))
    for e in data["edges"]:
        (x0, y0), (x1, y1) = e["points"][0], e["points"][-1]
        parent, child = placed.boxes[e["parent"]], placed.boxes[e["child"]]
        assert (x0, y0) == (parent.x + NODE_W / 2, parent.y + NODE_H)  # bottom of the parent
        assert x1 == child.x + NODE_W / 2 and y1 < child.y  # just above the child


@given(dags(max_size=20))
def test_layout_layers_are_the_dag_levels(dag: Dag) -> None:
    placed = layout(dag)
    levels = dag.levels()
    assert [sorted(layer) for layer in placed.layers] == [sorted(level) for level in levels]
    layer_of = {n["name"]: n["layer"] for n in placed.to_dict()["nodes"]}
    assert layer_of == {name: i for i, level in enumerate(levels) for name in level}
    for name in dag:
        # Layers run top to bottom: every step's box is below the boxes of all its parents.
        for parent in dag.parents(name):
            assert placed.boxes[parent].y + NODE_H < placed.boxes[name].y
        assert placed.boxes[name].y == min(
            placed.boxes[n].y for n in dag.levels()[layer_of[name]])


@given(dags(max_size=20))
def test_a_left_to_right_layout_is_the_top_to_bottom_one_turned(dag: Dag) -> None:
    """The UI's ``LR`` layout: same layers and order, layers left to right, each box right of
    its parents' boxes, edges from a parent's right side to just left of the child, no two
    boxes overlapping, everything inside the canvas.
    """
    down, across = layout(dag), layout(dag, "LR")
    assert across.layers == down.layers and across.to_dict()["direction"] == "LR"
    data = across.to_dict()
    for name in dag:
        box = across.boxes[name]
        assert 0 <= box.x and box.x + NODE_W <= data["width"]
        assert 0 <= box.y and box.y + NODE_H <= data["height"]
        for parent in dag.parents(name):
            assert across.boxes[parent].x + NODE_W < box.x
    boxes = list(across.boxes.values())
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert abs(a.x - b.x) >= NODE_W or abs(a.y - b.y) >= NODE_H, (a, b)
    for e in across.edges:
        (x0, y0), (x1, y1) = e.points[0], e.points[-1]
        parent, child = across.boxes[e.parent], across.boxes[e.child]
        assert (x0, y0) == (parent.x + NODE_W, parent.y + NODE_H / 2)
        assert y1 == child.y + NODE_H / 2 and x1 < child.x
        assert e.path.startswith(f"M{x0:.1f},{y0:.1f} C")
    with pytest.raises(ValueError, match="'up'"):
        layout(dag, "up")


def test_layout_of_a_view_equals_layout_of_its_dag() -> None:
    nodes = [{"name": name, "parents": parents} for name, parents in diamond().items()]
    assert layout(nodes) == layout(Dag.from_edges(diamond()))
    hostile = [{"name": "<a>"}, {"name": 'x]-->"y', "parents": ["<a>", "<a>"]}]
    assert [n["name"] for n in layout(hostile).to_dict()["nodes"]] == ["<a>", 'x]-->"y']


def test_layout_is_frozen() -> None:
    placed = layout(Dag.from_edges(diamond()))
    assert isinstance(placed, Layout)
    with pytest.raises(dataclasses.FrozenInstanceError):
        placed.width = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        placed.boxes["a"] = (0.0, 0.0)  # type: ignore[index]


def test_layout_of_an_empty_dag() -> None:
    data = layout(Dag()).to_dict()
    assert data["nodes"] == [] and data["edges"] == []
    assert data["width"] > 0 and data["height"] > 0


# -- views -----------------------------------------------------------------------------------------


@given(dags())
def test_every_format_draws_a_bare_dag(dag: Dag) -> None:
    view = view_of_dag(dag)
    assert [n["name"] for n in view["nodes"]] == list(dag)
    for fmt, writer in [("mermaid", to_mermaid), ("dot", to_dot), ("html", to_html)]:
        assert render(view, fmt) == writer(view)


def test_a_long_chain_is_drawn_without_recursion() -> None:
    view = view_of_dag(Dag.from_edges(chain(3_000)))
    assert to_dot(view).count(" -> ") == 2_999
    assert to_html(view).count("marker-end=") == 2_999


@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=8, unique=True))
def test_views_accept_any_text_as_a_name_and_keep_the_dag_checks(names: list[str]) -> None:
    dag = dag_of([{"name": n, "parents": names[:i]} for i, n in enumerate(names)])
    assert list(dag) == names and dag.levels() == [[n] for n in names]
    with pytest.raises(DuplicateStepError):
        dag_of([{"name": names[0]}, {"name": names[0]}])
    with pytest.raises(UnknownParentError):
        dag_of([{"name": names[0], "parents": [names[0] + "?"]}])
    with pytest.raises(PipelineCycleError):
        dag_of([{"name": names[0], "parents": [names[0]]}])


# -- purity ----------------------------------------------------------------------------------------

ALLOWED = {"pipekit.errors", "pipekit.dag", "pipekit.hashing", "pipekit.models"}


def test_render_imports_only_the_stdlib_and_pure_pipekit_modules_at_module_level() -> None:
    package = Path(pipekit.render.__file__).parent
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            assert id(node) in top, f"{path.name}:{node.lineno}: import inside a function"
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif node.level == 0:
                targets = [node.module or ""]
            else:
                base = ["pipekit", "render"][: 3 - node.level]
                targets = [".".join([*base, node.module] if node.module else base)]
            for target in targets:
                ok = (target.split(".")[0] in sys.stdlib_module_names or target in ALLOWED
                      or target.startswith("pipekit.render"))
                assert ok, f"{path.name}:{node.lineno}: imports {target}"
