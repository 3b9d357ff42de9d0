"""W7: scale. Layered fan-out/fan-in DAGs of N trivial function steps, each size run in a
fresh process, through the controller and through the decorator; per-step cost and peak RSS.

The DAG: ``N / WIDTH`` layers of ``WIDTH`` steps. Layer 0 is ``WIDTH`` sources (``x=0``);
step ``j`` of layer ``L > 0`` reads step ``j`` of layer ``L - 1`` and, for even ``j``, also
step ``(j + 1) % WIDTH`` of it (1-2 parents each: fan-out and fan-in at every layer). Each step
is ``max(x, y) + 1``, so every step of layer ``L`` returns ``L + 1``; the run must succeed,
hold N nodes all ``completed``, and every step of the last layer must have returned the
number of layers (read back through the public API, untimed).

APIs (PERFORMANCE.md: debug mode, persisted steps):

* ``controller``: ``PipelineController.add_function_step`` per step, then
  ``start_locally(run_pipeline_steps_locally=True, executor="inline")``.
* ``decorator``: ``@PipelineDecorator.component`` calls in a ``@PipelineDecorator.pipeline``
  function under ``PipelineDecorator.debug_pipeline()`` (each step runs as it is added).

One process, one size: ``python tests/bench/w7_scale.py --api controller --steps 1000
--out r.json`` (PIPEKIT_HOME: a fresh folder) writes wall time, per-step cost, the W1 floor's
per-step cost at the same N (timed first, in the same process) and ``ru_maxrss`` after the
imports and at the end. :func:`measure` (used by ``run.py``) runs the sizes in fresh processes,
each under a time budget, interleaving the sizes repetition by repetition.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parents[1]
WIDTH = 10
APIS = ("controller", "decorator")


def rss_kib() -> int:
    """Peak resident set size of this process so far (``ru_maxrss``; Linux: KiB).

    Linux carries ``ru_maxrss`` over ``fork`` and ``exec``: a process started straight from
    ``run.py`` (which has imported pipekit and run T1 by then) would report at least
    ``run.py``'s size. So :func:`one_process` starts a small launcher
    (``w7_scale.py --launch``), and the launcher starts the measured process: its
    ``ru_maxrss`` is its own.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def hwm_kib() -> int | None:
    """``VmHWM`` of /proc/self/status (the peak RSS of this process's memory since its
    ``exec``, a cross-check of :func:`rss_kib`), or ``None``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def parents_of(layer: int, j: int) -> list[int]:
    """Indexes, in the previous layer, of the parents of step ``j`` of ``layer`` (> 0)."""
    return [j, (j + 1) % WIDTH] if j % 2 == 0 else [j]


def step_name(layer: int, j: int) -> str:
    return f"l{layer}s{j}"


# -- step functions (in __main__ here, as a user's pipeline script's are) ---------------------


def bump(x, y=0):
    return max(x, y) + 1


def run_controller(layers: int) -> tuple[Any, dict[str, float]]:
    from pipekit import PipelineController

    start = time.perf_counter()
    pipe = PipelineController(name="w7", project="bench")
    for j in range(WIDTH):
        pipe.add_function_step(step_name(0, j), bump, function_kwargs={"x": 0},
                               function_return=["x"])
    for layer in range(1, layers):
        for j in range(WIDTH):
            kwargs = {arg: f"${{{step_name(layer - 1, p)}.x}}"
                      for arg, p in zip(("x", "y"), parents_of(layer, j), strict=False)}
            pipe.add_function_step(step_name(layer, j), bump, function_kwargs=kwargs,
                                   function_return=["x"])
    defined = time.perf_counter()
    pipe.start_locally(run_pipeline_steps_locally=True, executor="inline")
    end = time.perf_counter()
    return pipe, {"wall": end - start, "define": defined - start, "run": end - defined}


def check_controller(pipe: Any, layers: int) -> None:
    from pipekit.task import Task

    check(pipe.is_successful(), "W7 controller run did not complete")
    dag = pipe.get_pipeline_dag()
    check(len(dag) == layers * WIDTH, f"W7 controller DAG holds {len(dag)} nodes")
    statuses = {node.status for node in dag.values()}
    check(statuses == {"completed"}, f"W7 controller nodes ended {statuses}")
    for j in range(WIDTH):
        node = dag[step_name(layers - 1, j)]
        value = Task(node.executed).artifacts["x"].get()
        check(value == layers, f"W7 controller: {node.name} returned {value!r}, not {layers}")


def run_decorator(layers: int) -> dict[str, float]:
    from pipekit import PipelineDecorator

    bump_component = PipelineDecorator.component(bump, return_values=["x"], name="bump")

    @PipelineDecorator.pipeline(name="w7-decorator", project="bench")
    def layered(layers):
        prev = [bump_component(0) for _ in range(WIDTH)]
        for layer in range(1, layers):
            prev = [bump_component(*(prev[p] for p in parents_of(layer, j)))
                    for j in range(WIDTH)]
        return [int(v) for v in prev]

    PipelineDecorator.debug_pipeline()
    start = time.perf_counter()
    last = layered(layers)
    end = time.perf_counter()
    check(last == [layers] * WIDTH, f"W7 decorator: the last layer returned {last}")
    return {"wall": end - start}


def check_decorator(layers: int) -> None:
    from pipekit.store import get_store

    store = get_store()
    (run,) = store.find_tasks(name="w7-decorator")
    steps = store.find_tasks(parent=run.id)
    check(len(steps) == layers * WIDTH, f"W7 decorator run holds {len(steps)} step tasks")
    statuses = {info.status for info in steps}
    check(statuses == {"completed"}, f"W7 decorator step tasks ended {statuses}")


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"bench: {what}")


def one(api: str, steps: int) -> dict[str, Any]:
    """Time one run of ``steps`` steps through ``api`` in this process (a fresh store)."""
    from floors import sqlite_floor

    import pipekit

    check(steps % WIDTH == 0 and steps >= 2 * WIDTH, f"W7 steps must be a multiple of {WIDTH}")
    layers = steps // WIDTH
    pipekit.configure(home=os.environ["PIPEKIT_HOME"])
    rss_start = rss_kib()
    floor = sqlite_floor(steps)  # (floor first, then pipekit: the same process, same moment)
    if api == "controller":
        pipe, times = run_controller(layers)
        rss_end = rss_kib()
        check_controller(pipe, layers)
    else:
        times = run_decorator(layers)
        rss_end = rss_kib()
        check_decorator(layers)
    return {"api": api, "steps": steps, **times, "per_step": times["wall"] / steps,
            "floor_per_step": floor, "rss_start_kib": rss_start, "rss_peak_kib": rss_end,
            "vm_hwm_kib": hwm_kib()}


# -- the driver side (run.py) -----------------------------------------------------------------


def one_process(api: str, steps: int, budget: float) -> dict[str, Any]:
    """:func:`one` in a fresh process with a fresh PIPEKIT_HOME, killed after ``budget``
    seconds (then the result says ``over_budget``).
    """
    with tempfile.TemporaryDirectory(prefix=f"pipekit-bench-w7-{api}-{steps}-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        out = Path(tmp) / "result.json"
        env = dict(os.environ, PIPEKIT_HOME=str(home), PIPEKIT_PROGRESS="0")
        env.pop("PIPEKIT_DB", None)
        cmd = [sys.executable, __file__, "--launch", "--api", api, "--steps", str(steps),
               "--out", str(out)]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
        try:
            proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"api": api, "steps": steps, "over_budget": budget}
        finally:
            elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            return {"api": api, "steps": steps,
                    "error": f"exit status {proc.returncode} after {elapsed:.0f} s"}
        result = json.loads(out.read_text())
        result["process_wall"] = elapsed
        return result


def measure(sizes: list[int], repeat: int, budget: float,
            apis: tuple[str, ...] = APIS) -> dict[str, Any]:
    """Every API at every size, ``repeat`` times: in each repetition the sizes run one after
    the other (smallest first), so the largest-vs-smallest ratio of a repetition compares runs
    made minutes apart at most. A size over budget (or failing) is not run again.
    """
    out: dict[str, Any] = {"sizes": sizes, "repeat": repeat, "budget": budget, "width": WIDTH}
    for api in apis:
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
        for rep in range(repeat):
            for n in sizes:
                if any("over_budget" in r or "error" in r for r in runs[n]):
                    continue
                print(f"bench: w7 {api} {n:,} steps (repetition {rep + 1}/{repeat}) ...",
                      file=sys.stderr, flush=True)
                result = one_process(api, n, budget)
                runs[n].append(result)
                if "per_step" in result:
                    print(f"bench: w7 {api} {n:,} steps: {result['per_step'] * 1e3:.2f} "
                          f"ms/step, peak RSS {result['rss_peak_kib'] / 1024:.0f} MiB",
                          file=sys.stderr, flush=True)
                else:
                    print(f"bench: w7 {api} {n:,} steps: {result}", file=sys.stderr,
                          flush=True)
        out[api] = {str(n): summarize_size(runs[n]) for n in sizes}
        small, large = str(sizes[0]), str(sizes[-1])
        # (a size over budget has fewer runs than the others: pairs stop there)
        both = zip(runs[sizes[0]], runs[sizes[-1]], strict=False)
        pairs = [b["per_step"] / a["per_step"] for a, b in both
                 if "per_step" in a and "per_step" in b]
        if pairs and "per_step" in out[api][small] and "per_step" in out[api][large]:
            out[api]["growth"] = {"ratio": out[api][large]["per_step"]
                                  / out[api][small]["per_step"],
                                  "pair_min": min(pairs), "pair_max": max(pairs),
                                  "small": sizes[0], "large": sizes[-1]}
    return out


def summarize_size(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "per_step" in r]
    bad = [r for r in runs if "per_step" not in r]
    if bad and not good:
        return dict(bad[0])
    keys = ("wall", "per_step", "floor_per_step", "rss_start_kib", "rss_peak_kib",
            "process_wall")
    # (medians of each; the peak RSS of a size barely varies between its runs)
    summary: dict[str, Any] = {k: statistics.median(r[k] for r in good) for k in keys}
    summary["runs"] = len(good)
    summary["per_step_runs"] = [r["per_step"] for r in good]
    if "define" in good[0]:
        summary["define"] = statistics.median(r["define"] for r in good)
        summary["run"] = statistics.median(r["run"] for r in good)
    if bad:
        summary["later"] = dict(bad[0])  # (a later repetition went over budget or failed)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=APIS, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--launch", action="store_true",
                        help="start the measurement in a child process (see rss_kib)")
    args = parser.parse_args(argv)
    if args.launch:
        argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--launch"]
        return subprocess.run([sys.executable, __file__, *argv]).returncode
    if "PIPEKIT_HOME" not in os.environ:
        parser.error("set PIPEKIT_HOME to a fresh, empty folder")
    os.environ.pop("PIPEKIT_DB", None)
    args.out.write_text(json.dumps(one(args.api, args.steps), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
