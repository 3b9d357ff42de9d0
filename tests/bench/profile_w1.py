"""Where W1's per-step time goes: the controller chain of PERFORMANCE.md's W1 (inline
executor), counted and profiled. A diagnostic, not part of ``make bench``. With
``--workload w3``, the same for W3's cache hits: a fresh store is populated by one run of the
chain with every step cached, then each measurement below runs in a **new process** of its
own on that store (as ``make bench`` times it) and covers the whole pipeline call of that
second, all-cached run (definition included).

Prints, per step: write transactions (``pipekit.store.db.write`` calls), SQL statements by
kind (SQLite's trace callback, so peewee-built and hand-written statements alike), store and
plugin-manager lookups; then the top frames by own and by total time (cProfile, whose
overhead inflates small calls: read the ranking, not the absolute numbers), and, when
pyinstrument is installed (``pip install pyinstrument``; not a pipekit dependency), its
sampled call tree.

    .venv/bin/python tests/bench/profile_w1.py [--workload w1|w3] [--steps 1000]
        [--no-cprofile] [--no-tree]
"""

from __future__ import annotations

import argparse
import atexit
import collections
import cProfile
import io
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pipekit
from pipekit import PipelineController


def inc(x):
    return x + 1


def fresh_store() -> str:
    """Point pipekit at a new, empty store (removed when this script exits); returns its
    folder.
    """
    home = tempfile.mkdtemp(prefix="pipekit-profile-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    pipekit.configure(home=home)
    return home


def define(n: int, cache: bool = False) -> PipelineController:
    pipe = PipelineController(name="w3" if cache else "w1", project="bench")
    pipe.add_function_step("s0", inc, function_kwargs={"x": 0}, function_return=["x"],
                           cache_executed_step=cache)
    for i in range(1, n):
        pipe.add_function_step(f"s{i}", inc, function_kwargs={"x": f"${{s{i - 1}.x}}"},
                               function_return=["x"], cache_executed_step=cache)
    return pipe


class Scenario:
    """What is measured: ``prepare()`` (untimed, unprofiled) returns what ``measured()``
    takes; ``measured()`` is the part counted and profiled, and returns the controller.
    """

    def __init__(self, title: str, prepare: Callable[[], Any],
                 measured: Callable[[Any], PipelineController],
                 check: Callable[[PipelineController], None]) -> None:
        self.title, self.prepare, self.measured, self.check = title, prepare, measured, check

    def run(self) -> PipelineController:
        pipe = self.measured(self.prepare())
        self.check(pipe)
        return pipe


def w1_scenario(n: int) -> Scenario:
    def prepare() -> PipelineController:
        fresh_store()
        return define(n)

    def measured(pipe: PipelineController) -> PipelineController:
        pipe.start_locally(run_pipeline_steps_locally=True, executor="inline")
        return pipe

    return Scenario(f"W1 controller, inline, N={n}; the run only, definition excluded",
                    prepare, measured, lambda pipe: None)


def w3_scenario(n: int) -> Scenario:
    """The all-cached second run, on the store this process is pointed at."""
    def measured(_: Any) -> PipelineController:
        pipe = define(n, cache=True)
        pipe.start_locally(run_pipeline_steps_locally=True, executor="inline")
        return pipe

    def check(pipe: PipelineController) -> None:
        statuses = collections.Counter(node.status for node in pipe.get_pipeline_dag().values())
        assert statuses == {"cached": n}, f"not every step was a cache hit: {dict(statuses)}"

    return Scenario(f"W3 cache hits, new process, N={n}; whole pipeline call, definition "
                    "included", lambda: None, measured, check)


def chain(n: int) -> tuple[float, float]:
    """Define and run a W1 chain in a fresh store; returns (define, run) seconds."""
    fresh_store()
    start = time.perf_counter()
    pipe = define(n)
    defined = time.perf_counter()
    pipe.start_locally(run_pipeline_steps_locally=True, executor="inline")
    end = time.perf_counter()
    assert pipe.is_successful()
    return defined - start, end - defined


class Counter:
    """Wraps a module attribute (a function) and counts its calls while installed."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr)
        counts = self.counts

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[label] += 1
            return original(*args, **kwargs)

        setattr(owner, attr, counted)
        self._undo.append((owner, attr, original))

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()


_WORD = re.compile(r"\s*(\w+)(?:.*?\b(?:INTO|FROM|UPDATE)\s+\"?(\w+))?", re.S | re.I)


def statement_kind(sql: str) -> str:
    match = _WORD.match(sql)
    if match is None:
        return sql[:20]
    verb = match.group(1).upper()
    if verb == "UPDATE":
        table = re.match(r"\s*UPDATE\s+\"?(\w+)", sql, re.I)
        return f"UPDATE {table.group(1) if table else '?'}"
    return f"{verb} {match.group(2) or ''}".strip()


_SKIP = ("/pipekit/store/", "/peewee.py", "profile_w1.py", "/contextlib.py")


def caller(depth: int = 1) -> str:
    """``module.function:line`` of the nearest ``depth`` frames outside the store, peewee
    and this script (innermost first).
    """
    frame = sys._getframe(1)
    while frame is not None and any(part in frame.f_code.co_filename for part in _SKIP):
        frame = frame.f_back
    names = []
    while frame is not None and len(names) < depth:
        module = frame.f_globals.get("__name__", "?").removeprefix("pipekit.")
        names.append(f"{module}.{frame.f_code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return " < ".join(names) or "?"


def count(scenario: Scenario, n: int) -> None:
    import pipekit.runner  # noqa: F401 - loaded before its names are wrapped
    import pipekit.store
    import pipekit.store.base
    from pipekit.plugin_manager import get_plugin_manager

    get_plugin_manager()  # plugins (pipekit_plugins.*) loaded before their names are wrapped
    counter = Counter()
    by_caller: collections.Counter[str] = collections.Counter()
    original_write = pipekit.store.base.write

    def write(db: Any, fn: Callable[[], Any], dialect: Any) -> Any:
        by_caller[f"{caller()} -> {fn.__qualname__.split('.<locals>')[0]}"] += 1
        return original_write(db, fn, dialect)

    # Store.write calls the name bound in pipekit.store.base (imported from pipekit.store.db).
    pipekit.store.base.write = write
    modules = [m for name, m in list(sys.modules.items())
               if (name == "pipekit" or name.startswith(("pipekit.", "pipekit_plugins.")))
               and m is not None]
    counter.wrap(sys.modules["pipekit.plugin_manager"], "get_plugin_manager",
                 "get_plugin_manager()")
    plugin_manager = sys.modules["pipekit.plugin_manager"]
    original_impls = plugin_manager._impls

    def impls(hook_name: str) -> Any:
        counter.counts["hook calls through notify()/call_each()/call_first()"] += 1
        counter.counts[f"  of which {hook_name}"] += 1
        return original_impls(hook_name)

    plugin_manager._impls = impls
    for module in modules:
        for attr, label in (("has_impls", "has_impls()"), ("get_store", "get_store()"),
                            ("get_settings", "get_settings()")):
            if callable(getattr(module, attr, None)):
                counter.wrap(module, attr, label)
    statements: collections.Counter[str] = collections.Counter()
    selects: collections.Counter[str] = collections.Counter()

    def trace(sql: str) -> None:
        kind = statement_kind(sql)
        statements[kind] += 1
        if kind.startswith("SELECT"):
            selects[f"{kind} <- {caller(2)}"] += 1

    state = scenario.prepare()
    store = pipekit.store.get_store()
    store.db.connection().set_trace_callback(trace)
    try:
        pipe = scenario.measured(state)
    finally:
        store.db.connection().set_trace_callback(None)
        counter.restore()
        plugin_manager._impls = original_impls
        pipekit.store.base.write = original_write
    assert pipe.is_successful()
    scenario.check(pipe)
    total = sum(by_caller.values())

    print(f"\n== per step ({scenario.title})")
    print(f"  {total / n:7.2f}  write transactions (pipekit.store.db.write), by caller:")
    for label, value in by_caller.most_common():
        print(f"  {value / n:13.2f}  {label}")
    total = sum(statements.values())
    print(f"  {total / n:7.2f}  SQL statements, by kind:")
    for kind, value in statements.most_common():
        if value >= n / 100:
            print(f"  {value / n:13.2f}  {kind}")
    print("           reads (SELECT) by caller:")
    for label, value in selects.most_common():
        if value >= n / 100:
            print(f"  {value / n:13.2f}  {label}")
    for label, value in sorted(counter.counts.items(),
                               key=lambda item: (-item[1], item[0].startswith(" "))):
        if value and (value >= n / 100 or not label.startswith(" ")):
            print(f"  {value / n:7.2f}  {label}")


def cprofile(scenario: Scenario, n: int, top: int) -> None:
    state = scenario.prepare()
    profiler = cProfile.Profile()
    profiler.enable()
    pipe = scenario.measured(state)
    profiler.disable()
    scenario.check(pipe)
    for key, title in (("tottime", "own"), ("cumulative", "total")):
        buf = io.StringIO()
        stats = pstats.Stats(profiler, stream=buf)
        stats.sort_stats(key).print_stats(top)
        print(f"\n== top {top} frames by {title} time (cProfile, {scenario.title}; "
              "µs/step = that column / N)")
        print(_shorten(buf.getvalue()))


def _shorten(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    site = str(sys.modules["pipekit"].__file__).rsplit("/pipekit/", 1)[0] + "/"
    return "\n".join(line.replace(site, "") for line in lines[start:] if line.strip())


def tree(scenario: Scenario, n: int) -> None:
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("\n(pyinstrument is not installed: `pip install pyinstrument` for the call tree)")
        return
    state = scenario.prepare()
    profiler = Profiler(interval=0.0002)
    profiler.start()
    pipe = scenario.measured(state)
    profiler.stop()
    scenario.check(pipe)
    print(f"\n== pyinstrument call tree ({scenario.title})")
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def timed(scenario: Scenario) -> float:
    state = scenario.prepare()
    start = time.perf_counter()
    pipe = scenario.measured(state)
    elapsed = time.perf_counter() - start
    assert pipe.is_successful()
    scenario.check(pipe)
    return elapsed


MODES = ("time", "count", "cprofile", "tree")


def run_mode(scenario: Scenario, mode: str, n: int, top: int) -> None:
    if mode == "time":
        print(f"{scenario.title}: {timed(scenario) / n * 1e6:.0f} µs/step (no profiler)")
    elif mode == "count":
        count(scenario, n)
    elif mode == "cprofile":
        cprofile(scenario, n, top)
    else:
        tree(scenario, n)


def w3(args: argparse.Namespace, modes: list[str]) -> int:
    """Populate a store, then run each mode in a new process on it."""
    n = args.steps
    home = fresh_store()
    start = time.perf_counter()
    pipe = define(n, cache=True)
    pipe.start_locally(run_pipeline_steps_locally=True, executor="inline")
    populate = time.perf_counter() - start
    assert pipe.is_successful()
    print(f"W3 populating run (every step executed), N={n}: {populate / n * 1e6:.0f} µs/step")
    env = dict(os.environ, PIPEKIT_HOME=home)
    env.pop("PIPEKIT_DB", None)
    for mode in modes:
        sys.stdout.flush()
        subprocess.run([sys.executable, __file__, "--workload", "w3", "--steps", str(n),
                        "--top", str(args.top), "--hit-mode", mode], check=True, env=env)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("w1", "w3"), default="w1")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--no-cprofile", action="store_true")
    parser.add_argument("--no-tree", action="store_true")
    parser.add_argument("--hit-mode", choices=MODES,
                        help="internal (W3): run this measurement on the populated store of "
                             "PIPEKIT_HOME, in this new process")
    args = parser.parse_args(argv)
    n = args.steps
    modes = ["time", "count"]
    if not args.no_cprofile:
        modes.append("cprofile")
    if not args.no_tree:
        modes.append("tree")
    if args.workload == "w3":
        if args.hit_mode:
            run_mode(w3_scenario(n), args.hit_mode, n, args.top)
            return 0
        return w3(args, modes)
    chain(min(n, 50))  # warm up: imports, plugin manager, executor registry
    define_s, run_s = chain(n)
    print(f"W1 controller, inline, N={n}: define {define_s / n * 1e6:.0f} µs/step, "
          f"run {run_s / n * 1e6:.0f} µs/step (no profiler)")
    scenario = w1_scenario(n)
    for mode in modes[1:]:
        run_mode(scenario, mode, n, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
