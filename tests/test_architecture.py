"""The module map stays true (DESIGN.md §1): every "never" there is a test here.

The imports of every module are read with :mod:`ast`, never by importing it, so a rule holds
for code paths no test runs. Imports made inside functions count like any other; imports
under ``if TYPE_CHECKING:`` do not (they never run). A relative import is resolved to the
module it names, and importing a package means running its ``__init__``: ``from .store.db
import x`` in ``pipekit.artifacts`` makes ``pipekit.artifacts`` depend on both
``pipekit.store.db`` and ``pipekit.store``.

The last part builds a wheel, installs it in a fresh virtual environment and imports every
module from there, because the editable install that ``make`` uses hides packaging mistakes.
"""

from __future__ import annotations

import ast
import configparser
import graphlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tokenize
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent

#: Source folder -> the import package it installs as (setup.cfg ``package_dir``).
SOURCE_PACKAGES = {"pipekit": "pipekit", "plugins": "pipekit_plugins",
                   "migrations": "pipekit_migrations"}

#: What ``plugins/`` may import from pipekit: module -> the names it may take from it (None:
#: any). This is DESIGN §1's plugin surface and docs/plugins.md's "What a plugin may import":
#: plugins may persist through the store (``plugins/cache.py`` and ``plugins/monitor.py`` do),
#: read settings (the local executors pass the store's location to step processes), receive
#: the node vocabulary hooks are called with, read monitor specs, and fire observer hooks.
PLUGIN_SURFACE: dict[str, frozenset[str] | None] = {
    "pipekit": None,
    "pipekit.models": None,
    "pipekit.errors": None,
    "pipekit.executor": None,
    "pipekit.worker": None,
    "pipekit.artifacts": frozenset({"Serializer"}),
    "pipekit.testing": None,
    "pipekit.store": None,  # plugins may persist (DESIGN §1, docs/plugins.md)
    "pipekit.config": None,
    "pipekit.nodes": None,  # Node, NodeStatus, RunInfo: what hooks receive
    "pipekit.monitoring": frozenset({"MonitorSpec", "spec_of"}),
    "pipekit.plugin_manager": frozenset({"has_impls", "notify"}),  # a plugin firing observers
    "pipekit.progress": frozenset({"Follower"}),  # the progress plugin draws a run
}

#: What ``pipekit.store.*`` may import from pipekit, besides the store itself.
STORE_MAY_IMPORT = frozenset({"pipekit.errors", "pipekit.config", "pipekit.models",
                              "pipekit.hashing", "pipekit.retry"})

#: Modules that are pure: no store, no hooks, no configuration, no I/O.
PURE = ("pipekit.dag", "pipekit.references", "pipekit.render", "pipekit.plots")
#: What a pure module may import from pipekit, besides its own package (``render.*``).
PURE_MAY_IMPORT = frozenset({"pipekit.errors", "pipekit.hashing", "pipekit.models",
                             "pipekit.dag"})
#: Outside pipekit a pure module imports only the standard library without these (they
#: touch files, processes, the network, threads or the log), and attrs.
IO_MODULES = frozenset({"os", "io", "pathlib", "shutil", "tempfile", "glob", "fileinput",
                        "subprocess", "socket", "ssl", "select", "selectors", "signal",
                        "sqlite3", "dbm", "shelve", "http", "urllib", "ftplib", "smtplib",
                        "webbrowser", "multiprocessing", "threading", "concurrent", "asyncio",
                        "logging", "atexit"})
PURE_THIRD_PARTY = frozenset({"attrs"})

#: The layers the library never imports.
FRONT_ENDS = ("pipekit.cli", "pipekit.ui", "pipekit.__main__")

MAX_LINES = 600


