"""The pipeline workloads of PERFORMANCE.md (W1, W1d, W2, W3, W4, W5), each timed against its
floor in the same process, in interleaved pairs: the floor, then one pipekit run, then the
floor again, ... (``--repeat`` pairs). A workload's result holds ``pairs``, each with
``floor`` and ``ours`` in the same unit (``unit``: seconds per step, or wall seconds);
``run.py`` reports the medians, their ratio and the range of the per-pair ratios.

``run.py`` runs each workload as ``python tests/bench/pipelines.py <workload> --out FILE`` with
a fresh ``PIPEKIT_HOME``; every repetition gets its own sub-folder of it (a fresh store). The
step functions live in ``__main__`` here, so they travel by value (cloudpickle) to step
subprocesses, as a user's pipeline script's do. The result is a JSON object written to FILE.

Run one by hand: ``PIPEKIT_HOME=$(mktemp -d) python tests/bench/pipelines.py w1 --out r.json``.

W3 (cache hits) populates each repetition's store in this process, then runs the same chain
again in a new process (``pipelines.py w3-hit``, an internal workload: it uses the store of
its ``PIPEKIT_HOME`` as it finds it) and reads that process's timing back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from floors import (
    W2_FAN,
    W2_WORKERS,
    W5_LEN,
    interleaved,
    python_import_floor,
    sqlite_floor,
    sqlite_lookup_floor,
    w2_floor,
    w5_floor,
)

import pipekit
from pipekit import PipelineController, PipelineDecorator

#: a chain longer than this (seconds, one run) falls back to FALLBACK_STEPS steps
SLOW_CHAIN = 60.0
FALLBACK_STEPS = 300
W5_BYTES = W5_LEN * 8
W4_STEPS = 20

_base: Path | None = None


def scratch_dir() -> Path:
    """A new, empty folder under this workload's PIPEKIT_HOME."""
    assert _base is not None, "main() sets the base folder"
    return Path(tempfile.mkdtemp(prefix="rep", dir=_base))


def fresh_home() -> Path:
    """A new, empty store for one repetition."""
    home = scratch_dir()
    pipekit.configure(home=home)
    return home


def last_value(run_id: str | None, step: str, artifact: str) -> Any:
    """The value a step of a run returned (read back through the public API, untimed)."""
    from pipekit.store import get_store
    from pipekit.task import Task

    assert run_id is not None
    (info,) = get_store().find_tasks(name=step, parent=run_id)
    return Task(info.id).artifacts[artifact].get()


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"bench: {what}")


# -- step functions ---------------------------------------------------------------------------


def inc(x):
    return x + 1


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


@PipelineDecorator.component(return_values=["x"])
def inc_component(x):
    return x + 1


@PipelineDecorator.pipeline(name="w1-decorator", project="bench")
def decorated_chain(n):
    x = 0
    for _ in range(n):
        x = inc_component(x)
    return int(x)


# -- W1 / W1d ---------------------------------------------------------------------------------


def w1_controller_once(n: int) -> dict[str, float]:
    fresh_home()
    start = time.perf_counter()
    pipe = PipelineController(name="w1", project="bench")
    pipe.add_function_step("s0", inc, function_kwargs={"x": 0}, function_return=["x"])
    for i in range(1, n):
        pipe.add_function_step(f"s{i}", inc, function_kwargs={"x": f"${{s{i - 1}.x}}"},
                               function_return=["x"])
    defined = time.perf_counter()
    pipe.start_locally(run_pipeline_steps_locally=True, executor="inline")
    end = time.perf_counter()
    check(pipe.is_successful(), "W1 controller run did not complete")
    check(last_value(pipe.id, f"s{n - 1}", "x") == n, "W1 controller chain gave a wrong value")
    return {"wall": end - start, "define": defined - start, "run": end - defined}


def w1_decorator_once(n: int) -> dict[str, float]:
    fresh_home()
    start = time.perf_counter()
    result = decorated_chain(n)
    end = time.perf_counter()
    check(result == n, f"W1 decorator chain gave {result!r}, expected {n}")
    return {"wall": end - start}


