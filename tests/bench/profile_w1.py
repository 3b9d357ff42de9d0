"""Where W1's per-step time goes: the controller chain of PERFORMANCE.md's W1 (inline
executor), counted and profiled. A diagnostic, not part of ``make bench``.

Prints, per step: write transactions (``pipekit.store.db.write`` calls), SQL statements by
kind (SQLite's trace callback, so peewee-built and hand-written statements alike), store and
plugin-manager lookups; then the top frames by own and by total time (cProfile, whose
overhead inflates small calls: read the ranking, not the absolute numbers), and, when
pyinstrument is installed (``pip install pyinstrument``; not a pipekit dependency), its
sampled call tree.

    .venv/bin/python tests/bench/profile_w1.py [--steps 1000] [--no-cprofile] [--no-tree]
"""

from __future__ import annotations

import argparse
import atexit
import collections
import cProfile
import io
import pstats
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pipekit
from pipekit import PipelineController


def inc(x):
    return x + 1


def fresh_store() -> None:
    """Point pipekit at a new, empty store (removed when this script exits)."""
    home = tempfile.mkdtemp(prefix="pipekit-profile-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    pipekit.configure(home=home)


def define(n: int) -> PipelineController:
    pipe = PipelineController(name="w1", project="bench")
    pipe.add_function_step("s0", inc, function_kwargs={"x": 0}, function_return=["x"])
    for i in range(1, n):
        pipe.add_function_step(f"s{i}", inc, function_kwargs={"x": f"${{s{i - 1}.x}}"},
                               function_return=["x"])
    return pipe


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


def count(n: int) -> None:
    import pipekit.store
    import pipekit.store.db

    counter = Counter()
    by_caller: collections.Counter[str] = collections.Counter()
    original_write = pipekit.store.write

    def write(db: Any, fn: Callable[[], Any]) -> Any:
        by_caller[f"{caller()} -> {fn.__qualname__.split('.<locals>')[0]}"] += 1
        return original_write(db, fn)

    # Store.write calls the name bound in pipekit.store (imported from pipekit.store.db).
    pipekit.store.write = write
    modules = [m for name, m in list(sys.modules.items())
               if (name == "pipekit" or name.startswith(("pipekit.", "pipekit_plugins.")))
               and m is not None]
    counter.wrap(sys.modules["pipekit.plugin_manager"], "get_plugin_manager",
                 "get_plugin_manager()")
    counter.wrap(sys.modules["pipekit.plugin_manager"], "_impls",
                 "hook calls through notify()/call_each()")
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

    fresh_store()
    pipe = define(n)
    store = pipekit.store.get_store()
    store.db.connection().set_trace_callback(trace)
    try:
        pipe.start_locally(run_pipeline_steps_locally=True, executor="inline")
    finally:
        store.db.connection().set_trace_callback(None)
        counter.restore()
        pipekit.store.write = original_write
    assert pipe.is_successful()
    total = sum(by_caller.values())

    print(f"\n== per step (W1 controller, inline, N={n}; the run only, definition excluded)")
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
    for label, value in counter.counts.most_common():
        if value:
            print(f"  {value / n:7.2f}  {label}")


def cprofile(n: int, top: int) -> None:
    fresh_store()
    pipe = define(n)
    profiler = cProfile.Profile()
    profiler.enable()
    pipe.start_locally(run_pipeline_steps_locally=True, executor="inline")
    profiler.disable()
    for key, title in (("tottime", "own"), ("cumulative", "total")):
        buf = io.StringIO()
        stats = pstats.Stats(profiler, stream=buf)
        stats.sort_stats(key).print_stats(top)
        print(f"\n== top {top} frames by {title} time (cProfile, the run only; µs/step = "
              "that column / N)")
        print(_shorten(buf.getvalue()))


def _shorten(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    site = str(sys.modules["pipekit"].__file__).rsplit("/pipekit/", 1)[0] + "/"
    return "\n".join(line.replace(site, "") for line in lines[start:] if line.strip())


def tree(n: int) -> None:
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("\n(pyinstrument is not installed: `pip install pyinstrument` for the call tree)")
        return
    fresh_store()
    pipe = define(n)
    profiler = Profiler(interval=0.0002)
    profiler.start()
    pipe.start_locally(run_pipeline_steps_locally=True, executor="inline")
    profiler.stop()
    print("\n== pyinstrument call tree (the run only)")
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--no-cprofile", action="store_true")
    parser.add_argument("--no-tree", action="store_true")
    args = parser.parse_args(argv)
    n = args.steps
    chain(min(n, 50))  # warm up: imports, plugin manager, executor registry
    define_s, run_s = chain(n)
    print(f"W1 controller, inline, N={n}: define {define_s / n * 1e6:.0f} µs/step, "
          f"run {run_s / n * 1e6:.0f} µs/step (no profiler)")
    count(n)
    steps: list[Callable[[int], None]] = []
    if not args.no_cprofile:
        steps.append(lambda k: cprofile(k, args.top))
    if not args.no_tree:
        steps.append(tree)
    for step in steps:
        step(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
