"""Dagster workloads: jobs of ops run with ``execute_in_process`` (the in-process executor) on
a persistent instance in a temporary DAGSTER_HOME (its run and event storage is SQLite there),
so every run and step is recorded. Run by run_peers.py in Dagster's venv.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

state = Path(sys.argv[sys.argv.index("--state") + 1]).resolve()
(state / "dagster-home").mkdir(parents=True, exist_ok=True)
os.environ["DAGSTER_HOME"] = str(state / "dagster-home")

import _common as c  # noqa: E402
import dagster  # noqa: E402
from dagster import DagsterInstance, In, Out, job, op  # noqa: E402


def instance() -> DagsterInstance:
    return DagsterInstance.get()


def chain_job(n: int):
    @op(name="s0", out=Out(int))
    def first() -> int:
        return c.inc(0)

    steps = [first]
    for i in range(1, n):
        @op(name=f"s{i}", ins={"x": In(int)}, out=Out(int))
        def step(x: int) -> int:
            return c.inc(x)
        steps.append(step)

    @job(name="w1")
    def chain():
        x = steps[0]()
        for s in steps[1:]:
            x = s(x)

    return chain


def run(job_def, last: str):
    with instance() as inst:
        result = job_def.execute_in_process(instance=inst)
        c.check(result.success, "run failed")
        return result.output_for_node(last)


def w1(args):
    n = args.steps
    wall, value = c.timed(lambda: run(chain_job(n), f"s{n - 1}"))
    c.check(value == n, f"W1 gave {value!r}")
    return {"wall": wall, "records": True, "mode": "execute_in_process, persistent instance"}


def fan_job():
    @op(name="source")
    def source() -> int:
        return 1

    naps = []
    for i in range(c.W2_FAN):
        @op(name=f"nap{i}", ins={"x": In(int)})
        def nap(x: int) -> int:
            return c.nap(x)
        naps.append(nap)

    @op(name="total", ins={f"y{i}": In(int) for i in range(c.W2_FAN)})
    def total(**parts) -> int:
        return sum(parts.values())

    @job(name="w2")
    def fan():
        s = source()
        total(**{f"y{i}": nap(s) for i, nap in enumerate(naps)})

    return fan


def w2(args):
    wall, value = c.timed(lambda: run(fan_job(), "total"))
    c.check(value == c.W2_FAN, f"W2 gave {value!r}")
    return {"wall": wall, "records": True,
            "mode": "sequential (execute_in_process runs ops one at a time)"}


def w3(args):
    return {"wall": None, "skipped": "no cache (Dagster has no step result cache)"}


def handoff_job():
    @op(name="make")
    def make():
        return c.make_array()

    @op(name="last_item")
    def last_item(a) -> float:
        return float(a[-1])

    @job(name="w5")
    def handoff():
        last_item(make())

    return handoff


def w5(args):
    wall, value = c.timed(lambda: run(handoff_job(), "last_item"))
    c.check(value == c.W5_LEN - 1, f"W5 gave {value!r}")
    return {"wall": wall, "records": True,
            "mode": "in memory (execute_in_process swaps in the in-memory IO manager)"}


if __name__ == "__main__":
    sys.exit(c.main("dagster", dagster.__version__,
                    {"w1": w1, "w2": w2, "w3": w3, "w5": w5}))