def chain_workload(once: Callable[[int], dict[str, float]], repeat: int,
                   steps: int, auto: bool) -> dict[str, Any]:
    """``repeat`` interleaved pairs: the W1 floor at N steps, then one pipekit run of N steps;
    both per step.
    """
    out: dict[str, Any] = {"steps": steps}

    def pair() -> dict[str, Any]:
        floor = sqlite_floor(steps)
        run = once(steps)
        return {"floor": floor, "ours": run["wall"] / steps,
                **{k: v / steps for k, v in run.items() if k != "wall"}, "wall": run["wall"]}

    first = pair()
    if auto and first["wall"] > SLOW_CHAIN and steps > FALLBACK_STEPS:
        out.update(fallback_from=steps, fallback_wall=first["wall"], steps=FALLBACK_STEPS)
        steps = FALLBACK_STEPS
        first = pair()
    out["pairs"] = [first, *(pair() for _ in range(repeat - 1))]
    out["unit"] = "per step"
    return out


def w1(args: argparse.Namespace) -> dict[str, Any]:
    return chain_workload(w1_controller_once, args.repeat, args.steps, args.auto)


def w1_decorator(args: argparse.Namespace) -> dict[str, Any]:
    PipelineDecorator.run_locally(executor="inline")
    return chain_workload(w1_decorator_once, args.repeat, args.steps, args.auto)


def w1d(args: argparse.Namespace) -> dict[str, Any]:
    PipelineDecorator.debug_pipeline()
    return chain_workload(w1_decorator_once, args.repeat, args.steps, args.auto)


# -- W2: fan-out ------------------------------------------------------------------------------


def w2_once() -> float:
    fresh_home()
    start = time.perf_counter()
    pipe = PipelineController(name="w2", project="bench")
    pipe.add_function_step("source", source, function_return=["x"])
    for i in range(W2_FAN):
        pipe.add_function_step(f"nap{i}", nap, function_kwargs={"x": "${source.x}"},
                               function_return=["y"])
    pipe.add_function_step("total", total, function_return=["s"],
                           function_kwargs={f"y{i}": f"${{nap{i}.y}}" for i in range(W2_FAN)})
    pipe.start_locally(run_pipeline_steps_locally=True, executor="thread",
                       max_workers=W2_WORKERS)
    wall = time.perf_counter() - start
    check(pipe.is_successful(), "W2 run did not complete")
    check(last_value(pipe.id, "total", "s") == W2_FAN, "W2 sum is wrong")
    return wall


def w2(args: argparse.Namespace) -> dict[str, Any]:
    return {"pairs": interleaved(w2_floor, lambda: {"ours": w2_once()}, args.repeat),
            "unit": "wall"}


# -- W3: cache hits in a new process ----------------------------------------------------------


def w3_chain(n: int) -> tuple[PipelineController, float, float]:
    """Define and run the W1 controller chain with every step cached, in the current store;
    returns the controller and the (define, run) seconds.
    """
    start = time.perf_counter()
    pipe = PipelineController(name="w3", project="bench")
    pipe.add_function_step("s0", inc, function_kwargs={"x": 0}, function_return=["x"],
                           cache_executed_step=True)
    for i in range(1, n):
        pipe.add_function_step(f"s{i}", inc, function_kwargs={"x": f"${{s{i - 1}.x}}"},
                               function_return=["x"], cache_executed_step=True)
    defined = time.perf_counter()
    pipe.start_locally(run_pipeline_steps_locally=True, executor="inline")
    end = time.perf_counter()
    return pipe, defined - start, end - defined


def w3_populate(n: int) -> tuple[Path, float]:
    """A fresh store holding one completed W3 run (every step executed); returns its home
    and the run's wall time.
    """
    home = fresh_home()
    pipe, define, run = w3_chain(n)
    check(pipe.is_successful(), "W3 populating run did not complete")
    statuses = {node.status for node in pipe.get_pipeline_dag().values()}
    check(statuses == {"completed"}, f"W3 populating run ended with node statuses {statuses}")
    return home, define + run


def w3_hit(args: argparse.Namespace) -> dict[str, Any]:
    """The timed side of W3, in its own process: the chain again on the store in
    PIPEKIT_HOME; every node must end ``cached``."""
    from pipekit.task import Task

    n = args.steps
    pipe, define, run = w3_chain(n)
    check(pipe.is_successful(), "W3 cached run did not complete")
    nodes = pipe.get_pipeline_dag().values()
    uncached = [f"{node.name}={node.status}" for node in nodes if node.status != "cached"]
    check(not uncached, f"W3: {len(uncached)} of {n} steps were not served from the cache "
          f"(first: {', '.join(uncached[:5])})")
    last = pipe.get_pipeline_dag()[f"s{n - 1}"]
    check(isinstance(last.executed, str) and Task(last.executed).artifacts["x"].get() == n,
          "W3 cached chain gave a wrong value")
    return {"wall": define + run, "define": define, "run": run}


