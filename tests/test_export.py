"""Tests of pipekit.render: Mermaid, DOT and HTML renderings of a run view.

Mermaid output is checked twice: by a strict Python checker of the flowchart subset the module
emits (always runs), and by the real Mermaid parser through ``tests/export_check/validate.mjs``
(runs when ``npm ci`` was done in ``tests/export_check``). DOT is checked by ``dot`` when
Graphviz is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipekit.errors import (
    DuplicateStepError,
    PipekitError,
    PipelineCycleError,
    UnknownParentError,
)
from pipekit.render import (
    FORMATS,
    MERMAID_MAX_EDGES,
    UnknownFormatError,
    render,
    to_dot,
    to_html,
    to_mermaid,
)
from pipekit.render.layout import NODE_H, NODE_W, _crossings
from pipekit.render.layout import layout as _layout

CHECK_DIR = Path(__file__).parent / "export_check"

HOSTILE = [
    "<script>alert(1)</script>",
    'a"b',
    "x]-->y",
    "end",
    "subgraph",
    "a\\",
    "\\N\\G",
    "#quot;",
    "&amp;",
    "a;b",
    "%%{init: {}}%%",
    "style:#f00;",
    "`md`",
    "a\nb",
    "\x00\x1b",
    "click n0 call alert(1)",
    "é漢字 ☃",
    "a\u202eb",
    "'",
    "{x}",
    "(x)",
    "-->",
    '"];n9["x',
    "</text></svg><img src=x onerror=alert(1)>",
]


# -- views ----------------------------------------------------------------------------------


def node(name: str, parents: list[str] | None = None, status: str = "completed",
         **extra: Any) -> dict[str, Any]:
    base = {"name": name, "parents": parents or [], "status": status, "task": None,
            "started": None, "ended": None, "attempt": 0, "cached": False}
    base.update(extra)
    return base


def run_view(nodes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    base = {"id": "a1b2c3d4", "name": "my pipeline", "project": "examples",
            "status": "completed", "version": "1.0.2", "started": 1700000000.0,
            "ended": 1700000042.5, "parameters": {"x": "1"}, "nodes": nodes}
    base.update(extra)
    return base


def three_step() -> dict[str, Any]:
    return run_view([
        node("prep", started=10.0, ended=11.5),
        node("train", ["prep"], started=11.5, ended=130.0, task="t2"),
        node("report", ["train"], status="failed", started=130.0, ended=131.0, attempt=1,
             reason="ZeroDivisionError: <boom>"),
    ])


def diamond() -> dict[str, Any]:
    return run_view([
        node("a"),
        node("b", ["a"], cached=True),
        node("c", ["a"], status="skipped"),
        node("d", ["b", "c"], status="pending"),
    ])


def hostile_view() -> dict[str, Any]:
    # A chain, so every hostile name is also an edge end.
    nodes = [node(HOSTILE[0])]
    for prev, name in zip(HOSTILE, HOSTILE[1:], strict=False):
        nodes.append(node(name, [prev], status="in_progress"))
    return run_view(nodes, name=HOSTILE[0], id='"><b>', parameters={"<k>": '"v"&'})


def nested() -> dict[str, Any]:
    inner = run_view([node("train"), node("eval", ["train"])], id="inner1", name="inner <x>")
    empty = run_view([], id="inner2", name="empty")
    return run_view([
        node("train"),
        node("fan", ["train"], runs=[inner, empty]),
        node("done", ["fan"]),
    ])


def edges_of(view: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p, n["name"]) for n in view["nodes"] for p in n["parents"]}


# -- a strict checker of the Mermaid subset to_mermaid emits ------------------------------------

_LABEL = r"(?:[A-Za-z0-9 _\-.,/()+=@!?']|#\d+;|<br/>|[^\x00-\x7f])*"
_NODE = re.compile(rf'^(\s*)(n\d+)\["({_LABEL})"\](?::::(\w+))?$')
_SUBGRAPH = re.compile(rf'^(\s*)subgraph (s\d+)\["({_LABEL})"\]$')
_EDGE = re.compile(r"^\s*(n\d+) --> (n\d+)$")
_LINK = re.compile(r"^\s*(n\d+) -\.-> (s\d+)$")
_CLASSDEF = re.compile(
    r"^  classDef (\w+) fill:#[0-9a-f]{6},stroke:#[0-9a-f]{6},color:#[0-9a-f]{6}$")


def decode(label: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), label)


def check_mermaid(text: str) -> tuple[dict[str, str], set[tuple[str, str]], dict[str, str]]:
    """Fail unless ``text`` is made only of the line forms to_mermaid emits, every id is
    declared once before use, subgraphs balance and every class used is defined.

    :return: node id -> decoded label, node edges as (id, id), subgraph id -> decoded title.
    """
    lines = text.split("\n")
    assert lines[0] == "flowchart TD"
    assert lines[-1] == "", "output ends with a newline"
    labels: dict[str, str] = {}
    groups: dict[str, str] = {}
    edges: set[tuple[str, str]] = set()
    used_classes: set[str] = set()
    defined_classes: set[str] = set()
    depth = 0
    for line in lines[1:-1]:
        if m := _NODE.match(line):
            assert m.group(2) not in labels, f"id declared twice: {line!r}"
            labels[m.group(2)] = decode(m.group(3))
            if m.group(4):
                used_classes.add(m.group(4))
        elif m := _SUBGRAPH.match(line):
            assert m.group(2) not in groups
            groups[m.group(2)] = decode(m.group(3))
            depth += 1
        elif line.strip() == "end":
            depth -= 1
            assert depth >= 0, "unbalanced end"
        elif m := _EDGE.match(line):
            assert m.group(1) in labels and m.group(2) in labels, f"undeclared id: {line!r}"
            edges.add((m.group(1), m.group(2)))
        elif m := _LINK.match(line):
            assert m.group(1) in labels and m.group(2) in groups
        elif m := _CLASSDEF.match(line):
            defined_classes.add(m.group(1))
        else:
            raise AssertionError(f"unexpected line {line!r}")
    assert depth == 0, "unclosed subgraph"
    assert used_classes <= defined_classes
    return labels, edges, groups


def mermaid_names(labels: dict[str, str]) -> dict[str, str]:
    """Node id -> step name (the label's first line)."""
    return {i: label.split("<br/>")[0] for i, label in labels.items()}


def assert_mermaid_matches(view: dict[str, Any], text: str) -> None:
    labels, edges, _ = check_mermaid(text)
    names = mermaid_names(labels)
    by_name = {v: k for k, v in names.items()}
    for n in view["nodes"]:
        assert n["name"] in by_name, f"node {n['name']!r} missing"
    assert {(names[a], names[b]) for a, b in edges} == edges_of(view)


# -- the real Mermaid parser ---------------------------------------------------------------------


def _node_ready() -> str | None:
    """Why the real Mermaid parser cannot run here, or None if it can."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (CHECK_DIR / "node_modules" / "mermaid").is_dir():
        return "tests/export_check/node_modules is absent: run `npm ci` in tests/export_check"
    return None


#: CI (.ci/run) installs the parser and sets this: there, a missing parser fails the tests
REQUIRE_MERMAID = os.environ.get("PIPEKIT_REQUIRE_MERMAID") == "1"
needs_mermaid = pytest.mark.skipif(_node_ready() is not None and not REQUIRE_MERMAID,
                                   reason=_node_ready() or "")


class MermaidServer:
    """One ``validate.mjs --serve`` process: a diagram per JSON line in, a verdict per line out."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["node", "validate.mjs", "--serve"], cwd=CHECK_DIR, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, encoding="utf-8",
        )

    def check(self, text: str) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(text) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "validate.mjs exited"
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def mermaid() -> Any:
    if (why := _node_ready()) is not None:
        if REQUIRE_MERMAID:
            pytest.fail(why)
        pytest.skip(why)
    server = MermaidServer()
    try:
        yield server
    finally:
        server.close()


