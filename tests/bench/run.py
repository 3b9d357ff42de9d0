"""`make bench`: the PERFORMANCE.md workloads W1-W8 against floors measured in the same run,
written to docs/performance.md.

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
W6  queue throughput: 8 agent processes, 2,000 no-op tasks (tests/bench/queue_bench.py), on
    SQLite, and on PostgreSQL with PIPEKIT_BENCH_PG / --pg.
W7  scale: layered DAGs of 100, 1,000 and 10,000 steps, controller and decorator, each size in
    a fresh process under a time budget (tests/bench/w7_scale.py).

Every workload is measured in **interleaved pairs**: its floor, then pipekit's run, then the
floor again, ... (PIPEKIT_BENCH_REPEAT pairs, default 3); the table gives the median of each
side, the ratio of the medians and the range of the per-pair ratios. Pipeline workloads run
in their own process (tests/bench/pipelines.py) with a fresh PIPEKIT_HOME, each repetition in
a fresh store, and time their floor in that same process.

    python tests/bench/run.py            # full: writes docs/performance.md
    python tests/bench/run.py --quick    # small N, 1 pair each: prints the page (stdout)
    python tests/bench/run.py --quick --out /tmp/perf.md

Settings (environment; an explicit one wins over --quick's): PIPEKIT_BENCH_STEPS (W1 and W3
chain length, default 1000, quick 200; when unset, a chain run that takes more than 60 s falls
back to 300 steps and the table says so), PIPEKIT_BENCH_REPEAT (pairs per workload, default 3,
quick 1), PIPEKIT_BENCH_TASKS (T1 task count, default 300), PIPEKIT_BENCH_ONLY
(comma-separated workload ids, e.g. `w1,w7`: the table then holds those, and the page goes to
a temporary file unless --out names one), PIPEKIT_BENCH_W6_TASKS (default 2000, quick 500),
PIPEKIT_BENCH_PG (a PostgreSQL database URL, or `auto`: start a throwaway server with
tests/postgres_helpers.Cluster; W6 then runs on it too), PIPEKIT_BENCH_W7_SIZES (default
`100,1000,10000`, quick `100,1000`), PIPEKIT_BENCH_W7_BUDGET (seconds per W7 process,
default 240).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import report
import w7_scale
from floors import interleaved, sqlite_floor, summarize, timed_run

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent
WORKLOAD_TIMEOUT = 1800
W6_AGENTS = 8


class Settings:
    """What to run, from --quick and the environment (an explicit variable wins)."""

    def __init__(self, quick: bool, pg: str | None) -> None:
        env = os.environ.get
        self.quick = quick
        self.steps_env = env("PIPEKIT_BENCH_STEPS")
        self.steps = int(self.steps_env or ("200" if quick else "1000"))
        self.repeat = int(env("PIPEKIT_BENCH_REPEAT") or ("1" if quick else "3"))
        self.import_repeat = 3 if quick else 7
        self.tasks = int(env("PIPEKIT_BENCH_TASKS") or ("100" if quick else "300"))
        self.w6_tasks = int(env("PIPEKIT_BENCH_W6_TASKS") or ("500" if quick else "2000"))
        sizes = env("PIPEKIT_BENCH_W7_SIZES") or ("100,1000" if quick else "100,1000,10000")
        self.w7_sizes = sorted(int(n) for n in sizes.split(",") if n.strip())
        self.w7_budget = float(env("PIPEKIT_BENCH_W7_BUDGET") or "240")
        self.only = {w.strip().lower() for w in env("PIPEKIT_BENCH_ONLY", "").split(",")
                     if w.strip()}
        self.pg = pg if pg is not None else env("PIPEKIT_BENCH_PG") or None

    def wanted(self, *ids: str) -> bool:
        return not self.only or any(i.lower() in self.only for i in ids)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- W8, T1: in this process / plain subprocesses ----------------------------------------------


def w8_import(repeat: int) -> dict[str, Any]:
    log("w8 ...")
    pairs = interleaved(lambda: timed_run([sys.executable, "-c", "pass"]),
                        lambda: {"ours": timed_run([sys.executable, "-c", "import pipekit"])},
                        repeat)
    return {"pairs": pairs, "summary": summarize(pairs)}


def task_persist(n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        import pipekit
        from pipekit.models import Status
        from pipekit.store import get_store
        from pipekit.task import Task

        pipekit.configure(home=tmp)
        store = get_store()
        store.create_task(project="bench", name="warmup")
        start = time.perf_counter()
        for i in range(n):
            info = store.create_task(project="bench", name=f"step{i}",
                                     status=Status.in_progress)
            task = Task(info.id)
            task.set_parameter("kwargs/x", i)
            task.upload_artifact("result", i + 1)
            store.set_status(info.id, Status.completed)
        elapsed = (time.perf_counter() - start) / n
        check = Task(info.id).artifacts["result"].get()
        assert check == n, f"T1: the last artifact holds {check!r}, not {n}"
        return elapsed


def t1(n: int, repeat: int) -> dict[str, Any]:
    log("t1 ...")
    pairs = interleaved(lambda: sqlite_floor(n), lambda: {"ours": task_persist(n)}, repeat)
    return {"pairs": pairs, "summary": summarize(pairs)}


# -- W1-W5: tests/bench/pipelines.py -----------------------------------------------------------


def run_workload(name: str, repeat: int, *args: str) -> dict[str, Any]:
    """Run one workload of pipelines.py in a new process with a fresh PIPEKIT_HOME."""
    log(f"{name} ...")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"pipekit-bench-{name}-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        out = Path(tmp) / "result.json"
        # (no live progress view: it draws on a terminal nobody looks at during a benchmark)
        env = dict(os.environ, PIPEKIT_HOME=str(home), PIPEKIT_PROGRESS="0")
        env.pop("PIPEKIT_DB", None)
        cmd = [sys.executable, str(BENCH / "pipelines.py"), name, "--out", str(out),
               "--repeat", str(repeat), *args]
        try:
            subprocess.run(cmd, check=True, env=env, cwd=ROOT, timeout=WORKLOAD_TIMEOUT)
            result = json.loads(out.read_text())
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
    if "pairs" in result:
        result["summary"] = summarize(result["pairs"])
        for key in ("define", "run"):  # (the controller's split, per step: medians)
            if key in result["pairs"][0]:
                result[key] = statistics.median(p[key] for p in result["pairs"])
    log(f"{name} done in {time.perf_counter() - start:.1f} s")
    return result


# -- W6: tests/bench/queue_bench.py, one process per pair --------------------------------------


@contextmanager
def postgres(pg: str | None) -> Iterator[tuple[Any, str | None, str, str | None]]:
    """``(cluster or None, URL or None, description, error or None)``: ``auto`` starts a
    throwaway server (tests/postgres_helpers.Cluster), stopped at the end; a URL is used as
    it is."""
    if not pg:
        yield None, None, "", None
        return
    if pg != "auto":
        yield None, pg, "PostgreSQL at `PIPEKIT_BENCH_PG`" + server_settings(pg), None
        return
    label = "PostgreSQL, a throwaway server on 127.0.0.1 (`PIPEKIT_BENCH_PG=auto`)"
    sys.path.insert(0, str(ROOT / "tests"))
    from postgres_helpers import Cluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        yield None, None, label, "no initdb/pg_ctl/postgres binaries were found"
        return
    log(f"starting a throwaway PostgreSQL server ({bindir}) ...")
    cluster = Cluster(bindir)
    try:
        try:
            cluster.start()
            url = cluster.url(cluster.create_database())
        except Exception as exc:
            yield None, None, label, f"the server did not start: {type(exc).__name__}: {exc}"
            return
        yield cluster, url, label + server_settings(url), None
    finally:
        cluster.stop()


def server_settings(url: str) -> str:
    """The server's version and the settings that decide commit cost, as it reports them."""
    try:
        import psycopg2

        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT name, setting, unit FROM pg_settings WHERE name IN "
                            "('server_version', 'fsync', 'synchronous_commit', "
                            "'full_page_writes', 'shared_buffers', 'max_connections') "
                            "ORDER BY name")
                rows = cur.fetchall()
        finally:
            conn.close()
    except Exception as exc:  # (the run itself will say what is wrong)
        return f" (settings unreadable: {type(exc).__name__})"
    settings = {name: setting for name, setting, _ in rows}
    if "shared_buffers" in settings:  # (in 8 KiB pages)
        settings["shared_buffers"] = f"{int(settings['shared_buffers']) * 8 // 1024}MB"
    version = settings.pop("server_version", "?").split()[0]
    return f", server {version}: " + ", ".join(f"{k}={v}" for k, v in settings.items())


