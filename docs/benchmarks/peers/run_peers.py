"""Run PERFORMANCE.md's W1, W2, W3 and W5 through pipekit and its peers, each in its own venv
and its own local no-server mode, against plain-Python floors measured in the same run, and
print a Markdown table.

    python docs/benchmarks/peers/run_peers.py [--steps N] [--only prefect,dagster] [--out FILE]

Each peer gets a venv under --venvs (default ~/.cache/pipekit-peers), made once, with a pinned
version from PyPI (pipekit: the worktree's .venv when ``make .venv/.test`` made it, else an
editable install of this checkout). Each workload runs as
``<venv python> workloads/peer_<name>.py <workload> --steps N --state DIR`` in a fresh DIR
(also its working directory), under a timeout; the last JSON line it prints is its result.
Not part of ``make test``; nothing imports it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
WORKLOADS = HERE / "workloads"
WORKLOAD_IDS = ("w1", "w2", "w3", "w5")


@dataclass(frozen=True)
class Peer:
    name: str
    version: str
    requirements: tuple[str, ...]
    note: str = ""


PEERS = (
    Peer("pipekit", "checkout", ()),
    Peer("prefect", "3.9.1", ("prefect==3.9.1",),
         "3.8.8 installs FastAPI 0.165, whose Body() has no min_items: its server fails to "
         "import, so 3.9.1 (which caps fastapi<0.151)"),
    Peer("dagster", "1.13.29", ("dagster==1.13.29",)),
    Peer("clearml", "2.1.12", ("clearml==2.1.12",)),
    Peer("hamilton", "1.90.0", ("sf-hamilton==1.90.0",)),
    Peer("kedro", "1.7.0", ("kedro==1.7.0",)),
    Peer("metaflow", "2.19.39", ("metaflow==2.19.39",)),
)


def one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "(no output)")[:160]


# -- venvs ------------------------------------------------------------------------------------


def venv_python(peer: Peer, venvs: Path) -> Path:
    """The Python of ``peer``'s venv, made (once) if missing; raises RuntimeError with one
    line if it cannot be installed."""
    if peer.name == "pipekit":
        own = ROOT / ".venv" / "bin" / "python"
        if (ROOT / ".venv" / ".base").exists() and own.exists():
            return own
        where = venvs / "pipekit-checkout"
        requirements: tuple[str, ...] = ("-e", str(ROOT), "numpy")
    else:
        where = venvs / f"{peer.name}-{peer.version}"
        requirements = (*peer.requirements, "numpy")
    python = where / "bin" / "python"
    if (where / ".installed").exists():
        return python
    shutil.rmtree(where, ignore_errors=True)
    where.parent.mkdir(parents=True, exist_ok=True)
    print(f"[peers] installing {peer.name} into {where}", file=sys.stderr, flush=True)
    for cmd in ([sys.executable, "-m", "venv", str(where)],
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 *requirements]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"install failed: {one_line(proc.stderr or proc.stdout)}")
    (where / ".installed").write_text(" ".join(requirements) + "\n")
    return python


# -- floors (PERFORMANCE.md), measured in this run ----------------------------------------------


def bench_floors() -> Any:
    """tests/bench/floors.py, the floors pipekit's own bench uses (loaded by path)."""
    spec = importlib.util.spec_from_file_location("pipekit_bench_floors",
                                                  ROOT / "tests" / "bench" / "floors.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_floors(steps: int, numpy_python: Path | None, repeat: int = 5) -> dict[str, list]:
    floors = bench_floors()
    out: dict[str, list] = {
        "w1": [floors.sqlite_floor(steps) for _ in range(repeat)],
        "w2": [floors.w2_floor() for _ in range(repeat)],
        "w3": [floors.sqlite_lookup_floor(steps) for _ in range(repeat)],
        "w5": [],
    }
    if numpy_python is not None:
        out["w5"] = [floors.w5_floor(str(numpy_python)) for _ in range(3)]
    return out


# -- running one workload -----------------------------------------------------------------------


def run_workload(python: Path, peer: Peer, workload: str, steps: int,
                 timeout: float) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix=f"peers-{peer.name}-{workload}-"))
    env = dict(os.environ, PYTHONPATH=str(WORKLOADS), PYTHONDONTWRITEBYTECODE="1")
    for name in ("PIPEKIT_HOME", "PIPEKIT_DB", "PREFECT_API_URL", "DAGSTER_HOME"):
        env.pop(name, None)
    cmd = [str(python), str(WORKLOADS / f"peer_{peer.name}.py"), workload,
           "--steps", str(steps), "--state", str(state)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=state, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the peer's children too
        proc.communicate()
        return {"error": f"timeout (>{timeout:g} s)"}
    finally:
        process_wall = time.perf_counter() - start
        shutil.rmtree(state, ignore_errors=True)
    if proc.returncode:
        return {"error": f"failed: {one_line(stderr or stdout)}"}
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                continue
            result["process_wall"] = process_wall
            return result
    return {"error": f"failed: no result line ({one_line(stderr or stdout)})"}


# -- the table ----------------------------------------------------------------------------------


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def cell(result: dict[str, Any] | None, key: str, floor: float | None) -> str:
    if result is None:
        return "—"
    if "error" in result:
        return result["error"]
    if result.get("skipped"):
        return result["skipped"]
    value = result.get(key)
    if value is None:
        return "—"
    text = fmt_time(value)
    if result.get("workload") == "w3" and result.get("misses"):
        text += f", {result['misses']} of {result['steps']} steps re-ran (no hit)"
    if result.get("steps") is not None and key == "per_step":
        text += f" (N={result['steps']})" if result["steps"] != ARGS_STEPS[0] else ""
    if floor:
        ratio = value / floor
        text += f" = **{ratio:.1f}×**" if ratio >= 0.1 else f" = **{ratio:.3f}×**"
    return text


ARGS_STEPS = [1000]


def table(rows: list[tuple[Peer, str, dict[str, dict[str, Any]]]], floors: dict[str, float],
          meta: dict[str, str]) -> str:
    out = ["# pipekit and its peers: W1, W2, W3, W5 (run_peers.py)", "",
           "Made by run_peers.py; see README.md beside it for the modes and caveats. One run "
           "of each workload per peer; ratios are to the floor row, measured in the same run.",
           "", f"Measured {meta['date']} on {meta['machine']}; Python {meta['python']}; "
           f"load average {meta['load_before']} before, {meta['load_after']} after.",
           "", f"Command: `{meta['command']}`", "",
           "| peer (version) | records each step? | W1 per step (× floor) | W2 wall (× floor) "
           "| W3 per hit, new process (× floor) | W5 wall (× floor) |",
           "|---|---|---|---|---|---|",
           f"| plain-Python floor | — | {fmt_time(floors['w1'])} (SQLite insert + update) "
           f"| {fmt_time(floors['w2'])} (ThreadPoolExecutor(8)) "
           f"| {fmt_time(floors['w3'])} (indexed SQLite lookup) "
           f"| {fmt_time(floors['w5']) if floors.get('w5') else '—'} "
           "(np.save, np.load in another process) |"]
    for peer, version, results in rows:
        if "install" in results:
            out.append(f"| {peer.name} | {results['install']['error']} | | | | |")
            continue
        w1 = results.get("w1")
        records = "—"
        if w1 and "records" in w1:
            records = "yes" if w1["records"] else "no"
        out.append(
            f"| {peer.name} {version} | {records} "
            f"| {cell(w1, 'per_step', floors['w1'])} "
            f"| {cell(results.get('w2'), 'wall', floors['w2'])} "
            f"| {cell(results.get('w3'), 'per_step', floors['w3'])} "
            f"| {cell(results.get('w5'), 'wall', floors.get('w5'))} |")
    out += ["", "Each peer's mode, per workload (as its workload module reported it):", ""]
    for peer, _version, results in rows:
        modes = []
        for workload in WORKLOAD_IDS:
            r = results.get(workload) or {}
            text = r.get("mode") or r.get("skipped") or r.get("error")
            if r.get("note"):
                text = f"{text}; {r['note']}"
            if r.get("populate_wall") is not None:
                text = f"{text}; populating run {fmt_time(r['populate_wall'])}"
            if text:
                modes.append(f"{workload.upper()}: {text}")
        if peer.note:
            modes.append(f"version: {peer.note}")
        if modes:
            out.append(f"- **{peer.name}**: " + "; ".join(modes))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="W1/W3 chain length")
    parser.add_argument("--only", default="",
                        help="comma-separated peers (" + ",".join(p.name for p in PEERS) + ")")
    parser.add_argument("--workloads", default=",".join(WORKLOAD_IDS),
                        help="comma-separated workloads (w1,w2,w3,w5)")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    parser.add_argument("--json", type=Path, help="write every raw result here")
    parser.add_argument("--venvs", type=Path, default=Path.home() / ".cache" / "pipekit-peers",
                        help="where the peers' venvs are made (never committed)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds one workload of one peer may take")
    args = parser.parse_args(argv)
    ARGS_STEPS[0] = args.steps
    only = {name for name in args.only.split(",") if name}
    unknown = only - {p.name for p in PEERS}
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    chosen = [p for p in PEERS if not only or p.name in only]
    workloads = [w for w in args.workloads.split(",") if w]
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())

    pythons: dict[str, Path | dict[str, str]] = {}
    for peer in chosen:
        try:
            pythons[peer.name] = venv_python(peer, args.venvs)
        except RuntimeError as exc:
            pythons[peer.name] = {"error": str(exc)}
    numpy_python = next((p for p in pythons.values() if isinstance(p, Path)), None)

    print("[peers] floors", file=sys.stderr, flush=True)
    floor_runs = measure_floors(args.steps, numpy_python)
    rows, raw = [], {}
    for peer in chosen:
        python = pythons[peer.name]
        results: dict[str, dict[str, Any]] = {}
        if isinstance(python, dict):
            results["install"] = python
            rows.append((peer, peer.version, results))
            raw[peer.name] = results
            continue
        for workload in workloads:
            print(f"[peers] {peer.name} {workload}", file=sys.stderr, flush=True)
            results[workload] = run_workload(python, peer, workload, args.steps, args.timeout)
            print(f"[peers]   {json.dumps(results[workload])}", file=sys.stderr, flush=True)
        version = next((r["version"] for r in results.values() if "version" in r),
                       peer.version)
        rows.append((peer, version, results))
        raw[peer.name] = results
    print("[peers] floors again", file=sys.stderr, flush=True)
    for key, values in measure_floors(args.steps, numpy_python).items():
        floor_runs[key] += values
    floors = {key: statistics.median(values) for key, values in floor_runs.items() if values}

    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {cpu_model()}, {os.cpu_count()} cores, "
                   f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_before": load_before,
        "load_after": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "command": " ".join(["python", "docs/benchmarks/peers/run_peers.py",
                             *(argv if argv is not None else sys.argv[1:])]),
    }
    text = table(rows, floors, meta)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "floors": floor_runs, "results": raw},
                                        indent=2))
    return 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