@needs_mermaid
def test_three_step_mermaid_is_valid_for_the_real_parser(tmp_path: Path) -> None:
    # The acceptance check, exactly as a user would run it: the validator's file mode.
    diagram = tmp_path / "run.mmd"
    diagram.write_text(render(three_step(), "mermaid"), encoding="utf-8")
    result = subprocess.run(["node", "validate.mjs", str(diagram)], cwd=CHECK_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok ")


@needs_mermaid
def test_validator_rejects_a_broken_diagram(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mmd"
    broken.write_text('flowchart TD\n  n0["a"b"] --> n1\n', encoding="utf-8")
    result = subprocess.run(["node", "validate.mjs", str(broken)], cwd=CHECK_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Parse error" in result.stdout


@pytest.mark.parametrize("make", [three_step, diamond, hostile_view, nested])
def test_real_parser_accepts_every_shape(mermaid: MermaidServer, make: Any) -> None:
    verdict = mermaid.check(to_mermaid(make()))
    assert verdict == {"ok": True, "error": None}


def test_real_parser_rejects_unescaped_names(mermaid: MermaidServer) -> None:
    # Proves escaping and generated ids matter: naive renderings of hostile names (a quote, a
    # leading backtick, `x]y` as an id, `end` as an id) do not parse.
    for naive in ['n0["a"b"]', 'n0["`a"]', "n0[x]y]", 'n0["x"] --> end']:
        assert not mermaid.check(f"flowchart TD\n  {naive}\n")["ok"], naive


def test_real_parser_enforces_the_edge_limit(mermaid: MermaidServer) -> None:
    nodes = [node("root")] + [node(f"s{i}", ["root"]) for i in range(MERMAID_MAX_EDGES + 1)]
    verdict = mermaid.check(to_mermaid(run_view(nodes)))
    assert not verdict["ok"] and "Edge limit" in verdict["error"]


# -- random DAGs ----------------------------------------------------------------------------------


@st.composite
def dag_views(draw: st.DrawFn, max_nodes: int = 25) -> dict[str, Any]:
    """A run view whose DAG is acyclic by construction (parents drawn from earlier steps) and
    whose step names are arbitrary text, so hostile characters turn up everywhere.
    """
    names = draw(st.lists(st.text(min_size=1, max_size=12), min_size=0, max_size=max_nodes,
                          unique=True))
    statuses = st.sampled_from(["completed", "cached", "failed", "skipped", "stopped",
                                "pending", "in_progress", "weird<status>"])
    nodes = []
    for i, name in enumerate(names):
        parents = draw(st.lists(st.sampled_from(names[:i]), max_size=3, unique=True)
                       if i else st.just([]))
        times = draw(st.one_of(st.just((None, None)),
                               st.tuples(st.floats(0, 1e6), st.floats(0, 1e6))))
        nodes.append(node(name, parents, draw(statuses), started=times[0], ended=times[1],
                          cached=draw(st.booleans())))
    return run_view(nodes, name=draw(st.text(max_size=10)))


@settings(max_examples=200, deadline=None)
@given(dag_views())
def test_mermaid_of_random_dags_passes_the_strict_checker(view: dict[str, Any]) -> None:
    assert_mermaid_matches(view, to_mermaid(view))


@settings(max_examples=150, deadline=None)
@given(view=dag_views())
def test_mermaid_of_random_dags_passes_the_real_parser(mermaid: MermaidServer,
                                                       view: dict[str, Any]) -> None:
    text = to_mermaid(view)
    verdict = mermaid.check(text)
    assert verdict["ok"], f"{verdict['error']}\n{text}"


@settings(max_examples=100, deadline=None)
@given(dag_views())
def test_dot_and_html_of_random_dags_keep_every_node_and_edge(view: dict[str, Any]) -> None:
    labels, edges = parse_dot(to_dot(view))
    expected = [dot_visible(n["name"]) for n in view["nodes"]] or ["(no steps)"]
    assert sorted(expected) == sorted(label.rsplit("\n", 1)[0] for label in labels.values())
    assert len(edges) == len(edges_of(view))
    page = parse_html(to_html(view))
    assert page.external == []
    assert page.node_titles_start_with([n["name"] for n in view["nodes"]])
    assert len(page.edge_titles) == len(edges_of(view))


# -- Mermaid --------------------------------------------------------------------------------------


def test_mermaid_three_step() -> None:
    view = three_step()
    text = to_mermaid(view)
    assert text.startswith("flowchart TD\n")
    labels, edges, _ = check_mermaid(text)
    assert labels == {
        "n0": "prep<br/>completed (1.50s)",
        "n1": "train<br/>completed (1m 58s)",
        "n2": "report<br/>failed (1.00s)",
    }
    assert edges == {("n0", "n1"), ("n1", "n2")}
    assert 'n2["report<br/>failed (1.00s)"]:::failed' in text
    assert "classDef failed fill:#c62828" in text


def test_mermaid_diamond_shows_cached_and_every_edge() -> None:
    view = diamond()
    text = to_mermaid(view)
    assert_mermaid_matches(view, text)
    assert 'n1["b<br/>cached"]:::cached' in text


@pytest.mark.parametrize("name", HOSTILE)
def test_mermaid_escapes_hostile_names(name: str) -> None:
    view = run_view([node("ok"), node(name, ["ok"])])
    text = to_mermaid(view)
    assert_mermaid_matches(view, text)
    m = _NODE.match(text.splitlines()[2])
    assert m is not None
    raw = m.group(3).replace("<br/>", "")
    assert not set(raw) & set('"<>`%&:\n\\'), raw


def test_mermaid_nested_runs_are_subgraphs() -> None:
    view = nested()
    text = to_mermaid(view)
    labels, edges, groups = check_mermaid(text)
    names = mermaid_names(labels)
    assert sorted(names.values()) == sorted(
        ["train", "fan", "done", "train", "eval", "(no steps)"])
    assert sorted(groups.values()) == ["empty · completed (42.5s)",
                                       "inner <x> · completed (42.5s)"]
    assert text.count("-.->") == 2
    # the two 'train' steps stay two nodes
    assert len([i for i, n in names.items() if n == "train"]) == 2


# -- DOT ------------------------------------------------------------------------------------------

_DOT_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def dot_unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), body)


def dot_visible(name: str) -> str:
    """What a DOT label shows of ``name``: control characters other than newline are dropped."""
    return "".join(c for c in name if c == "\n" or not (ord(c) < 32 or ord(c) == 127))


def parse_dot(text: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Node id -> decoded label, and the edges; fails on unbalanced quotes or braces."""
    bare = _DOT_STRING.sub('""', text)
    assert '"' not in bare.replace('""', ""), "unbalanced quote"
    assert bare.count("{") == bare.count("}")
    labels = {m.group(1): dot_unescape(m.group(2)) for m in re.finditer(
        r'^\s*(n\d+) \[label="((?:[^"\\]|\\.)*)"', text, re.M)}
    edges = re.findall(r"^\s*(n\d+) -> (n\d+);$", text, re.M)
    return labels, edges


def test_dot_three_step() -> None:
    text = to_dot(three_step())
    assert text.startswith("digraph pipeline {\n") and text.endswith("}\n")
    labels, edges = parse_dot(text)
    assert labels == {"n0": "prep\ncompleted (1.50s)", "n1": "train\ncompleted (1m 58s)",
                      "n2": "report\nfailed (1.00s)"}
    assert edges == [("n0", "n1"), ("n1", "n2")]
    assert 'fillcolor="#c62828"' in text and 'style="filled,rounded"' in text


@pytest.mark.parametrize("name", HOSTILE)
def test_dot_escapes_hostile_names(name: str) -> None:
    labels, edges = parse_dot(to_dot(run_view([node("ok"), node(name, ["ok"])])))
    assert labels["n1"] == f"{dot_visible(name)}\ncompleted"
    assert edges == [("n0", "n1")]


def test_dot_nested_runs_are_clusters() -> None:
    text = to_dot(nested())
    assert text.count("subgraph cluster_") == 2
    assert "lhead=cluster_0" in text and "lhead=cluster_1" in text
    labels, _ = parse_dot(text)
    assert "eval\ncompleted" in labels.values()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (dot) is not installed")
@pytest.mark.parametrize("make", [three_step, diamond, hostile_view, nested])
def test_graphviz_accepts_the_dot(make: Any) -> None:
    result = subprocess.run(["dot", "-Tsvg"], input=to_dot(make()), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "<svg" in result.stdout


# -- HTML -----------------------------------------------------------------------------------------


class Page(HTMLParser):
    """Collects what the HTML tests look at: references, tags, node and edge tooltips."""

    URL_ATTRS = {"src", "href", "xlink:href", "action", "srcset", "data", "poster", "formaction"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.refs: list[str] = []
        self.event_attrs: list[str] = []
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.node_titles: list[str] = []
        self.edge_titles: list[str] = []
        self.svg_text: list[str] = []
        self.styles: list[str] = []
        self._title: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for key, value in attrs:
            if key in self.URL_ATTRS:
                self.refs.append(value or "")
            if key.startswith("on"):
                self.event_attrs.append(key)
            if key == "style" and value:
                self.styles.append(value)
        self.stack.append((tag, dict(attrs)))
        if tag == "title" and len(self.stack) > 1:
            self._title = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._title is not None:
            parent_tag, parent_attrs = self.stack[-2]
            text = "".join(self._title)
            if parent_tag == "g" and (parent_attrs.get("class") or "").startswith("node "):
                self.node_titles.append(text)
            elif parent_tag == "path":
                self.edge_titles.append(text)
            self._title = None
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._title is not None:
            self._title.append(data)
        if any(t == "svg" for t, _ in self.stack):
            self.svg_text.append(data)
        if self.stack and self.stack[-1][0] == "style":
            self.styles.append(data)

    @property
    def external(self) -> list[str]:
        """Every reference that leaves the page (anything but a #fragment or the SVG namespace
        declaration), plus url()/@import in styles."""
        bad = [r for r in self.refs if not r.startswith("#")]
        bad += [s for s in self.styles if re.search(r"url\(\s*['\"]?(?!#)|@import", s)]
        return bad

    def node_titles_start_with(self, names: list[str]) -> bool:
        remaining = list(self.node_titles)
        for name in names:
            # Like DOT, the page drops control characters (they are invalid in XML).
            shown = "".join(c for c in name if c in "\t\n" or not (ord(c) < 32 or ord(c) == 127))
            match = next((t for t in remaining if t.startswith(shown + "\n")), None)
            if match is None:
                return False
            remaining.remove(match)
        return not remaining


def parse_html(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def test_html_three_step() -> None:
    view = three_step()
    text = to_html(view)
    assert text.startswith("<!DOCTYPE html>")
    page = parse_html(text)
    assert page.node_titles_start_with(["prep", "train", "report"])
    assert sorted(page.edge_titles) == ["prep → train", "train → report"]
    assert page.tags.count("svg") == 1
    for fact in ["my pipeline", "a1b2c3d4", "examples", "1.0.2", "2023-11-14 22:13:20 UTC",
                 "42.5s", "failed (1.00s)"]:
        assert fact in "".join(page.svg_text) or fact in text, fact
    assert "attempt 2" in "\n".join(page.node_titles)
    assert "task t2" in "\n".join(page.node_titles)
    assert "ZeroDivisionError: <boom>" in "\n".join(page.node_titles)


def test_html_is_self_contained() -> None:
    for view in (three_step(), nested(), hostile_view()):
        page = parse_html(to_html(view))
        assert page.external == []
        assert not {"script", "link", "img", "iframe", "object", "embed", "image",
                    "foreignobject", "use"} & set(page.tags)
        assert page.event_attrs == []
        assert not re.search(r"(?i)(https?:)?//(?!www\.w3\.org/2000/svg)",
                             to_html(view).replace('xmlns="http://www.w3.org/2000/svg"', ""))


def test_html_forbids_scripts_by_policy() -> None:
    text = to_html(three_step())
    assert "Content-Security-Policy" in text and "default-src 'none'" in text


def test_html_escapes_hostile_names() -> None:
    view = hostile_view()
    text = to_html(view)
    page = parse_html(text)
    # The hostile names' markup never became tags, only text.
    assert set(page.tags) <= {"html", "head", "meta", "title", "style", "body", "div", "span",
                              "i", "section", "header", "h1", "h2", "small", "dl", "dt", "dd",
                              "table", "tr", "th", "td", "p", "svg", "defs", "marker", "path",
                              "g", "rect", "text", "a"}
    assert page.node_titles_start_with([n["name"] for n in view["nodes"]])
    assert len(page.edge_titles) == len(view["nodes"]) - 1
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "&lt;k&gt;" in text and "&quot;v&quot;&amp;" in text


def test_html_diamond_draws_every_edge_with_an_arrow() -> None:
    text = to_html(diamond())
    page = parse_html(text)
    assert sorted(page.edge_titles) == ["a → b", "a → c", "b → d", "c → d"]
    assert text.count('marker-end="url(#arrow-0)"') == 4
    assert "s-cached" in text and "s-skipped" in text and "s-pending" in text


def test_html_nested_runs_are_linked_sections() -> None:
    text = to_html(nested())
    page = parse_html(text)
    assert page.tags.count("svg") == 2  # the empty nested run has no steps to draw
    assert '<section id="run-1" class="nested">' in text
    assert '<section id="run-2" class="nested">' in text
    assert "#run-1" in page.refs
    assert "run inside step fan" in text
    assert "This run has no steps." in text
    assert 'id="arrow-0"' in text and 'id="arrow-1"' in text


def test_html_links_of_deeply_nested_runs_point_at_their_sections() -> None:
    deepest = run_view([node("leaf")], id="deep", name="deepest")
    middle = run_view([node("mid", runs=[deepest])], id="mid", name="middle")
    view = run_view([node("a"), node("b", ["a"], runs=[middle]),
                     node("c", ["a"], runs=[run_view([node("x")], id="side", name="side")])])
    text = to_html(view)
    page = parse_html(text)
    ids = set(re.findall(r'<section id="(run-\d+)"', text))
    assert ids == {"run-0", "run-1", "run-2", "run-3"}
    assert sorted(page.refs) == ["#run-1", "#run-2", "#run-3"]
    # b's link goes to 'middle', whose own link goes to 'deepest'.
    assert re.search(r'<section id="run-1" class="nested">\n<div><h2>middle ', text)
    assert re.search(r'<section id="run-3" class="nested">\n<div><h2>deepest ', text)
    assert_mermaid_matches(view, to_mermaid(view))
    assert to_dot(view).count("subgraph cluster_") == 3


def test_html_legend_lists_every_status() -> None:
    text = to_html(three_step())
    for status in ["completed", "cached", "failed", "stopped", "skipped", "in_progress",
                   "pending"]:
        assert f"</i>{status}</span>" in text


def test_html_of_an_empty_run() -> None:
    page = parse_html(to_html(run_view([], parameters={})))
    assert "svg" not in page.tags


# -- layout ---------------------------------------------------------------------------------------


def boxes_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return abs(a[0] - b[0]) < NODE_W and abs(a[1] - b[1]) < NODE_H


def test_layout_layers_by_longest_path() -> None:
    # d has parents at depth 0 (a) and depth 2 (c): it goes below c.
    nodes = [node("a"), node("b", ["a"]), node("c", ["b"]), node("d", ["a", "c"])]
    boxes = _layout(nodes).boxes
    ys = sorted({y for _, y in boxes.values()})
    assert [ys.index(boxes[n][1]) for n in "abcd"] == [0, 1, 2, 3]


def test_layout_untangles_a_crossing() -> None:
    # Declared order puts c (child of y) left of d (child of x) under x, y: one crossing.
    nodes = [node("x"), node("y"), node("c", ["y"]), node("d", ["x"])]
    boxes = _layout(nodes).boxes
    assert (boxes["x"][0] < boxes["y"][0]) == (boxes["d"][0] < boxes["c"][0])


def test_crossings_counts_inversions() -> None:
    down = [[3], [2], [], []]
    assert _crossings([[0, 1], [2, 3]], down) == 1
    assert _crossings([[0, 1], [3, 2]], down) == 0


@pytest.mark.exclusive
def test_layout_of_200_nodes_is_fast_and_tidy() -> None:
    import random

    rng = random.Random(7)
    nodes = []
    for i in range(200):
        pool = [n["name"] for n in nodes[-25:]]
        nodes.append(node(f"s{i}", rng.sample(pool, k=min(len(pool), rng.randint(0, 3)))))
    start = time.perf_counter()
    text = to_html(run_view(nodes))
    elapsed = time.perf_counter() - start
    assert elapsed < 3, f"took {elapsed:.2f}s"
    layout = _layout(nodes)
    boxes = list(layout.boxes.values())
    assert len(boxes) == 200
    for i, a in enumerate(boxes):
        assert 0 <= a[0] and a[0] + NODE_W <= layout.width
        assert 0 <= a[1] and a[1] + NODE_H <= layout.height
        for b in boxes[i + 1:]:
            assert not boxes_overlap(a, b)
    page = parse_html(text)
    assert len(page.node_titles) == 200
    assert len(page.edge_titles) == sum(len(n["parents"]) for n in nodes)


# -- errors and dispatch ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_render_dispatches(fmt: str) -> None:
    view = diamond()
    expected = {"mermaid": to_mermaid, "dot": to_dot, "html": to_html}[fmt](view)
    assert render(view, fmt) == expected


@pytest.mark.parametrize("fmt", ["svg", "", "MERMAID", None])
def test_unknown_format(fmt: Any) -> None:
    with pytest.raises(UnknownFormatError) as info:
        render(three_step(), fmt)
    assert isinstance(info.value, PipekitError) and isinstance(info.value, ValueError)
    assert repr(fmt) in str(info.value)
    assert "mermaid, dot, html" in str(info.value)
    assert info.value.format == fmt and info.value.choices == FORMATS


@pytest.mark.parametrize("fmt", FORMATS)
def test_malformed_views_are_refused(fmt: str) -> None:
    with pytest.raises(DuplicateStepError):
        render(run_view([node("a"), node("a")]), fmt)
    with pytest.raises(UnknownParentError, match="'ghost'"):
        render(run_view([node("a", ["ghost"])]), fmt)
    with pytest.raises(PipelineCycleError, match="cycle"):
        render(run_view([node("a", ["b"]), node("b", ["a"])]), fmt)


@pytest.mark.parametrize(("started", "ended", "shown"), [
    (0.0, 0.42, "0.42s"),
    (0.0, 12.34, "12.3s"),
    (0.0, 245.0, "4m 05s"),
    (0.0, 7380.0, "2h 03m"),
    (None, 5.0, None),
    (5.0, None, None),
    (5.0, 1.0, None),
    (float("nan"), 1.0, None),
])
def test_durations(started: Any, ended: Any, shown: str | None) -> None:
    labels, _, _ = check_mermaid(to_mermaid(run_view([node("a", started=started,
                                                             ended=ended)])))
    assert labels["n0"] == "a<br/>completed" + (f" ({shown})" if shown else "")
