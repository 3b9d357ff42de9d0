"""Prefect 3 workloads: flows of tasks on the ephemeral local server (its own SQLite under
PREFECT_HOME), task runs recorded by it. Run by run_peers.py in Prefect's venv.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

state = Path(sys.argv[sys.argv.index("--state") + 1]).resolve()
os.environ.setdefault("PREFECT_HOME", str(state / "prefect-home"))
os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "true"
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import _common as c  # noqa: E402
import prefect  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.cache_policies import INPUTS, TASK_SOURCE  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

inc = task(c.inc, name="inc")
inc_cached = task(c.inc, name="inc_cached", cache_policy=INPUTS + TASK_SOURCE,
                  persist_result=True)
source = task(lambda: 1, name="source")
nap = task(c.nap, name="nap")
total = task(lambda parts: sum(parts), name="total")
make = task(c.make_array, name="make")
last_item = task(lambda a: float(a[-1]), name="last_item")


def chain_flow(step):
    @flow(name="w1")
    def chain(n: int) -> int:
        x = 0
        for _ in range(n):
            x = step(x)
        return x
    return chain


@flow(name="w2", task_runner=ThreadPoolTaskRunner(max_workers=c.W2_WORKERS))
def fan() -> int:
    s = source.submit()
    naps = [nap.submit(s) for _ in range(c.W2_FAN)]
    return total.submit(naps).result()


@flow(name="w5")
def handoff() -> float:
    return last_item(make())


def w1(args):
    wall, value = c.timed(lambda: chain_flow(inc)(args.steps))
    c.check(value == args.steps, f"W1 gave {value!r}")
    return {"wall": wall, "records": True, "mode": "flow of tasks, ephemeral server"}


def w2(args):
    wall, value = c.timed(fan)
    c.check(value == c.W2_FAN, f"W2 gave {value!r}")
    return {"wall": wall, "records": True, "mode": f"ThreadPoolTaskRunner({c.W2_WORKERS})"}


def w3(args):
    return c.w3_in_new_process(args, lambda: chain_flow(inc_cached)(args.steps))


def w3_hit(args):
    wall, value = c.timed(lambda: chain_flow(inc_cached)(args.steps))
    return {**c.w3_hit_result(wall, args.steps, value), "records": True,
            "mode": "cache_policy=INPUTS+TASK_SOURCE, persisted results"}


def w5(args):
    wall, value = c.timed(handoff)
    c.check(value == c.W5_LEN - 1, f"W5 gave {value!r}")
    return {"wall": wall, "records": True, "mode": "in memory (results not persisted)"}


if __name__ == "__main__":
    sys.exit(c.main("prefect", prefect.__version__,
                    {"w1": w1, "w2": w2, "w3": w3, "w3-hit": w3_hit, "w5": w5}))