# -- the import-graph builder ---------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One module that running a module imports.

    :param name: the module's dotted name, relative imports resolved.
    :param line: the line of the import statement.
    :param in_function: the statement is inside a function (it runs when called).
    :param via: for a package imported because one of its modules was, that module.
    """

    name: str
    line: int
    in_function: bool = False
    via: str | None = None


_DYNAMIC = {"import_module", "__import__", "find_spec"}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _parents(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: frozenset[str]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.own = {module, *_parents(module)}  # already running when this module runs
        self.depth = 0
        self.found: list[Import] = []
        self.seen: set[tuple[str, int]] = set()

    def resolve(self, name: str, level: int, line: int) -> str:
        if not level:
            return name
        base = self.package.split(".") if self.package else []
        if level > len(base):
            raise ValueError(f"{self.module}:{line}: relative import beyond the top package")
        base = base[:len(base) - (level - 1)]
        return ".".join([*base, name] if name else base)

    def add(self, name: str, line: int, via: str | None = None) -> None:
        if (name, line) not in self.seen:  # once a statement: ``from p import a, b``
            self.seen.add((name, line))
            self.found.append(Import(name, line, self.depth > 0, via))
        if via is None:
            for parent in _parents(name):
                if parent in self.known and parent not in self.own:
                    self.add(parent, line, via=name)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
                          ) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_Lambda = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):  # never runs: only its else branch counts
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self.resolve(node.module or "", node.level, node.lineno)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self.add(submodule if submodule in self.known else base, node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if called in _DYNAMIC and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.args[0].value
            level = len(name) - len(name.lstrip("."))
            self.add(self.resolve(name[level:], level, node.lineno), node.lineno)
        self.generic_visit(node)


def imports_of(source: str, module: str, *, is_package: bool = False,
               known: Iterable[str] = (), filename: str = "<string>") -> list[Import]:
    """Every module that running ``source`` (the module ``module``) imports, in order.

    :param is_package: ``source`` is the package's ``__init__`` (relative imports start there).
    :param known: the project's modules; ``from p import n`` names the module ``p.n`` when it
        is one of them, else ``p``.
    """
    collector = _Collector(module, is_package, frozenset(known))
    collector.visit(ast.parse(source, filename))
    return collector.found


@dataclass(frozen=True)
class Module:
    name: str
    path: Path

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def rel(self) -> str:
        return self.path.relative_to(ROOT).as_posix()


def module_name(path: Path, folder: str = "pipekit") -> str:
    """``pipekit/store/__init__.py`` -> ``pipekit.store``; ``plugins/cache.py`` ->
    ``pipekit_plugins.cache`` (the name it is installed and imported under).
    """
    parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([SOURCE_PACKAGES[folder], *parts])


def project_modules(*folders: str) -> list[Module]:
    return [Module(module_name(path, folder), path)
            for folder in (folders or SOURCE_PACKAGES)
            for path in sorted((ROOT / folder).rglob("*.py"))
            if "__pycache__" not in path.parts]


KNOWN = frozenset(m.name for m in project_modules())


def imports(module: Module) -> list[Import]:
    return imports_of(module.path.read_text(), module.name, is_package=module.is_package,
                      known=KNOWN, filename=str(module.path))


def in_package(name: str, packages: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def import_graph(modules: Iterable[Module]) -> dict[str, dict[str, int]]:
    """``{module: {imported pipekit module: first line}}`` over ``modules``."""
    graph: dict[str, dict[str, int]] = {}
    for module in modules:
        edges = graph.setdefault(module.name, {})
        for imp in imports(module):
            if in_package(imp.name, ["pipekit"]) and imp.name in KNOWN \
                    and imp.name != module.name:
                edges.setdefault(imp.name, imp.line)
    return graph


def violations(modules: Iterable[Module], allowed) -> list[str]:
    """``"path:line imports name"`` for every import ``allowed(module, imp)`` refuses."""
    return [f"{m.rel}:{imp.line} imports {imp.name}"
            + (f" (running {imp.via})" if imp.via else "")
            for m in modules for imp in imports(m) if not allowed(m, imp)]


# -- the builder, tested --------------------------------------------------------------------------

TOY = frozenset({"pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c", "pkg.sub.d"})


def names(source: str, module: str = "pkg.a", *, is_package: bool = False) -> list[str]:
    return [i.name for i in imports_of(textwrap.dedent(source), module,
                                       is_package=is_package, known=TOY)]


@pytest.mark.parametrize(("source", "module", "expected"), [
    ("import json", "pkg.a", ["json"]),
    ("import pkg.sub.c as c", "pkg.a", ["pkg.sub.c", "pkg.sub"]),
    ("from pkg.sub import c", "pkg.a", ["pkg.sub.c", "pkg.sub"]),
    ("from pkg.sub import helper", "pkg.a", ["pkg.sub"]),
    ("from . import b", "pkg.a", ["pkg.b"]),
    ("from . import something", "pkg.a", ["pkg"]),
    ("from .sub.c import z", "pkg.a", ["pkg.sub.c", "pkg.sub"]),
    ("from ..b import y", "pkg.sub.c", ["pkg.b"]),
    ("from .. import b, sub", "pkg.sub.c", ["pkg.b", "pkg.sub"]),
    ("from . import d", "pkg.sub.c", ["pkg.sub.d"]),
    ("from .d import x", "pkg.sub.c", ["pkg.sub.d"]),
    ("import importlib\nimportlib.import_module('pkg.b')", "pkg.a", ["importlib", "pkg.b"]),
    ("import importlib\nimportlib.import_module('.d', __package__)", "pkg.sub.c",
     ["importlib", "pkg.sub.d"]),
    ("from __future__ import annotations", "pkg.a", ["__future__"]),
])
def test_the_builder_resolves_each_form_of_import(source, module, expected):
    assert names(source, module) == expected


def test_in_a_package_init_relative_imports_start_at_the_package():
    assert names("from .c import x\nfrom . import d\nfrom .. import b", "pkg.sub",
                 is_package=True) == ["pkg.sub.c", "pkg.sub.d", "pkg.b"]


def test_importing_a_package_runs_its_init_but_not_the_importers_own_packages():
    found = imports_of("from pkg.sub.c import x", "pkg.sub.d", known=TOY)
    assert found == [Import("pkg.sub.c", 1)]  # pkg and pkg.sub are already running
    found = imports_of("from pkg.sub.c import x", "pkg.a", known=TOY)
    assert found == [Import("pkg.sub.c", 1), Import("pkg.sub", 1, via="pkg.sub.c")]


def test_imports_inside_functions_count_and_say_so():
    found = imports_of(textwrap.dedent("""\
        import json

        class K:
            import csv

            def method(self):
                from . import b

        async def outer():
            def inner():
                import pkg.sub.c
            return inner

        def f(): return __import__("pkg.sub.d")
        g = lambda: __import__("pkg.b")
        """), "pkg.a", known=TOY)
    assert [(i.name, i.line, i.in_function) for i in found] == [
        ("json", 1, False), ("csv", 4, False), ("pkg.b", 7, True),
        ("pkg.sub.c", 11, True), ("pkg.sub", 11, True),
        ("pkg.sub.d", 14, True), ("pkg.sub", 14, True), ("pkg.b", 15, True)]


def test_type_checking_imports_do_not_run_so_they_do_not_count():
    assert names("""\
        import typing
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from . import b
        if typing.TYPE_CHECKING:
            import pkg.sub.c
        else:
            import pkg.sub.d
        """) == ["typing", "typing", "pkg.sub.d", "pkg.sub"]


def test_mentions_that_are_not_imports_are_ignored():
    assert names('"""import pkg.b"""\nx = "pkg.sub.c"\ny = getattr(x, "import_module")\n') \
        == []


def test_a_relative_import_above_the_top_package_is_an_error():
    with pytest.raises(ValueError, match="beyond the top package"):
        names("from ... import b", "pkg.a")


@given(package=st.lists(st.sampled_from(["p", "q", "sub", "x1"]), min_size=1, max_size=4),
       level=st.integers(min_value=1, max_value=4),
       target=st.lists(st.sampled_from(["m", "n", "deep"]), max_size=3),
       is_package=st.booleans())
def test_relative_imports_resolve_as_importlib_resolves_them(package, level, target,
                                                             is_package):
    """Oracle: :func:`importlib.util.resolve_name`, which the import system itself uses."""
    module = ".".join(package) if is_package else ".".join([*package, "mod"])
    relative = "." * level + ".".join(target)
    try:
        expected = importlib.util.resolve_name(relative, ".".join(package))
    except ImportError:
        with pytest.raises(ValueError):
            imports_of(f"from {relative} import name", module, is_package=is_package)
        return
    found = imports_of(f"from {relative} import name", module, is_package=is_package)
    assert [i.name for i in found if i.via is None] == [expected]


def test_the_builder_reads_every_project_module():
    modules = project_modules()
    assert {"pipekit", "pipekit.store", "pipekit.store.db", "pipekit.cli.tasks",
            "pipekit_plugins.executors.local", "pipekit_migrations"} <= KNOWN
    graph = import_graph(project_modules("pipekit"))
    assert "pipekit.store" in graph["pipekit.artifacts"]
    assert "pipekit.store.blobs" in graph["pipekit.artifacts"]
    assert len(modules) == len(KNOWN) > 40


# -- the core never imports a plugin --------------------------------------------------------------

PLUGIN_PACKAGES = {"plugins", "pipekit_plugins"}


def plugin_imports(source: str, module: str = "pipekit.cli") -> list[str]:
    """Every import of a plugin package in ``source``, as ``"line: what"``."""
    return [f"{imp.line}: {imp.name}" for imp in imports_of(source, module, known=KNOWN)
            if imp.name.split(".")[0] in PLUGIN_PACKAGES]


@pytest.mark.parametrize("source", [
    "import plugins",
    "import pipekit_plugins.serializers as s",
    "from pipekit_plugins import serializers",
    "from plugins.serializers import JsonSerializer",
    "import importlib\nimportlib.import_module('pipekit_plugins.serializers')",
    "__import__('plugins')",
])
def test_the_import_detector_finds_every_form(source):
    assert plugin_imports(source)


def test_the_import_detector_ignores_mentions_that_are_not_imports():
    # Relative imports resolve inside ``pipekit`` (``from . import plugins`` in pipekit/cli
    # is the ``pipekit plugins`` command), never to a top-level package.
    assert plugin_imports('"""Built-ins live in pipekit_plugins."""\n'
                          "from . import plugins\nfrom .plugins import x\n"
                          "import pipekit.plugins\nimport pluggy\n"
                          "x = 'pipekit_plugins.serializers'\n") == []


def test_the_core_never_imports_a_plugin():
    modules = project_modules("pipekit")
    assert len(modules) > 10
    assert violations(modules, lambda m, imp: imp.name.split(".")[0]
                      not in PLUGIN_PACKAGES) == []


# -- the other nevers -----------------------------------------------------------------------------


def reachable(graph: dict[str, dict[str, int]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), {}):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def cycle_report(graph: dict[str, dict[str, int]]) -> str | None:
    """None, or the first import circle graphlib finds, one import a line with where it is
    made, followed by every module that is in some circle.
    """
    try:
        graphlib.TopologicalSorter({m: set(e) for m, e in graph.items()}).prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1][::-1]  # graphlib lists it against the direction of the imports
        lines = [f"  {a} imports {b} (line {graph[a][b]})"
                 for a, b in zip(cycle, cycle[1:], strict=False)]
        tangled = sorted(m for m in graph if m in reachable(graph, m))
        return "\n".join([*lines, f"modules in a circle ({len(tangled)}): {', '.join(tangled)}"])
    return None


def test_the_cycle_report_names_each_import_of_the_circle():
    assert cycle_report({"a": {"b": 3}, "b": {}}) is None
    report = cycle_report({"a": {"b": 3}, "b": {"c": 5}, "c": {"a": 7}, "d": {"a": 1}})
    lines = report.splitlines()
    assert len(lines) == 4 and "  a imports b (line 3)" in lines and \
        "  c imports a (line 7)" in lines and lines[-1] == "modules in a circle (3): a, b, c"


def test_no_import_circle():
    """Counting imports inside functions: a function-level import hides a circle, it does
    not remove it (STYLE.md principle 16).
    """
    report = cycle_report(import_graph(project_modules("pipekit")))
    assert report is None, f"pipekit's modules import each other in a circle:\n{report}"


#: DESIGN §1's levels: a module imports only from its own level or lower. A package's level
#: is its modules' level; the top package (the public API) sits above everything.
LEVELS: dict[str, int] = {
    **dict.fromkeys(["errors", "config", "models", "nodes", "hashing", "hookspecs", "redact",
                     "tracebacks", "retry"],
                    0),
    **dict.fromkeys(["context", "plugin_manager", "store", "crash"], 1),
    **dict.fromkeys(["dag", "references", "render", "params", "artifacts", "capture", "caching",
                     "monitoring", "versioning", "storage", "alias", "plots"], 2),
    **dict.fromkeys(["logger", "finish", "connect", "script", "task", "executor"], 3),
    **dict.fromkeys(["functions", "worker", "script_main", "definition", "launch", "runs",
                     "restore", "runner", "views"], 4),
    **dict.fromkeys(["controller", "decorator", "progress", "testing", "agent"], 5),
    **dict.fromkeys(["cli", "ui", "automation", "__main__"], 6),
    "": 7,  # pipekit/__init__.py
}


def level_of(module: str) -> int:
    """The level of a ``pipekit.*`` module (``KeyError`` for one the map does not place)."""
    parts = module.split(".")
    return LEVELS[parts[1] if len(parts) > 1 else ""]


def test_every_module_has_a_level():
    unplaced = [m.name for m in project_modules("pipekit")
                if (m.name.split(".") + [""])[1] not in LEVELS]
    assert unplaced == [], f"add these modules to LEVELS (and DESIGN §1's map): {unplaced}"


def test_modules_import_only_their_level_or_lower():
    """Package ``__init__`` files run on any import of their package: an import of
    ``pipekit.x`` by a module of level L needs only ``x`` itself to sit at L or below.
    """
    upward = [f"{m.rel}:{line} ({level_of(m.name)}) imports {name} ({level_of(name)})"
              for m in project_modules("pipekit")
              for name, line in import_graph([m]).get(m.name, {}).items()
              if name != "pipekit" and level_of(name) > level_of(m.name)]
    assert upward == [], "imports that go up DESIGN §1's levels:\n" + "\n".join(upward)


def test_no_module_reads_its_siblings_off_a_package_that_imports_it():
    """``from . import x`` takes ``x`` from the package's namespace, so it depends on the
    package's ``__init__``; when that ``__init__`` imports the module back (a facade over
    its sections), the pair is a circle that the module-level reading above does not see.
    Import the sibling by its own name instead (``import pipekit.store.tables as t``).
    """
    graph = import_graph(project_modules("pipekit"))
    for module in project_modules("pipekit"):
        package = module.name if module.is_package else module.name.rpartition(".")[0]
        for node in ast.walk(ast.parse(module.path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and node.module is None:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                if base != module.name and base in KNOWN:
                    graph[module.name].setdefault(base, node.lineno)
    report = cycle_report(graph)
    assert report is None, f"modules and their packages import each other:\n{report}"


def test_the_store_knows_no_run_loop_and_no_pipeline_api():
    store = [m for m in project_modules("pipekit") if in_package(m.name, ["pipekit.store"])]
    assert len(store) > 3
    assert violations(store, lambda m, imp: not in_package(imp.name, ["pipekit"])
                      or in_package(imp.name, ["pipekit.store", *STORE_MAY_IMPORT])) == []


def _pure(module: Module, imp: Import) -> bool:
    if in_package(imp.name, ["pipekit"]):
        own = module.name.split(".")[:2]  # pipekit.render.* may import pipekit.render.*
        return in_package(imp.name, [*PURE_MAY_IMPORT, ".".join(own)])
    top = imp.name.split(".")[0]
    return top in PURE_THIRD_PARTY or (top in sys.stdlib_module_names and top not in IO_MODULES)


def test_dag_references_and_render_are_pure():
    pure = [m for m in project_modules("pipekit") if in_package(m.name, PURE)]
    assert {"pipekit.dag", "pipekit.references"} <= {m.name for m in pure}
    assert violations(pure, _pure) == []


@pytest.mark.parametrize(("source", "module", "pure"), [
    ("import graphlib, heapq, re\nfrom .errors import DagError", "pipekit.dag", True),
    ("import attrs\nfrom .hashing import digest_bytes", "pipekit.references", True),
    ("from ..dag import Dag\nfrom .layout import layout", "pipekit.render.mermaid", True),
    ("def f():\n    from ..store import get_store", "pipekit.render.html", False),
    ("import subprocess", "pipekit.dag", False),
    ("from pathlib import Path", "pipekit.render.html", False),
    ("from .config import get_settings", "pipekit.references", False),
    ("from .plugin_manager import notify", "pipekit.dag", False),
    ("import pluggy", "pipekit.dag", False),
])
def test_the_purity_rule(source, module, pure):
    found = imports_of(source, module, known=KNOWN | {"pipekit.render.layout"})
    assert all(_pure(Module(module, ROOT), imp) for imp in found) is pure


def test_the_library_never_imports_its_cli_or_ui():
    library = [m for m in project_modules("pipekit") if not in_package(m.name, FRONT_ENDS)]
    assert violations(library, lambda m, imp: not in_package(imp.name, FRONT_ENDS)) == []


def _on_the_surface(module: Module) -> Iterator[str]:
    """``"path:line what"`` for each pipekit import of ``module`` off the plugin surface."""
    tree = ast.parse(module.path.read_text(), str(module.path))
    statements = {node.lineno: node for node in ast.walk(tree)
                  if isinstance(node, (ast.Import, ast.ImportFrom))}
    for imp in imports(module):
        if not in_package(imp.name, ["pipekit"]):
            continue
        if imp.name not in PLUGIN_SURFACE:
            yield f"{module.rel}:{imp.line} imports {imp.name}"
            continue
        allowed = PLUGIN_SURFACE[imp.name]
        node = statements.get(imp.line)
        if allowed is not None and isinstance(node, ast.ImportFrom) and imp.via is None:
            taken = {alias.name for alias in node.names} - allowed
            if taken:
                yield f"{module.rel}:{imp.line} takes {sorted(taken)} from {imp.name}"


def test_plugins_import_only_the_plugin_surface():
    plugins = project_modules("plugins")
    assert len(plugins) > 5
    off = [hit for module in plugins for hit in _on_the_surface(module)]
    assert off == [], "plugins/ reach past the plugin surface (PLUGIN_SURFACE):\n" + \
        "\n".join(off)


def test_migrations_never_import_the_live_tables():
    """A migration carries frozen copies of the models it changes: the live ``tables``
    module changes with later migrations, an old migration must not.
    """
    migrations = project_modules("migrations")
    assert len(migrations) >= 2
    assert violations(migrations, lambda m, imp: not in_package(
        imp.name, ["pipekit.store.tables"])) == []


def unmarked_function_imports(source: str, module: str = "pipekit.x", *,
                              is_package: bool = False) -> list[int]:
    """Lines of imports inside functions with no comment saying "lazy" on the same line or
    in the block of comment lines just above it or above its group of consecutive imports
    (``# lazy: keeps import pipekit fast``).
    """
    comments = {tok.start[0]: tok.string for tok in
                tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    text = source.splitlines()

    def marked(line: int) -> bool:
        if "lazy" in comments.get(line, "").lower():
            return True
        if not text[line - 1].lstrip().startswith(("import ", "from ")):
            return False  # (an import after other code on its line is in no group)
        above = line - 1  # up through the comments and the imports of the same group
        while above >= 1 and text[above - 1].lstrip().startswith(("#", "import ", "from ")):
            if "lazy" in comments.get(above, "").lower():
                return True
            above -= 1
        return False

    lines = sorted({imp.line for imp in imports_of(source, module, is_package=is_package,
                                                   known=KNOWN) if imp.in_function})
    return [line for line in lines if not marked(line)]


def test_the_lazy_marker_is_a_comment_next_to_the_import():
    source = textwrap.dedent("""\
        import json  # not in a function: no marker needed

        def f():
            import numpy  # lazy: heavy
            # lazy: only `pipekit run` needs it
            from .runner import Runner
            import csv  # (one marker serves a group of consecutive imports)
            x = "lazy"; import zlib
            import pandas  # lazy: heavy
            import pyarrow
            # lazy: a block of comments may explain why,
            # over several lines
            import polars
            y = 1
            import json
            return numpy, Runner, csv, x, zlib, y
        """)
    assert unmarked_function_imports(source) == [8, 15]


def test_function_level_imports_say_they_are_lazy():
    """A function-level import exists only to keep ``import pipekit`` fast, and says so."""
    found = {m.rel: lines for m in project_modules("pipekit")
             if (lines := unmarked_function_imports(m.path.read_text(), m.name,
                                                    is_package=m.is_package))}
    assert found == {}, "function-level imports without a '# lazy: why' comment: " + \
        json.dumps(found)


def test_no_module_is_over_600_lines():
    sizes = {m.rel: n for m in project_modules("pipekit", "plugins")
             if (n := len(m.path.read_text().splitlines())) > MAX_LINES}
    assert sizes == {}, f"split these along the data flow (STYLE.md 14): {sizes}"


# -- the README's layout --------------------------------------------------------------------------


def readme_layout(text: str) -> dict[str, str]:
    """``{path: description}`` from the README's "## Layout" section.

    The section holds one fenced block, a tree indented two spaces a level: a folder line
    ends in ``/``, every other line names a file in the folder above it. Each name is
    followed by two or more spaces and what it is for::

        pipekit/            the library
          task.py           the Task facade
          store/            the store
            db.py           opening the database
    """
    section = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "README.md has no '## Layout' section"
    block = re.search(r"^```\w*\n(.*?)^```", section.group(1), re.S | re.M)
    assert block, "the Layout section has no fenced block"
    entries: dict[str, str] = {}
    folders: list[str] = []
    for line in block.group(1).splitlines():
        if not line.strip():
            continue
        match = re.fullmatch(r"( *)(\S+)(?: {2,}(\S.*))?", line)
        assert match, f"not 'name  description': {line!r}"
        indent, name, description = len(match.group(1)), match.group(2), match.group(3)
        assert indent % 2 == 0 and indent // 2 <= len(folders), f"bad indent: {line!r}"
        del folders[indent // 2:]
        path = "".join(folders) + name
        assert path not in entries, f"listed twice: {path}"
        entries[path] = description or ""
        if name.endswith("/"):
            folders.append(name)
    return entries


def test_the_layout_parser_reads_a_tree():
    text = ("# x\n\n## Layout\n\n```text\npipekit/      the library\n  a.py        A\n"
            "  store/      S\n    db.py     D\n  b.py        B\nplugins/     P\n"
            "  c.py        C\n```\n\n## Next\n\n```text\nnot.py  no\n```\n")
    assert readme_layout(text) == {
        "pipekit/": "the library", "pipekit/a.py": "A", "pipekit/store/": "S",
        "pipekit/store/db.py": "D", "pipekit/b.py": "B", "plugins/": "P", "plugins/c.py": "C"}
    with pytest.raises(AssertionError, match="bad indent"):
        readme_layout("## Layout\n```\npipekit/  x\n      a.py  y\n```\n")


def test_readme_layout_lists_every_module():
    """One line per module of pipekit/ and plugins/, each saying what it is for, and no
    line for a module that is gone.
    """
    listed = readme_layout((ROOT / "README.md").read_text())
    modules = {m.rel for m in project_modules("pipekit", "plugins")}
    missing = sorted(modules - set(listed))
    gone = sorted(p for p in listed if p.endswith(".py") and p.split("/")[0] in
                  ("pipekit", "plugins") and p not in modules)
    undescribed = sorted(p for p in modules & set(listed) if not listed[p])
    assert (missing, gone, undescribed) == ([], [], []), \
        f"README.md '## Layout': add {missing}, remove {gone}, describe {undescribed}"


# -- packaging ------------------------------------------------------------------------------------


def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def test_setup_cfg_lists_every_package():
    """setup.cfg names its packages one by one; a new package must be added there."""
    listed = set(_setup_cfg()["options"]["packages"].split())
    packages = {m.name for m in project_modules() if m.is_package}
    assert listed == packages


def plugin_entry_points() -> dict[str, str]:
    """setup.cfg's ``pipekit =`` entry points: ``{name: module}``."""
    lines = _setup_cfg()["options.entry_points"]["pipekit"].strip().splitlines()
    return {name.strip(): value.strip() for name, _, value in
            (line.partition("=") for line in lines)}


def public_modules() -> list[str]:
    """Every module of the source tree a user or plugin may import: all but those whose name
    has a part starting with ``_`` (``pipekit.__main__`` would run the CLI).
    """
    return sorted(m.name for m in project_modules()
                  if not any(part.startswith("_") for part in m.name.split(".")))


@dataclass(frozen=True)
class Installed:
    wheel: Path
    bin: Path  # the fresh venv's bin folder


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """A fresh venv with pipekit installed from a wheel built from the sources.

    The wheel is built from a copy of the sources, so setuptools' ``build/`` and
    ``*.egg-info`` never land in the work tree. The build uses this venv's setuptools (no
    build isolation: nothing to download); the dependencies come from pip's cache or the
    package index. Built once for the module (a few seconds with a warm cache).
    """
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in SOURCE_PACKAGES:
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run = dict(capture_output=True, text=True, timeout=300, cwd=base)
    proc = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation",
                           "-w", str(base / "dist"), str(src)], **run)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # no packaging warning of pipekit's own (e.g. setuptools' on license classifiers)
    warned = [line for line in (proc.stdout + proc.stderr).splitlines()
              if "Warning" in line or "deprecated" in line.lower()]
    assert warned == [], warned
    wheels = list((base / "dist").glob("pipekit-*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    proc = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], **run)
    assert proc.returncode == 0, proc.stderr
    # This venv's pip installs into the new one: no pip of its own to bootstrap there.
    proc = subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install",
                           str(wheels[0])], **run)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return Installed(wheel=wheels[0], bin=venv / "bin")