def w6_pair(tasks: int, db: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("PIPEKIT_HOME", "PIPEKIT_DB")}
    if db:
        env["PIPEKIT_DB"] = db
    proc = subprocess.run([sys.executable, str(BENCH / "queue_bench.py"), str(tasks),
                           str(W6_AGENTS)], capture_output=True, text=True,
                          timeout=WORKLOAD_TIMEOUT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(" ".join(proc.stderr.strip().splitlines()[-1:]))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = "sqlite" if db is None else "postgresql"
    if result["backend"] != expected:
        raise RuntimeError(f"queue_bench measured {result['backend']}, not {expected}")
    return {"floor": result["floor_tasks_per_s"], "ours": result["tasks_per_s"],
            "locked": result["locked"]}


def w6(tasks: int, repeat: int, label: str, db: str | None, cluster: Any) -> dict[str, Any]:
    pairs = []
    try:
        for rep in range(repeat):
            log(f"w6 {label.split(',')[0]} (pair {rep + 1}/{repeat}) ...")
            # (a throwaway server: a fresh database per pair, as SQLite gets a fresh file)
            url = cluster.url(cluster.create_database()) if cluster and rep else db
            pairs.append(w6_pair(tasks, url))
    except (RuntimeError, subprocess.SubprocessError, ValueError) as exc:
        return {"label": label, "error": f"{type(exc).__name__}: {exc}"}
    return {"label": label, "pairs": pairs, "summary": summarize(pairs)}


# -- the page ------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "pipekit", "plugins"],
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" with local changes under pipekit/ or plugins/" if dirty else "")