def w3_hit_process(home: Path, n: int) -> dict[str, float]:
    """Run :func:`w3_hit` in a new process on the store in ``home``."""
    out = scratch_dir() / "hit.json"
    env = dict(os.environ, PIPEKIT_HOME=str(home))
    subprocess.run([sys.executable, __file__, "w3-hit", "--steps", str(n), "--out", str(out)],
                   check=True, env=env)
    return json.loads(out.read_text())


def w3(args: argparse.Namespace) -> dict[str, Any]:
    """Per repetition (not timed) a fresh store populated by one run, then the pair: the
    lookup floor, then the all-cached run in a new process; both per step.
    """
    steps = args.steps
    out: dict[str, Any] = {"steps": steps}
    home, populate = w3_populate(steps)
    if args.auto and populate > SLOW_CHAIN and steps > FALLBACK_STEPS:
        out.update(fallback_from=steps, fallback_wall=populate, steps=FALLBACK_STEPS)
        steps = FALLBACK_STEPS
        home, populate = w3_populate(steps)
    pairs = []
    for rep in range(args.repeat):
        if rep:
            home, populate = w3_populate(steps)
        floor = sqlite_lookup_floor(steps)
        hit = w3_hit_process(home, steps)
        pairs.append({"floor": floor, "ours": hit["wall"] / steps,
                      "define": hit["define"] / steps, "run": hit["run"] / steps,
                      "populate": populate / steps})
    out["pairs"] = pairs
    out["unit"] = "per step"
    return out


# -- W4: local mode, one subprocess per step --------------------------------------------------


def w4_once() -> float:
    fresh_home()
    start = time.perf_counter()
    pipe = PipelineController(name="w4", project="bench")
    pipe.add_function_step("s0", inc, function_kwargs={"x": 0}, function_return=["x"])
    for i in range(1, W4_STEPS):
        pipe.add_function_step(f"s{i}", inc, function_kwargs={"x": f"${{s{i - 1}.x}}"},
                               function_return=["x"])
    pipe.start_locally(run_pipeline_steps_locally=True, executor="subprocess")
    wall = time.perf_counter() - start
    check(pipe.is_successful(), "W4 run did not complete")
    check(last_value(pipe.id, f"s{W4_STEPS - 1}", "x") == W4_STEPS, "W4 chain is wrong")
    return wall


def w4(args: argparse.Namespace) -> dict[str, Any]:
    return {"pairs": interleaved(lambda: python_import_floor("pipekit", W4_STEPS),
                                 lambda: {"ours": w4_once()}, args.repeat),
            "unit": "wall", "steps": W4_STEPS}


# -- W5: 100 MiB NumPy hand-off ---------------------------------------------------------------

def w5_once() -> float:
    import shutil

    home = fresh_home()
    start = time.perf_counter()
    pipe = PipelineController(name="w5", project="bench")
    pipe.add_function_step("make", make_array, function_return=["a"])
    pipe.add_function_step("consume", last_item, function_kwargs={"a": "${make.a}"},
                           function_return=["last"])
    pipe.start_locally(run_pipeline_steps_locally=True, executor="subprocess")
    wall = time.perf_counter() - start
    check(pipe.is_successful(), "W5 run did not complete")
    check(last_value(pipe.id, "consume", "last") == W5_BYTES // 8 - 1, "W5 value is wrong")
    shutil.rmtree(home / "artifacts", ignore_errors=True)  # 100 MiB per repetition
    return wall


def w5_floor_here() -> float:
    return w5_floor(folder=scratch_dir())


def w5(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return {"skipped": "numpy is not importable"}
    # (interleaved: the page cache and disk see both alike)
    return {"pairs": interleaved(w5_floor_here, lambda: {"ours": w5_once()}, args.repeat),
            "unit": "wall", "bytes": W5_BYTES}


WORKLOADS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "w1": w1, "w1-decorator": w1_decorator, "w1d": w1d, "w2": w2, "w3": w3, "w4": w4,
    "w5": w5, "w3-hit": w3_hit,  # w3-hit: W3's timed process, started by w3
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=1000, help="W1/W3 chain length")
    parser.add_argument("--auto", action="store_true",
                        help=f"W1/W3: fall back to {FALLBACK_STEPS} steps when one run takes "
                             f"more than {SLOW_CHAIN:g} s")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if "PIPEKIT_HOME" not in os.environ:
        parser.error("set PIPEKIT_HOME to a fresh, empty folder")
    os.environ.pop("PIPEKIT_DB", None)
    global _base
    _base = Path(os.environ["PIPEKIT_HOME"]).resolve()
    result = WORKLOADS[args.workload](args)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
