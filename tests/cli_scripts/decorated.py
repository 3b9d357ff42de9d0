"""A two-component decorator pipeline for tests/test_cli_runs.py: ``square`` then ``add``.

The script chooses local mode (``run_locally()``). Every execution of a component leaves a
file ``<component>.<pid>.<unique>`` in ``$PIPEKIT_TEST_MARKS``, and the script writes its own
pid to ``script.pid`` there.
"""

from pipekit import PipelineDecorator


@PipelineDecorator.component(return_values=["squared"])
def square(n):
    import os
    import uuid
    from pathlib import Path

    Path(os.environ["PIPEKIT_TEST_MARKS"], f"square.{os.getpid()}.{uuid.uuid4().hex}").touch()
    return n * n


@PipelineDecorator.component(return_values=["sum"])
def add(value, extra):
    import os
    import uuid
    from pathlib import Path

    Path(os.environ["PIPEKIT_TEST_MARKS"], f"add.{os.getpid()}.{uuid.uuid4().hex}").touch()
    return value + extra


@PipelineDecorator.pipeline(name="decorated", project="cli-tests", version="1.0.0")
def pipeline(n=2, extra=1):
    return add(square(n), extra)


if __name__ == "__main__":
    import os
    from pathlib import Path

    Path(os.environ["PIPEKIT_TEST_MARKS"], "script.pid").write_text(str(os.getpid()))
    PipelineDecorator.run_locally()
    pipeline()
