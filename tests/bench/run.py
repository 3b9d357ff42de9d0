"""`make bench`: the PERFORMANCE.md workloads this milestone makes possible, against floors
measured in the same run, written to docs/performance.md.

W8  `import pipekit` wall time vs `python -c pass`.
T1  per-task persistence (create task + one parameter, upload a small artifact, mark
    completed) through the public Task API, vs the W1 floor.
W1  chain of N `x -> x + 1` function steps, inline executor: PipelineController and
    PipelineDecorator.run_locally(executor="inline"); W1d the same in debug_pipeline().
W2  fan-out 1 -> 50 x sleep(10 ms) -> 1, thread executor with 8 workers.
W3  the W1 controller chain with every step cached, run again in a new process: per hit, vs
    one indexed SQLite key lookup.
W4  chain of 20 steps, one subprocess each.
W5  a 100 MiB NumPy array handed from one step subprocess to the next.

Each pipeline workload runs in its own process (tests/bench/pipelines.py) with a fresh
PIPEKIT_HOME, and times its floor in that same process. Settings (environment):
PIPEKIT_BENCH_STEPS (W1 and W3 chain length, default 1000; when unset, a chain run that takes more
than 60 s falls back to 300 steps and the table says so), PIPEKIT_BENCH_REPEAT (repetitions
per workload, medians reported; default 3), PIPEKIT_BENCH_TASKS (T1 task count, default 300),
PIPEKIT_BENCH_ONLY (comma-separated workload ids, e.g. `w1,w2`; the table then holds those),
PIPEKIT_BENCH_W6_TASKS (W6 task count, default 2000), PIPEKIT_BENCH_PG (a PostgreSQL database URL:
W6 runs against it too).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from floors import median_run, sqlite_floor

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent
N_TASKS = int(os.environ.get("PIPEKIT_BENCH_TASKS", "300"))
STEPS_ENV = os.environ.get("PIPEKIT_BENCH_STEPS")
N_STEPS = int(STEPS_ENV or "1000")
REPEAT = int(os.environ.get("PIPEKIT_BENCH_REPEAT", "3"))
ONLY = {w.strip().lower() for w in os.environ.get("PIPEKIT_BENCH_ONLY", "").split(",")
        if w.strip()}
WORKLOAD_TIMEOUT = 900
W6_TASKS = int(os.environ.get("PIPEKIT_BENCH_W6_TASKS", "2000"))
W6_AGENTS = 8


def w8_import() -> tuple[float, float]:
    floor = median_run([sys.executable, "-c", "pass"])
    ours = median_run([sys.executable, "-c", "import pipekit"])
    return ours, floor


def task_persist(n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        import pipekit
        from pipekit.models import Status
        from pipekit.store import get_store

        pipekit.configure(home=tmp)
        store = get_store()
        store.create_task(project="bench", name="warmup")
        from pipekit.task import Task

        start = time.perf_counter()
        for i in range(n):
            info = store.create_task(project="bench", name=f"step{i}",
                                     status=Status.in_progress)
            task = Task(info.id)
            task.set_parameter("kwargs/x", i)
            task.upload_artifact("result", i + 1)
            store.set_status(info.id, Status.completed)
        return (time.perf_counter() - start) / n


def run_workload(name: str, *args: str) -> dict[str, Any]:
    """Run one workload of pipelines.py in a new process with a fresh PIPEKIT_HOME."""
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"pipekit-bench-{name}-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        out = Path(tmp) / "result.json"
        # (no live progress view: it draws on a terminal nobody looks at during a benchmark)
        env = dict(os.environ, PIPEKIT_HOME=str(home), PIPEKIT_PROGRESS="0")
        env.pop("PIPEKIT_DB", None)
        cmd = [sys.executable, str(BENCH / "pipelines.py"), name, "--out", str(out),
               "--repeat", str(REPEAT), *args]
        try:
            subprocess.run(cmd, check=True, env=env, cwd=ROOT, timeout=WORKLOAD_TIMEOUT)
            result = json.loads(out.read_text())
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"bench: {name} done in {time.perf_counter() - start:.1f} s", file=sys.stderr,
          flush=True)
    return result


def fmt(seconds: float) -> str:
    """A time with a unit that keeps 2-3 significant digits."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        ms = seconds * 1e3
        return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def verdict(ratio: float, limit: float) -> str:
    return "pass" if ratio <= limit else "**fail**"


Row = tuple[str, str, str, str, str, str, str]


def error_row(wid: str, what: str, result: dict[str, Any]) -> Row:
    return (wid, what, f"error: {result['error']}", "", "", "", "**error**")


def chain_row(wid: str, api: str, result: dict[str, Any]) -> Row:
    steps = result.get("steps", N_STEPS)
    what = f"chain of {steps:,} `x -> x + 1` function steps, {api}"
    if "error" in result:
        return error_row(wid, what, result)
    if "fallback_from" in result:
        what += (f" (**N={steps:,}**: one run at N={result['fallback_from']:,} took "
                 f"{result['fallback_wall']:.0f} s, over the 60 s limit)")
    ours = f"{fmt(result['per_step'])}/step"
    if "define" in result:
        ours += (f" (define {fmt(result['define'] / steps)} + run "
                 f"{fmt(result['run'] / steps)})")
    floor = (f"{fmt(result['floor_per_step'])}/step (row insert + update, autocommit, WAL, "
             "synchronous=NORMAL)")
    return (wid, what, ours, floor, f"{result['ratio']:.0f}×", "≤ 4×",
            verdict(result["ratio"], 4.0))


