"""Kedro workloads: pipelines of nodes over an in-memory DataCatalog (MemoryDataset), run by
SequentialRunner (W2: ThreadRunner with 8 workers). Kedro records nothing per step outside a
project session. Run by run_peers.py in Kedro's venv.
"""

from __future__ import annotations

import logging
import sys

import _common as c
import kedro
from kedro.io import DataCatalog
from kedro.pipeline import node, pipeline
from kedro.runner import SequentialRunner, ThreadRunner


def run(pipe, runner, output: str):
    catalog = DataCatalog()
    result = runner.run(pipe, catalog)
    if output in result:
        value = result[output]
    else:
        value = catalog[output]
    return value.load() if hasattr(value, "load") else value


def one() -> int:
    return c.inc(0)


def w1(args):
    n = args.steps

    def go():
        nodes = [node(one, inputs=None, outputs="x1", name="s0")]
        nodes += [node(c.inc, inputs=f"x{i}", outputs=f"x{i + 1}", name=f"s{i}")
                  for i in range(1, n)]
        return run(pipeline(nodes), SequentialRunner(), f"x{n}")
    wall, value = c.timed(go)
    c.check(value == n, f"W1 gave {value!r}")
    return {"wall": wall, "records": False, "mode": "SequentialRunner, MemoryDataset"}


def source() -> int:
    return 1


def total(*parts: int) -> int:
    return sum(parts)


def w2(args):
    def go():
        nodes = [node(source, None, "src", name="source")]
        nodes += [node(c.nap, "src", f"y{i}", name=f"nap{i}") for i in range(c.W2_FAN)]
        nodes.append(node(total, [f"y{i}" for i in range(c.W2_FAN)], "s", name="total"))
        return run(pipeline(nodes), ThreadRunner(max_workers=c.W2_WORKERS), "s")
    wall, value = c.timed(go)
    c.check(value == c.W2_FAN, f"W2 gave {value!r}")
    return {"wall": wall, "records": False, "mode": f"ThreadRunner({c.W2_WORKERS})"}


def w3(args):
    return {"wall": None, "skipped": "no cache (Kedro has no step result cache)"}


def last_item(a) -> float:
    return float(a[-1])


def w5(args):
    def go():
        nodes = [node(c.make_array, None, "a", name="make"),
                 node(last_item, "a", "last", name="last_item")]
        return run(pipeline(nodes), SequentialRunner(), "last")
    wall, value = c.timed(go)
    c.check(value == c.W5_LEN - 1, f"W5 gave {value!r}")
    return {"wall": wall, "records": False, "mode": "in memory (MemoryDataset copies arrays)"}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(c.main("kedro", kedro.__version__, {"w1": w1, "w2": w2, "w3": w3, "w5": w5}))
