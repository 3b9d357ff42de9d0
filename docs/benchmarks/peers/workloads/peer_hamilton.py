"""Hamilton workloads: the chain and the fan-out are generated modules of functions (a node per
function, named by its parameters) run by the ``sf-hamilton`` driver in memory; Hamilton
records nothing per step unless its cache is on (W3: ``Builder().with_cache()``, whose metadata
store is SQLite). Run by run_peers.py in Hamilton's venv.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import _common as c
from hamilton import driver
from hamilton import version as hamilton_version

VERSION = ".".join(map(str, hamilton_version.VERSION))


STATE = Path(sys.argv[sys.argv.index("--state") + 1]).resolve()


def module_of(name: str, source: str) -> types.ModuleType:
    """Import generated source as a real module file (Hamilton versions nodes by their source,
    which it reads with ``inspect``)."""
    path = STATE / "modules" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("import _common as _c\n\n\n" + source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def chain_module(n: int) -> types.ModuleType:
    lines = ["def s0() -> int:\n    return _c.inc(0)\n"]
    lines += [f"def s{i}(s{i - 1}: int) -> int:\n    return _c.inc(s{i - 1})\n"
              for i in range(1, n)]
    return module_of("w1_chain", "\n".join(lines))


def run_chain(n: int, cache_dir: str | None = None) -> tuple[float, int]:
    def go() -> int:
        builder = driver.Builder().with_modules(chain_module(n))
        if cache_dir:
            builder = builder.with_cache(path=cache_dir)
        return builder.build().execute([f"s{n - 1}"])[f"s{n - 1}"]
    return c.timed(go)


def w1(args):
    note = None
    try:
        wall, value = run_chain(args.steps)
    except RecursionError:
        sys.setrecursionlimit(20 * args.steps + 1000)
        note = "RecursionError at the default recursion limit; ran with it raised"
        wall, value = run_chain(args.steps)
    c.check(value == args.steps, f"W1 gave {value!r}")
    return {"wall": wall, "records": False, "mode": "driver, in memory", "note": note}


def fan_module() -> types.ModuleType:
    lines = ["def source() -> int:\n    return 1\n"]
    lines += [f"def nap{i}(source: int) -> int:\n    return _c.nap(source)\n"
              for i in range(c.W2_FAN)]
    params = ", ".join(f"nap{i}: int" for i in range(c.W2_FAN))
    names = ", ".join(f"nap{i}" for i in range(c.W2_FAN))
    lines.append(f"def total({params}) -> int:\n    return sum([{names}])\n")
    return module_of("w2_fan", "\n".join(lines))


def w2(args):
    from hamilton.plugins.h_threadpool import FutureAdapter

    def go() -> int:
        dr = (driver.Builder().with_modules(fan_module())
              .with_adapters(FutureAdapter(max_workers=c.W2_WORKERS)).build())
        return dr.execute(["total"])["total"]
    wall, value = c.timed(go)
    c.check(value == c.W2_FAN, f"W2 gave {value!r}")
    return {"wall": wall, "records": False, "mode": f"FutureAdapter({c.W2_WORKERS} threads)"}


def cached_chain(args) -> tuple[float, int]:
    sys.setrecursionlimit(20 * args.steps + 1000)
    return run_chain(args.steps, cache_dir=str(args.state / "hamilton-cache"))


def w3(args):
    return c.w3_in_new_process(args, lambda: cached_chain(args))


def w3_hit(args):
    wall, value = cached_chain(args)
    return {**c.w3_hit_result(wall, args.steps, value), "records": True,
            "mode": "with_cache() (recursion limit raised)"}


def w5(args):
    src = ("def a() -> object:\n    return _c.make_array()\n\n"
           "def last(a: object) -> float:\n    return float(a[-1])\n")

    def go() -> float:
        return driver.Builder().with_modules(module_of("w5", src)).build().execute(["last"])["last"]
    wall, value = c.timed(go)
    c.check(value == c.W5_LEN - 1, f"W5 gave {value!r}")
    return {"wall": wall, "records": False, "mode": "in memory"}


if __name__ == "__main__":
    sys.exit(c.main("hamilton", VERSION,
                    {"w1": w1, "w2": w2, "w3": w3, "w3-hit": w3_hit, "w5": w5}))