def cache_row(result: dict[str, Any]) -> Row:
    steps = result.get("steps", N_STEPS)
    what = (f"cache hits: the W1 controller chain ({steps:,} steps, "
            "`add_function_step(..., cache_executed_step=True)`, inline executor) run again "
            "in a new process, every step `cached`")
    if "error" in result:
        return error_row("W3", what, result)
    if "fallback_from" in result:
        what += (f" (**N={steps:,}**: populating at N={result['fallback_from']:,} took "
                 f"{result['fallback_wall']:.0f} s, over the 60 s limit)")
    ours = (f"{fmt(result['per_step'])}/hit (define {fmt(result['define'] / steps)} + run "
            f"{fmt(result['run'] / steps)})")
    floor = (f"{fmt(result['floor_per_step'])}/lookup (`SELECT id ... WHERE key = ? AND "
             f"status IN (...) LIMIT 1`, {steps:,} indexed keys, WAL)")
    return ("W3", what, ours, floor, f"{result['ratio']:.0f}×", "≤ 10× per hit",
            verdict(result["ratio"], 10.0))


def wall_row(wid: str, what: str, floor_what: str, limit: float,
             result: dict[str, Any]) -> Row:
    if "error" in result:
        return error_row(wid, what, result)
    if "skipped" in result:
        return (wid, what, f"skipped: {result['skipped']}", "", "", f"≤ {limit:g}×", "—")
    return (wid, what, fmt(result["wall"]), f"{fmt(result['floor'])} ({floor_what})",
            f"{result['ratio']:.1f}×", f"≤ {limit:g}×", verdict(result["ratio"], limit))


def w6_backends() -> list[tuple[str, str | None]]:
    """SQLite always; PostgreSQL when ``PIPEKIT_BENCH_PG`` names a server database URL."""
    found: list[tuple[str, str | None]] = [("SQLite", None)]
    if os.environ.get("PIPEKIT_BENCH_PG"):
        found.append(("PostgreSQL", os.environ["PIPEKIT_BENCH_PG"]))
    return found


