"""ClearML workloads: ``PipelineDecorator`` pipelines in offline mode (``Task.set_offline``,
no server) and debug mode (``PipelineDecorator.debug_pipeline()``), the only local mode that
runs without a server: the pipeline is an offline task, its steps are plain function calls
(no step tasks), run one at a time. HOME is --state, so the offline session folder is too.
Run by run_peers.py in ClearML's venv.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

state = Path(sys.argv[sys.argv.index("--state") + 1]).resolve()
os.environ["HOME"] = str(state)
os.environ["CLEARML_OFFLINE_MODE"] = "1"
os.environ.setdefault("CLEARML_LOG_LEVEL", "WARNING")

import _common as c  # noqa: E402
import clearml  # noqa: E402
from clearml import PipelineDecorator, Task  # noqa: E402

Task.set_offline(True)
PipelineDecorator.debug_pipeline()


@PipelineDecorator.component(return_values=["x"])
def inc(x):
    import _common

    return _common.inc(x)


@PipelineDecorator.component(return_values=["x"], cache=True)
def inc_cached(x):
    import _common

    return _common.inc(x)


@PipelineDecorator.component(return_values=["x"])
def source():
    return 1


@PipelineDecorator.component(return_values=["y"])
def nap(x):
    import _common

    return _common.nap(x)


@PipelineDecorator.component(return_values=["s"])
def total(parts):
    return sum(parts)


@PipelineDecorator.component(return_values=["a"])
def make():
    import _common

    return _common.make_array()


@PipelineDecorator.component(return_values=["last"])
def last_item(a):
    return float(a[-1])


OUT: dict = {}


@PipelineDecorator.pipeline(name="w1", project="peers", version="1")
def chain(n):
    x = 0
    for _ in range(n):
        x = inc(x)
    OUT["v"] = int(x)


@PipelineDecorator.pipeline(name="w3", project="peers", version="1")
def chain_cached(n):
    x = 0
    for _ in range(n):
        x = inc_cached(x)
    OUT["v"] = int(x)


@PipelineDecorator.pipeline(name="w2", project="peers", version="1")
def fan():
    s = source()
    OUT["v"] = int(total([nap(s) for _ in range(c.W2_FAN)]))


@PipelineDecorator.pipeline(name="w5", project="peers", version="1")
def handoff():
    OUT["v"] = float(last_item(make()))


MODE = "offline, debug_pipeline: steps are plain calls, no step tasks"


def w1(args):
    wall, _ = c.timed(lambda: chain(args.steps))
    c.check(OUT.get("v") == args.steps, f"W1 gave {OUT.get('v')!r}")
    return {"wall": wall, "records": False, "mode": MODE}


def w2(args):
    wall, _ = c.timed(fan)
    c.check(OUT.get("v") == c.W2_FAN, f"W2 gave {OUT.get('v')!r}")
    return {"wall": wall, "records": False, "mode": "sequential (debug mode)"}


def w3(args):
    return c.w3_in_new_process(args, lambda: chain_cached(args.steps))


def w3_hit(args):
    wall, _ = c.timed(lambda: chain_cached(args.steps))
    return {**c.w3_hit_result(wall, args.steps, OUT.get("v")), "records": False,
            "mode": "component(cache=True) in debug mode"}


def w5(args):
    wall, _ = c.timed(handoff)
    c.check(OUT.get("v") == c.W5_LEN - 1, f"W5 gave {OUT.get('v')!r}")
    return {"wall": wall, "records": False, "mode": "in memory (debug mode)"}


if __name__ == "__main__":
    sys.exit(c.main("clearml", clearml.__version__,
                    {"w1": w1, "w2": w2, "w3": w3, "w3-hit": w3_hit, "w5": w5}))
