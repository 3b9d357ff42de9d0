"""Three cached function steps for tests/test_cli_runs.py: ``load`` and ``offset`` feed ``total``.

``load`` depends on the parameter ``n``, ``offset`` only on ``k``, so a rerun with a new ``n``
executes ``load`` and ``total`` again and serves ``offset`` from the cache. Every execution of a
step leaves a file ``<step>.<pid>.<unique>`` in ``$PIPEKIT_TEST_MARKS``: the files count the
executions and tell which process ran them.
"""

from pipekit import PipelineController


def mark(step):
    import os
    import uuid
    from pathlib import Path

    Path(os.environ["PIPEKIT_TEST_MARKS"], f"{step}.{os.getpid()}.{uuid.uuid4().hex}").touch()


def load(n):
    mark("load")
    return list(range(n))


def offset(k):
    mark("offset")
    return k * 100


def total(values, base):
    mark("total")
    return sum(values) + base


if __name__ == "__main__":
    import os
    from pathlib import Path

    Path(os.environ["PIPEKIT_TEST_MARKS"], "script.pid").write_text(str(os.getpid()))
    pipe = PipelineController(name="three-steps", project="cli-tests", version="1.0.0")
    pipe.add_parameter("n", 2, description="how many values load makes")
    pipe.add_parameter("k", 1)
    pipe.add_function_step("load", load, {"n": "${pipeline.n}"}, ["values"],
                           helper_functions=[mark], cache_executed_step=True)
    pipe.add_function_step("offset", offset, {"k": "${pipeline.k}"}, ["base"],
                           helper_functions=[mark], cache_executed_step=True)
    pipe.add_function_step("total", total, {"values": "${load.values}", "base": "${offset.base}"},
                           ["total"], helper_functions=[mark], cache_executed_step=True)
    pipe.start_locally(run_pipeline_steps_locally=True)
