"""pipekit workloads, as tests/bench/pipelines.py runs them: PipelineController function
steps, every step a persisted task with its return value as an artifact in the SQLite store
under --state. W1/W3 inline executor, W2 thread executor (8 workers), W5 subprocess executor.
Run by run_peers.py with the worktree's own Python.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

state = Path(sys.argv[sys.argv.index("--state") + 1]).resolve()
os.environ["PIPEKIT_HOME"] = str(state / "pipekit-home")
os.environ.pop("PIPEKIT_DB", None)

import _common as c  # noqa: E402

import pipekit  # noqa: E402
from pipekit import PipelineController  # noqa: E402


def source():
    return 1


def nap(x):
    import time

    time.sleep(0.010)
    return x


def total(**parts):
    return sum(parts.values())


def make_array():
    import numpy as np

    return np.arange(100 * 2**20 // 8, dtype=np.float64)


def last_item(a):
    return float(a[-1])


def value_of(pipe: PipelineController, step: str, artifact: str):
    from pipekit.store import get_store
    from pipekit.task import Task

    (info,) = get_store().find_tasks(name=step, parent=pipe.id)
    return Task(info.id).artifacts[artifact].get()


def chain(n: int, cache: bool = False) -> PipelineController:
    pipe = PipelineController(name="w3" if cache else "w1", project="peers")
    pipe.add_function_step("s0", c.inc, function_kwargs={"x": 0}, function_return=["x"],
                           cache_executed_step=cache)
    for i in range(1, n):
        pipe.add_function_step(f"s{i}", c.inc, function_kwargs={"x": f"${{s{i - 1}.x}}"},
                               function_return=["x"], cache_executed_step=cache)
    pipe.start_locally(run_pipeline_steps_locally=True, executor="inline")
    c.check(pipe.is_successful(), "run did not complete")
    return pipe


def w1(args):
    pipekit.configure(home=state / "pipekit-home")
    wall, pipe = c.timed(lambda: chain(args.steps))
    c.check(value_of(pipe, f"s{args.steps - 1}", "x") == args.steps, "W1 value is wrong")
    return {"wall": wall, "records": True, "mode": "start_locally, inline executor"}


def w2(args):
    pipekit.configure(home=state / "pipekit-home")

    def go():
        pipe = PipelineController(name="w2", project="peers")
        pipe.add_function_step("source", source, function_return=["x"])
        for i in range(c.W2_FAN):
            pipe.add_function_step(f"nap{i}", nap, function_kwargs={"x": "${source.x}"},
                                   function_return=["y"])
        pipe.add_function_step("total", total, function_return=["s"],
                               function_kwargs={f"y{i}": f"${{nap{i}.y}}"
                                                for i in range(c.W2_FAN)})
        pipe.start_locally(run_pipeline_steps_locally=True, executor="thread",
                           max_workers=c.W2_WORKERS)
        return pipe
    wall, pipe = c.timed(go)
    c.check(pipe.is_successful() and value_of(pipe, "total", "s") == c.W2_FAN, "W2 is wrong")
    return {"wall": wall, "records": True, "mode": f"thread executor ({c.W2_WORKERS})"}


def w3(args):
    pipekit.configure(home=state / "pipekit-home")
    return c.w3_in_new_process(args, lambda: chain(args.steps, cache=True))


def w3_hit(args):
    pipekit.configure(home=state / "pipekit-home")
    wall, pipe = c.timed(lambda: chain(args.steps, cache=True))
    nodes = pipe.get_pipeline_dag().values()
    c.check(all(node.status == "cached" for node in nodes), "not every step was a cache hit")
    last = pipe.get_pipeline_dag()[f"s{args.steps - 1}"]
    from pipekit.task import Task

    value = Task(last.executed).artifacts["x"].get()
    return {**c.w3_hit_result(wall, args.steps, value), "records": True,
            "mode": "cache_executed_step=True, inline executor"}


def w5(args):
    pipekit.configure(home=state / "pipekit-home")

    def go():
        pipe = PipelineController(name="w5", project="peers")
        pipe.add_function_step("make", make_array, function_return=["a"])
        pipe.add_function_step("consume", last_item, function_kwargs={"a": "${make.a}"},
                               function_return=["last"])
        pipe.start_locally(run_pipeline_steps_locally=True, executor="subprocess")
        return pipe
    wall, pipe = c.timed(go)
    c.check(pipe.is_successful() and value_of(pipe, "consume", "last") == c.W5_LEN - 1,
            "W5 is wrong")
    return {"wall": wall, "records": True,
            "mode": "subprocess executor: a process per step, artifact stored and hashed"}


if __name__ == "__main__":
    sys.exit(c.main("pipekit", pipekit.__version__,
                    {"w1": w1, "w2": w2, "w3": w3, "w3-hit": w3_hit, "w5": w5}))
