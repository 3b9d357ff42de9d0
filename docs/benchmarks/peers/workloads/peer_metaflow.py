"""Metaflow workloads: generated FlowSpec files run with ``python flow.py run`` on the local
datastore and local metadata (both under --state), so every step is a recorded task in its
own process. The timed call is the whole ``run`` command; values are read back (untimed)
through Metaflow's client. Run by run_peers.py in Metaflow's venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import _common as c
import metaflow

#: W1 runs at most this many steps: a process per step makes 1,000 take minutes
MAX_CHAIN = 200

HEAD = "import time\n\nfrom metaflow import FlowSpec, step\n\n\nclass {name}(FlowSpec):\n"
TAIL = ("\n    @step\n    def end(self):\n        pass\n\n\n"
        "if __name__ == '__main__':\n    {name}()\n")


def step(name: str, body: str, nxt: str, join: bool = False) -> str:
    args = "self, inputs" if join else "self"
    return f"\n    @step\n    def {name}({args}):\n        {body}\n        self.next({nxt})\n"


def run_flow(args, name: str, steps: str, *extra: str) -> float:
    path = args.state / f"{name.lower()}.py"
    path.write_text(HEAD.format(name=name) + steps + TAIL.format(name=name))
    env = dict(os.environ, METAFLOW_DEFAULT_METADATA="local", METAFLOW_DEFAULT_DATASTORE="local",
               METAFLOW_DATASTORE_SYSROOT_LOCAL=str(args.state), USERNAME="bench")
    os.environ.update(env)
    cmd = [sys.executable, str(path), "--quiet", "--no-pylint", "run", *extra]
    wall, proc = c.timed(lambda: subprocess.run(cmd, cwd=args.state, env=env,
                                                capture_output=True, text=True))
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"metaflow run exited {proc.returncode}: {tail[0]}")
    return wall


def data(name: str):
    os.chdir(Path(os.environ["METAFLOW_DATASTORE_SYSROOT_LOCAL"]))
    from metaflow import Flow, namespace

    namespace(None)
    return Flow(name).latest_run


def w1(args):
    n = min(args.steps, MAX_CHAIN)
    steps = step("start", "self.x = 0", "self.s1")
    steps += "".join(step(f"s{i}", "self.x = self.x + 1",
                          f"self.s{i + 1}" if i < n else "self.end") for i in range(1, n + 1))
    wall = run_flow(args, "W1Chain", steps)
    value = data("W1Chain")["end"].task.data.x
    c.check(value == n, f"W1 gave {value!r}")
    note = f"N capped at {MAX_CHAIN} (a process per step)" if n < args.steps else None
    return {"wall": wall, "steps": n, "records": True, "note": note,
            "mode": "local datastore + metadata, a process per step"}


def w2(args):
    steps = step("start", f"self.src = 1\n        self.items = list(range({c.W2_FAN}))",
                 "self.nap, foreach='items'")
    steps += step("nap", f"time.sleep({c.W2_SLEEP})\n        self.y = self.src", "self.join")
    steps += step("join", "self.s = sum(i.y for i in inputs)", "self.end", join=True)
    wall = run_flow(args, "W2Fan", steps, "--max-workers", str(c.W2_WORKERS))
    value = data("W2Fan")["join"].task.data.s
    c.check(value == c.W2_FAN, f"W2 gave {value!r}")
    return {"wall": wall, "records": True,
            "mode": f"foreach, --max-workers {c.W2_WORKERS} (processes)"}


def w3(args):
    return {"wall": None,
            "skipped": "no cache (resume re-uses a failed run's finished steps, not a cache)"}


def w5(args):
    steps = step("start", "import numpy as np\n        "
                 f"self.a = np.arange({c.W5_LEN}, dtype=np.float64)", "self.consume")
    steps += step("consume", "self.last = float(self.a[-1])", "self.end")
    wall = run_flow(args, "W5Handoff", steps)
    value = data("W5Handoff")["consume"].task.data.last
    c.check(value == c.W5_LEN - 1, f"W5 gave {value!r}")
    return {"wall": wall, "records": True, "mode": "artifact pickled to the local datastore"}


if __name__ == "__main__":
    sys.exit(c.main("metaflow", metaflow.__version__, {"w1": w1, "w2": w2, "w3": w3, "w5": w5}))