CHAINS: list[tuple[str, str, str]] = [
    ("W1", "w1", "`PipelineController.add_function_step(..., function_return=[\"x\"])` "
     "with `${prev.x}`, `start_locally(run_pipeline_steps_locally=True, "
     "executor=\"inline\")`"),
    ("W1", "w1-decorator", "`@PipelineDecorator.component` chain in "
     "`PipelineDecorator.run_locally(executor=\"inline\")`"),
    ("W1d", "w1d", "`@PipelineDecorator.component` chain in "
     "`PipelineDecorator.debug_pipeline()`"),
]


def measure(s: Settings) -> dict[str, Any]:
    """Run every wanted workload; the raw results (JSON-able), keyed by workload."""
    chain_args = ["--steps", str(s.steps)] + ([] if s.steps_env else ["--auto"])
    results: dict[str, Any] = {}
    if s.wanted("w8"):
        results["w8"] = w8_import(s.import_repeat)
    if s.wanted("t1"):
        results["t1"] = t1(s.tasks, s.repeat)
    for wid, name, _ in CHAINS:
        if s.wanted(wid, name):
            results[name] = run_workload(name, s.repeat, *chain_args)
    if s.wanted("w2"):
        results["w2"] = run_workload("w2", s.repeat)
    if s.wanted("w3"):
        results["w3"] = run_workload("w3", s.repeat, *chain_args)
    if s.wanted("w4"):
        results["w4"] = run_workload("w4", s.repeat)
    if s.wanted("w5"):
        results["w5"] = run_workload("w5", s.repeat)
    if s.wanted("w6"):
        results["w6-sqlite"] = w6(s.w6_tasks, s.repeat, "SQLite, WAL", None, None)
        with postgres(s.pg) as (cluster, url, label, error):
            if error:
                results["w6-postgresql"] = {"label": label, "error": error}
            elif url:
                results["w6-postgresql"] = w6(s.w6_tasks, s.repeat, label, url, cluster)
        results["w6"] = {"agents": W6_AGENTS, "tasks": s.w6_tasks}
    if s.wanted("w7"):
        results["w7"] = w7_scale.measure(s.w7_sizes, s.repeat, s.w7_budget)
    return results