def w6_row(backend: str, db: str | None) -> Row:
    what = f"queue throughput ({backend}): {W6_AGENTS} `pipekit agent --in-process` " \
           f"processes, {W6_TASKS:,} queued no-op function tasks"
    print(f"bench: w6 {backend} ...", file=sys.stderr, flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PIPEKIT_HOME", "PIPEKIT_DB")}
    if db:
        env["PIPEKIT_DB"] = db
    proc = subprocess.run([sys.executable, str(BENCH / "queue_bench.py"), str(W6_TASKS),
                           str(W6_AGENTS)], capture_output=True, text=True,
                          timeout=WORKLOAD_TIMEOUT, env=env)
    if proc.returncode != 0:
        return error_row("W6", what, {"error": " ".join(proc.stderr.strip().splitlines()[-1:])})
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return ("W6", what, f"{result['tasks_per_s']:,.0f} tasks/s",
            f"{result['floor_tasks_per_s']:,.0f} tasks/s (8 processes, bare SQLite "
            "claim + complete, `BEGIN IMMEDIATE`)", f"{result['ratio']:.2f}×",
            "≥ 0.5× floor tasks/s", "pass" if result["ratio"] >= 0.5 else "**fail**")


def wanted(wid: str) -> bool:
    return not ONLY or wid.lower() in ONLY


def main() -> int:
    chain_args = ["--steps", str(N_STEPS)] + ([] if STEPS_ENV else ["--auto"])
    rows: list[Row] = []
    if wanted("w8"):
        w8, w8_floor = w8_import()
        rows.append(("W8", "`import pipekit`", fmt(w8), f"{fmt(w8_floor)} (`python -c pass`)",
                     f"+{(w8 - w8_floor) * 1000:.0f} ms", "≤ +100 ms",
                     "pass" if w8 - w8_floor <= 0.1 else "**fail**"))
    if wanted("t1"):
        floor = sqlite_floor(N_TASKS)
        ours = task_persist(N_TASKS)
        rows.append(("T1", f"persist one task ({N_TASKS} tasks): create + parameter + inline "
                     "artifact + completed, through `Task` / the store", f"{fmt(ours)}/task",
                     f"{fmt(floor)}/task (insert + update, WAL)", f"{ours / floor:.1f}×",
                     "— (baseline for W1)", "—"))
    chains: list[tuple[str, str, str]] = [
        ("W1", "w1", "`PipelineController.add_function_step(..., function_return=[\"x\"])` "
         "with `${prev.x}`, `start_locally(run_pipeline_steps_locally=True, "
         "executor=\"inline\")`"),
        ("W1", "w1-decorator", "`@PipelineDecorator.component` chain in "
         "`PipelineDecorator.run_locally(executor=\"inline\")`"),
        ("W1d", "w1d", "`@PipelineDecorator.component` chain in "
         "`PipelineDecorator.debug_pipeline()`"),
    ]
    for wid, name, api in chains:
        if wanted(wid) or wanted(name):
            rows.append(chain_row(wid, api, run_workload(name, *chain_args)))
    if wanted("w2"):
        rows.append(wall_row(
            "W2", "fan-out: 1 source → 50 steps each sleeping 10 ms → 1 sum, "
            "`start_locally(..., executor=\"thread\", max_workers=8)`",
            "`ThreadPoolExecutor(8)` over the same 50 sleeps", 1.2, run_workload("w2")))
    if wanted("w3"):
        rows.append(cache_row(run_workload("w3", *chain_args)))
    if wanted("w4"):
        rows.append(wall_row(
            "W4", "local mode: chain of 20 function steps, each its own subprocess "
            "(`executor=\"subprocess\"`), whole run", "20 × `python -c \"import pipekit\"`",
            1.5, run_workload("w4")))
    if wanted("w5"):
        rows.append(wall_row(
            "W5", "100 MiB NumPy array returned by one step, consumed by the next, "
            "`executor=\"subprocess\"`, whole run (blake3 hashing and verification included)",
            "one process `np.save`s it to a file, another `np.load`s it", 1.5,
            run_workload("w5")))
    if wanted("w6"):
        for backend, db in w6_backends():
            rows.append(w6_row(backend, db))
    if wanted("w7"):
        rows.append(("W7", "scale: 100 / 1,000 / 10,000-step layered DAGs in debug mode",
                     "not measured by `make bench` yet", "", "",
                     "≤ 1.3× per-step cost at 10,000 vs 100", "—"))
    lines = [
        "# Performance",
        "",
        "Generated by `make bench` (tests/bench/run.py); ratios are against floors measured "
        "in the same run, on the same machine. Workloads, floors and targets are defined in "
        "PERFORMANCE.md.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}. Pipeline "
        f"workloads: median of {REPEAT} runs, each in a fresh store.",
        "",
        "| id | workload | pipekit | floor | ratio | target | result |",
        "|---|---|---|---|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in rows],
        "",
        "How each is measured:",
        "",
        "- W1/W1d: wall time of the whole pipeline call divided by N — for the controller "
        "from `PipelineController(...)` through every `add_function_step` to `start_locally` "
        "returning (the split is shown), for the decorator the call of the `@pipeline` "
        "function (its components are added as it runs). Every step is a persisted task with "
        "its parameter and its return value as an artifact; the last value is checked. The "
        "floor is a plain `sqlite3` loop, one autocommit `INSERT` and one `UPDATE` per step.",
        "- W3: each repetition populates a fresh store with one run of the W1 controller "
        "chain, every step `cache_executed_step=True` (not timed), then a new process runs the "
        "same chain again; its whole pipeline call (definition included, as for W1), divided "
        "by N, is the per-hit cost. Every node must end `cached` and the last value is "
        "checked. The floor is a plain `sqlite3` WAL database with a table of N tasks and an "
        "index on their 64-hex-digit key, one `SELECT id FROM t WHERE key = ? AND status IN "
        "(...) LIMIT 1` per step.",
        "- W2, W4, W5: wall time of the whole pipeline (definition included) against the "
        "floor's wall time; nothing is subtracted from either side. W5's floor runs two "
        "`python -c` processes (save, then load), as pipekit runs two step processes.",
        "- Each pipeline workload runs in its own process "
        "(`tests/bench/pipelines.py <workload>`) with a fresh `PIPEKIT_HOME`; its step "
        "functions live in that script's `__main__`, as a user's pipeline script's do.",
        "",
        "Reproduce: `make bench` from a fresh clone. Settings: `PIPEKIT_BENCH_STEPS` (W1 "
        "and W3 chain length, default 1000; when unset, a chain run slower than 60 s falls back to "
        "300 steps and the table says so), `PIPEKIT_BENCH_REPEAT` (runs per workload, default "
        "3), `PIPEKIT_BENCH_TASKS` (T1 task count, default 300), `PIPEKIT_BENCH_ONLY` "
        "(e.g. `w1,w5`). One workload by hand: `PIPEKIT_HOME=$(mktemp -d) "
        ".venv/bin/python tests/bench/pipelines.py w1 --out /tmp/w1.json`. Profile W1: "
        "`.venv/bin/python tests/bench/profile_w1.py` (counts transactions and statements "
        "per step; with pyinstrument installed, also prints where the time goes); "
        "`profile_w1.py --workload w3` does the same for W3's cache hits.",
        "",
    ]
    out = ROOT / "docs" / "performance.md"
    if ONLY:
        out = Path(tempfile.gettempdir()) / "pipekit-performance-partial.md"
        print(f"bench: PIPEKIT_BENCH_ONLY is set, writing {out} instead of "
              "docs/performance.md", file=sys.stderr)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 1 if any(r[-1] == "**error**" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
