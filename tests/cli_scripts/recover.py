"""A pipeline for the recovery tests (tests/test_resume.py): ``first`` and ``side`` start at
once; ``second`` follows ``first``, ``third`` follows ``second``, ``last`` joins ``third`` and
``side``::

    first -> second -> third -> last
    side  ---------------------/

Every execution of a step leaves a file ``<step>.<pid>.<unique>`` in ``$PIPEKIT_TEST_MARKS``
(so a test counts executions). The step named by ``$PIPEKIT_TEST_GATE`` writes
``<step>.started`` and then waits (at most 60 s) for a file ``go`` there. The steps run as
subprocesses, or on queues with ``--remote`` (agents run them); with ``--enqueue`` the
controller itself goes to queue ``services`` (``start(queue=...)``), for an agent to run.
"""

import sys

from pipekit import PipelineController


def mark(step):
    import os
    import time
    import uuid
    from pathlib import Path

    marks = Path(os.environ["PIPEKIT_TEST_MARKS"])
    (marks / f"{step}.{os.getpid()}.{uuid.uuid4().hex}").touch()
    if os.environ.get("PIPEKIT_TEST_GATE") == step:
        (marks / f"{step}.started").write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while not (marks / "go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("nobody opened the gate within 60 s")
            time.sleep(0.02)


def first(n):
    mark("first")
    return list(range(n))


def side(n):
    mark("side")
    return n * 10


def second(values):
    mark("second")
    return [v * 2 for v in values]


def third(values):
    mark("third")
    return sum(values)


def last(total, extra):
    mark("last")
    return total + extra


if __name__ == "__main__":
    pipe = PipelineController(name="recover", project="recovery-tests", version="1.0.0")
    pipe.add_parameter("n", 4)
    helpers = [mark]
    pipe.add_function_step("first", first, {"n": "${pipeline.n}"}, ["values"],
                           helper_functions=helpers)
    pipe.add_function_step("side", side, {"n": "${pipeline.n}"}, ["extra"],
                           helper_functions=helpers)
    pipe.add_function_step("second", second, {"values": "${first.values}"}, ["values"],
                           helper_functions=helpers)
    pipe.add_function_step("third", third, {"values": "${second.values}"}, ["total"],
                           helper_functions=helpers)
    pipe.add_function_step("last", last, {"total": "${third.total}", "extra": "${side.extra}"},
                           ["result"], helper_functions=helpers)
    if "--enqueue" in sys.argv:
        pipe.set_default_execution_queue("steps")
        pipe.start(queue="services")
    elif "--remote" in sys.argv:
        pipe.set_default_execution_queue("steps")
        pipe.start_locally()
    else:
        pipe.start_locally(run_pipeline_steps_locally=True)