def table_rows(results: dict[str, Any], meta: dict[str, Any]) -> list[report.Row]:
    """The main table, from the results, in W-order."""
    steps = meta["steps"]
    rows: list[report.Row] = []
    if "w8" in results:
        rows.append(report.import_row(results["w8"]))
    if "t1" in results:
        rows.append(report.task_row(results["t1"], meta["tasks"]))
    for wid, name, api in CHAINS:
        if name in results:
            rows.append(report.chain_row(wid, api, results[name], steps))
    if "w2" in results:
        rows.append(report.wall_row(
            "W2", "fan-out: 1 source → 50 steps each sleeping 10 ms → 1 sum, "
            "`start_locally(..., executor=\"thread\", max_workers=8)`",
            "`ThreadPoolExecutor(8)` over the same 50 sleeps", 1.2, results["w2"]))
    if "w3" in results:
        rows.append(report.cache_row(results["w3"], steps))
    if "w4" in results:
        rows.append(report.wall_row(
            "W4", "local mode: chain of 20 function steps, each its own subprocess "
            "(`executor=\"subprocess\"`), whole run", "20 × `python -c \"import pipekit\"`",
            1.5, results["w4"]))
    if "w5" in results:
        rows.append(report.wall_row(
            "W5", "100 MiB NumPy array returned by one step, consumed by the next, "
            "`executor=\"subprocess\"`, whole run (blake3 hashing and verification included)",
            "one process `np.save`s it to a file, another `np.load`s it", 1.5, results["w5"]))
    if "w6" in results:
        agents, tasks = results["w6"]["agents"], results["w6"]["tasks"]
        rows.append(report.queue_row(results["w6-sqlite"], agents, tasks))
        if "w6-postgresql" in results:
            rows.append(report.queue_row(results["w6-postgresql"], agents, tasks))
        else:
            rows.append(("W6", "queue throughput (PostgreSQL)", "not run: set "
                         "`PIPEKIT_BENCH_PG=auto` (a throwaway server) or a database URL",
                         "", "", "", "≥ 0.5× floor tasks/s", "—"))
    if "w7" in results:
        rows.extend(report.scale_rows(results["w7"]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small N, one pair per workload; prints the page unless --out")
    parser.add_argument("--out", type=Path, help="write the page here (default: "
                        "docs/performance.md for a full run of every workload; else stdout)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: make the page from the results a --json run "
                             "kept (the page goes to stdout unless --out)")
    parser.add_argument("--pg", help="W6 on PostgreSQL too: a database URL, or `auto` (a "
                        "throwaway server); default PIPEKIT_BENCH_PG")
    args = parser.parse_args(argv)
    s = Settings(args.quick, args.pg)
    if args.render:
        results = json.loads(args.render.read_text())
    else:
        meta: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%d %H:%M %Z"), "load_start": os.getloadavg()[0],
            "machine": machine(), "python": f"{platform.python_version()} "
            f"({platform.python_implementation()})", "sqlite": sqlite_version(),
            "commit": commit(), "command": invocation(argv), "quick": s.quick,
            "repeat": s.repeat, "import_repeat": s.import_repeat, "steps": s.steps,
            "tasks": s.tasks}
        t0 = time.perf_counter()
        results = measure(s)
        meta.update(wall=time.perf_counter() - t0, load_end=os.getloadavg()[0])
        results["meta"] = meta
    rows = table_rows(results, results["meta"])
    page = render(results["meta"], rows, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    out = args.out
    if out is None and not s.quick and not s.only and not args.render:
        out = ROOT / "docs" / "performance.md"
    elif out is None and s.only and not s.quick and not args.render:
        out = Path(tempfile.gettempdir()) / "pipekit-performance-partial.md"
        log(f"PIPEKIT_BENCH_ONLY is set, writing {out} instead of docs/performance.md")
    if out is not None:
        out.write_text(page)
        log(f"wrote {out}")
    print(page)
    return 1 if any(r[-1] == "**error**" for r in rows) else 0


def invocation(argv: list[str] | None) -> str:
    """The command that made this page: the bench settings in the environment, then the
    arguments."""
    env = " ".join(f"{k}={v if k != 'PIPEKIT_BENCH_PG' or v == 'auto' else '<url>'}"
                   for k, v in sorted(os.environ.items()) if k.startswith("PIPEKIT_BENCH_"))
    given = list(sys.argv[1:] if argv is None else argv)
    kept = []  # (--out and --json change where results go, not what is measured)
    while given:
        arg = given.pop(0)
        if arg in ("--out", "--json"):
            given[:1] = []
        elif not arg.startswith(("--out=", "--json=")):
            kept.append(arg)
    args = " ".join(kept)
    return " ".join(p for p in (env, "make bench", f"ARGS='{args}'" if args else "") if p)


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def render(meta: dict[str, Any], rows: list[report.Row], results: dict[str, Any]) -> str:
    mode = " (**quick mode**: small N, one pair each — for development, not for the record)" \
        if meta["quick"] else ""
    lines = [
        "# Performance",
        "",
        "Generated by `make bench` (tests/bench/run.py); do not edit by hand. Every ratio is "
        "against a floor measured **in the same run, interleaved with pipekit's own runs** "
        "(floor, pipekit, floor, pipekit, …), on the same machine. Workloads, floors and "
        "targets are defined in PERFORMANCE.md." + mode,
        "",
        f"Machine: {meta['machine']}; Python {meta['python']}; SQLite {meta['sqlite']}. Run: "
        f"{meta['started']}, {minutes(meta['wall'])}, load average {meta['load_start']:.2f} "
        f"at the start and {meta['load_end']:.2f} at the end (other work shares this "
        f"machine). Code measured: `{meta['commit']}`. {meta['repeat']} interleaved "
        f"floor/pipekit pair(s) per workload ({meta['import_repeat']} for W8), each pipeline "
        "run in a fresh store.",
        "",
        *report.table(rows),
        "",
        "The ratio is pipekit's median over the floor's median (for W6 and W7 see below); the "
        "per-pair range is the lowest and highest ratio of one floor run to the pipekit run "
        "next to it: a wide range means the machine's load changed during the run.",
        "",
    ]
    if "w7" in results:
        w7 = results["w7"]
        lines += [
            "## W7: scale",
            "",
            f"Layered DAGs of width {w7['width']}: layer 0 is {w7['width']} sources, and step "
            "`j` of each later layer reads step `j` of the layer before and, for even `j`, "
            "step `j + 1` too (1–2 parents: fan-out and fan-in at every layer); every step is "
            "`max(x, y) + 1`. Each size runs in a fresh process (so `ru_maxrss` is that "
            f"size's own peak), killed after {w7['budget']:.0f} s; the sizes run smallest "
            f"first within each of the {w7['repeat']} repetition(s), and a size that went "
            "over budget is not run again. The run must succeed with every node `completed` "
            "and every last-layer step returning the number of layers (read back, untimed). "
            "Target: per-step cost at the largest size ≤ 1.3× that at the smallest, and peak "
            "memory growing linearly. Per step = wall time of the whole pipeline call "
            "(definition included) / steps. The W1 floor column is the W1 floor (insert + "
            "update per step) at the same N, timed in the same process just before the run. "
            "\"Per step added\" is the difference of the median walls of two sizes over the "
            "difference of their steps: the cost of one more step, without the run's fixed "
            "cost (which makes the smallest size's per-step cost the highest when the cost "
            "per step is flat).",
            "",
            *report.scale_table(w7),
            "",
        ]
    lines += [
        "## How each is measured",
        "",
        "- T1: in `run.py`'s own process, a fresh store per pair: N tasks each created in "
        "progress, given one parameter and one small inline artifact through `Task`, and "
        "marked completed, per task; the last artifact is read back. Its floor is W1's at "
        "N. No target: it is the per-step persistence cost W1 builds on.",
        "- W1/W1d: wall time of the whole pipeline call divided by N — for the controller "
        "from `PipelineController(...)` through every `add_function_step` to `start_locally` "
        "returning (the split is shown), for the decorator the call of the `@pipeline` "
        "function (its components are added as it runs). Every step is a persisted task with "
        "its parameter and its return value as an artifact; the last value is checked. The "
        "floor is a plain `sqlite3` loop, one autocommit `INSERT` and one `UPDATE` per step, "
        "at the same N, timed right before each pipekit run in the same process.",
        "- W3: each repetition populates a fresh store with one run of the W1 controller "
        "chain, every step `cache_executed_step=True` (not timed), then times the floor, then "
        "a new process runs the same chain again; its whole pipeline call (definition "
        "included, as for W1), divided by N, is the per-hit cost. Every node must end "
        "`cached` and the last value is checked. The floor is a plain `sqlite3` WAL database "
        "with a table of N tasks and an index on their 64-hex-digit key, one `SELECT id FROM "
        "t WHERE key = ? AND status IN (...) LIMIT 1` per step.",
        "- W2, W4, W5: wall time of the whole pipeline (definition included) against the "
        "floor's wall time; nothing is subtracted from either side. W5's floor runs two "
        "`python -c` processes (save, then load), as pipekit runs two step processes.",
        "- W6: each pair is one process of `tests/bench/queue_bench.py`: the floor (8 "
        "processes claiming and completing rows of a bare SQLite table, `BEGIN IMMEDIATE`), "
        "then 8 `pipekit agent --in-process` processes draining the queued no-op tasks of a "
        "fresh store (on PostgreSQL: a fresh database per pair on a throwaway server); "
        "throughput from the first claim to the last completion, every task must end "
        "`completed`. The ratio is pipekit's tasks/s over the floor's (higher is better; the "
        "floor is SQLite's for both backends, as PERFORMANCE.md defines it).",
        "- W7: see its section; the ratio is the per-step cost at the largest size over the "
        "per-step cost at the smallest, both pipekit's (same API, same run).",
        "- W8: a new interpreter per measurement, `python -c pass` then `python -c \"import "
        "pipekit\"`, alternately; the target is on the difference of the medians.",
        "- Each pipeline workload runs in its own process "
        "(`tests/bench/pipelines.py <workload>`) with a fresh `PIPEKIT_HOME`; its step "
        "functions live in that script's `__main__`, as a user's pipeline script's do.",
        "",
        "## Reproduce",
        "",
        f"This page: `{meta['command']}`, {minutes(meta['wall'])}. "
        "From a fresh clone: `make bench` (installs `.venv` first; writes this page). "
        "`make bench ARGS=--quick` (or `.venv/bin/python "
        "tests/bench/run.py --quick [--out FILE]`) runs small sizes once each and prints the "
        "page instead of writing it. W6 on PostgreSQL as well: `PIPEKIT_BENCH_PG=auto make "
        "bench` starts a throwaway server (initdb/pg_ctl on 127.0.0.1, fsync off) for it, "
        "`PIPEKIT_BENCH_PG=postgresql://…` uses yours. Settings: `PIPEKIT_BENCH_STEPS` (W1 "
        "and W3 chain length, default 1000; when unset, a chain run slower than 60 s falls "
        "back to 300 steps and the table says so), `PIPEKIT_BENCH_REPEAT` (pairs per "
        "workload, default 3), `PIPEKIT_BENCH_TASKS` (T1, default 300), "
        "`PIPEKIT_BENCH_W6_TASKS` (default 2000), `PIPEKIT_BENCH_W7_SIZES` (default "
        "`100,1000,10000`), `PIPEKIT_BENCH_W7_BUDGET` (seconds per W7 process, default 240), "
        "`PIPEKIT_BENCH_ONLY` (e.g. `w1,w7`); `--json FILE` keeps the raw pairs. One workload "
        "by hand: `PIPEKIT_HOME=$(mktemp -d) .venv/bin/python tests/bench/pipelines.py w1 "
        "--out /tmp/w1.json`; one W7 size: `PIPEKIT_HOME=$(mktemp -d) .venv/bin/python "
        "tests/bench/w7_scale.py --api decorator --steps 1000 --out /tmp/w7.json`. Profile "
        "W1: `.venv/bin/python tests/bench/profile_w1.py` (counts transactions and statements "
        "per step; with pyinstrument installed, also prints where the time goes); "
        "`profile_w1.py --workload w3` does the same for W3's cache hits.",
        "",
        "## Peers",
        "",
        "The peer comparison (the same workloads through ClearML, Prefect, Dagster, Kedro, "
        "Hamilton and Metaflow in their no-server local modes) lives in "
        "[`docs/benchmarks/peers/`](benchmarks/peers/).",
        "",
        "<!-- peers: a later step fills this paragraph from docs/benchmarks/peers/ -->",
        "",
    ]
    return "\n".join(lines)


def sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


if __name__ == "__main__":
    sys.exit(main())
