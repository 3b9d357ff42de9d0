"""What happens when steps fail: skipped descendants, continue_on_fail, abort_on_failure,
retries, time limits, and a failed component in a decorated pipeline.

    PIPEKIT_HOME=$(mktemp -d) python docs/examples/failure_handling.py

See docs/failure-handling.md.
"""

import tempfile
import time
from pathlib import Path

from pipekit import PipelineController, PipelineDecorator, Task
from pipekit.errors import StepFailed
from pipekit.testing import wait_until


def ok(x):
    return x


def fail(x):
    raise ValueError(f"bad input {x}")


def sleep(seconds):
    import time

    time.sleep(seconds)
    return seconds


def flaky(counter, failures):
    """Fails the first ``failures`` times it is called (the count is kept in a file)."""
    from pathlib import Path

    path = Path(counter)
    calls = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(calls))
    if calls <= failures:
        raise RuntimeError(f"attempt {calls} failed")
    return calls


def show(pipe):
    run = Task.get_task(task_id=pipe.id)
    print(f"== {run.name}: run {run.get_status()} {run.data.status_reason!r}")
    for name, node in pipe.get_pipeline_dag().items():
        tasks = [Task.get_task(task_id=t).get_status() for t in node.tasks]
        print(f"   {name:<11} {node.status:<10} tasks={tasks} {node.reason!r}")


# 1. A failed step: its descendants are skipped, the others still run, the run fails.
pipe = PipelineController(name="one-fails", project="examples/failures")
pipe.add_function_step("bad", fail, {"x": 1}, ["y"])
pipe.add_function_step("after_bad", ok, {"x": "${bad.y}"}, ["y"])
pipe.add_function_step("independent", ok, {"x": 2}, ["y"])
pipe.start_locally(run_pipeline_steps_locally=True)
show(pipe)

# 2. continue_on_fail=True: the run still completes (descendants are still skipped).
pipe = PipelineController(name="continue-on-fail", project="examples/failures")
pipe.add_function_step("bad", fail, {"x": 1}, ["y"], continue_on_fail=True)
pipe.add_function_step("after_bad", ok, {"x": "${bad.y}"}, ["y"])
pipe.add_function_step("independent", ok, {"x": 2}, ["y"])
pipe.start_locally(run_pipeline_steps_locally=True)
show(pipe)

# 3. abort_on_failure=True: the first failure stops every running step and the run.
pipe = PipelineController(name="abort", project="examples/failures", abort_on_failure=True)
pipe.add_function_step("long", sleep, {"seconds": 30}, ["s"])
pipe.add_function_step("bad", fail, {"x": 1}, ["y"])
pipe.add_function_step("after_long", ok, {"x": "${long.s}"}, ["y"])
pipe.start_locally(run_pipeline_steps_locally=True)
show(pipe)

# 4. retry_on_failure: each attempt is a fresh task; an int or a callable.
counters = Path(tempfile.mkdtemp())
pipe = PipelineController(name="retries", project="examples/failures")
pipe.add_function_step("flaky", flaky, {"counter": str(counters / "a"), "failures": 2},
                       ["calls"], retry_on_failure=2)
pipe.add_function_step("gives_up", flaky, {"counter": str(counters / "b"), "failures": 5},
                       ["calls"],
                       retry_on_failure=lambda pipeline, node, retries: retries < 1)
pipe.start_locally(run_pipeline_steps_locally=True)
show(pipe)

# 5. time_limit: a step running longer is stopped and failed (its processes killed).
pipe = PipelineController(name="time-limit", project="examples/failures")
pipe.add_function_step("slow", sleep, {"seconds": 30}, ["s"], time_limit=1)
pipe.start_locally(run_pipeline_steps_locally=True)
show(pipe)

# 6. stop(): running steps are stopped, pending ones skipped, the run ends stopped.
pipe = PipelineController(name="stopped", project="examples/failures")
pipe.add_function_step("long", sleep, {"seconds": 30}, ["s"])
pipe.add_function_step("after_long", ok, {"x": "${long.s}"}, ["y"])
pipe.start_locally(run_pipeline_steps_locally=True, wait=False)
wait_until(lambda: pipe.get_running_nodes(), 30, "the long step to start")
time.sleep(0.2)
pipe.stop()
show(pipe)


# 7. Decorators: using a failed component's result raises StepFailed in the pipeline function.
@PipelineDecorator.component(return_values=["y"])
def broken(x):
    raise ValueError(f"cannot handle {x}")


@PipelineDecorator.component(return_values=["y"])
def fallback(x):
    return -x


@PipelineDecorator.pipeline(name="decorated-failure", project="examples/failures")
def guarded(x=3):
    y = broken(x)
    try:
        return y + 1                      # using the value waits for it, and raises
    except StepFailed as exc:
        print(f"   caught StepFailed: step={exc.step!r} status={exc.status!r} {exc.reason!r}")
        return fallback(x)


PipelineDecorator.run_locally()
result = guarded()
run = Task.get_task(project_name="examples/failures", task_name="decorated-failure")
print(f"== decorated-failure: returned {result}; run {run.get_status()} "
      f"{run.data.status_reason!r}")


@PipelineDecorator.pipeline(name="decorated-uncaught", project="examples/failures")
def unguarded(x=3):
    return broken(x) + 1


try:
    unguarded()
except StepFailed as exc:
    run = Task.get_task(project_name="examples/failures", task_name="decorated-uncaught")
    print(f"== decorated-uncaught: raised {exc!r}; run {run.get_status()} "
          f"{run.data.status_reason!r}")