def _run_in(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIPEKIT_HOME"] = str(cwd / "pipekit-home")
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


IMPORT_ALL = """\
import importlib, importlib.metadata as md, json, sys
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
eps = md.distribution("pipekit").entry_points
for ep in eps:
    try:
        ep.load()
    except BaseException as exc:
        failed[f"entry point {ep.group}:{ep.name}"] = f"{type(exc).__name__}: {exc}"
import pipekit
print(json.dumps({"failed": failed, "file": pipekit.__file__,
                  "entry_points": sorted(f"{ep.group}:{ep.name}={ep.value}" for ep in eps)}))
"""


def test_the_wheel_holds_the_three_packages_and_nothing_else(installed):
    """``plugins/`` and ``migrations/`` install under pipekit's names, never as top-level
    ``plugins`` / ``migrations``; tests and docs stay out.
    """
    with zipfile.ZipFile(installed.wheel) as wheel:
        tops = {name.split("/")[0] for name in wheel.namelist()}
        files = {name for name in wheel.namelist() if name.endswith(".py")}
    version = _setup_cfg()["metadata"]["version"]
    assert tops == {*SOURCE_PACKAGES.values(), f"pipekit-{version}.dist-info"}
    assert files == {"/".join([m.name.split(".")[0], *Path(m.rel).parts[1:]])
                     for m in project_modules()}


#: modules that import an optional extra's package, which the bare wheel does not install
NEEDS_EXTRA = {"pipekit.ui.app": "starlette"}


def test_the_wheel_installs_and_imports_every_public_module(installed, tmp_path):
    """Every module imports from the bare wheel, but those made for an extra, which fail
    only for want of that extra's package.
    """
    modules = public_modules()
    assert {"pipekit.automation", "pipekit.automation.controller", "pipekit.cli",
            "pipekit.store", "pipekit_plugins.executors.local"} <= set(modules)
    proc = _run_in(str(installed.bin / "python"), "-c", IMPORT_ALL, *modules, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["failed"] == {module: f"ModuleNotFoundError: No module named '{package}'"
                                for module, package in NEEDS_EXTRA.items()}
    assert Path(report["file"]).is_relative_to(installed.bin.parent)  # not the source tree
    plugins = plugin_entry_points()
    assert len(plugins) > 5
    assert report["entry_points"] == sorted(
        [f"pipekit:{name}={value}" for name, value in plugins.items()]
        + ["console_scripts:pipekit=pipekit.cli:main"])

    proc = _run_in(str(installed.bin / "pipekit"), "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: pipekit")
    proc = _run_in(str(installed.bin / "pipekit"), "plugins", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {p["name"] for p in json.loads(proc.stdout) if p["dist"] == "pipekit"} == set(plugins)
