"""Shared by the peer workload modules: the command line, the W3 two-process protocol and the
one-JSON-line result. Runs inside a peer's own venv, so it imports nothing but the stdlib.

A module calls :func:`main` with its workloads; each workload takes the parsed arguments and
returns a dict with at least ``wall`` (seconds of the whole pipeline call). ``main`` adds the
peer's name, version, workload and per-step time, and prints it as the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

W2_FAN, W2_SLEEP, W2_WORKERS = 50, 0.010, 8
W5_BYTES = 100 * 2**20
W5_LEN = W5_BYTES // 8

#: how many times a step body ran in this process (W3 counts its cache misses with it)
CALLS = {"n": 0}

Workload = Callable[[argparse.Namespace], dict[str, Any]]


def inc(x: int) -> int:
    CALLS["n"] += 1
    return x + 1


def nap(x: int) -> int:
    time.sleep(W2_SLEEP)
    return x


def make_array() -> Any:
    import numpy as np

    return np.arange(W5_LEN, dtype=np.float64)


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"check failed: {what}")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def w3_in_new_process(args: argparse.Namespace, populate: Callable[[], Any]) -> dict[str, Any]:
    """W3: run ``populate`` here (the chain with caching on, every step executed), then the
    same chain again in a new process (``<module> w3-hit``, same ``--state``); returns the
    new process's result plus the populating run's wall time.
    """
    pop_wall, _ = timed(populate)
    cmd = [sys.executable, sys.argv[0], "w3-hit", "--steps", str(args.steps),
           "--state", str(args.state)]
    # a new process, not a child of this one's pipeline: ClearML marks its children with
    # CLEARML_PROC_MASTER_ID, and a child whose master task it cannot find gets a stub Task
    env = {k: v for k, v in os.environ.items()
           if k not in ("CLEARML_PROC_MASTER_ID", "TRAINS_PROC_MASTER_ID")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"w3-hit exited {proc.returncode}: {tail[0]}")
    hit = last_json(proc.stdout)
    hit["populate_wall"] = pop_wall
    return hit


def w3_hit_result(wall: float, steps: int, value: int) -> dict[str, Any]:
    """The result of a W3 hit run: how many step bodies ran again (0 when every step hit)."""
    check(value == steps, f"W3 chain gave {value!r}, expected {steps}")
    misses = CALLS["n"]
    return {"wall": wall, "misses": misses, "hits": steps - misses}


def last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise SystemExit("no JSON result line in the output")


def main(peer: str, version: str, workloads: dict[str, Workload]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=sorted(workloads))
    parser.add_argument("--steps", type=int, default=1000, help="W1/W3 chain length")
    parser.add_argument("--state", type=Path, required=True,
                        help="an empty folder this peer may keep its store in")
    args = parser.parse_args()
    result = workloads[args.workload](args)
    result.update(peer=peer, version=version, workload=args.workload)
    if args.workload in ("w1", "w3-hit", "w3") and "steps" not in result:
        result["steps"] = args.steps
    if "steps" in result and result.get("wall") is not None:
        result["per_step"] = result["wall"] / result["steps"]
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
    return 0
