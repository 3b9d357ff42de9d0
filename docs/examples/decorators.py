"""A pipeline written with PipelineDecorator: components, lazy results, nested components.

    PIPEKIT_HOME=$(mktemp -d) python docs/examples/decorators.py          # local mode
    PIPEKIT_HOME=$(mktemp -d) python docs/examples/decorators.py debug    # debug mode

See docs/decorators.md.
"""

import sys
import time

from pipekit import PipelineDecorator, Task


@PipelineDecorator.component(return_values=["rows"])
def load(source, rows):
    import time

    time.sleep(0.5)                       # stands in for real work
    print(f"loading {rows} rows from {source}")
    return [float(i) for i in range(rows)]


@PipelineDecorator.component(return_values=["value"])
def scale(value, factor):
    return value * factor


@PipelineDecorator.component(return_values=["total", "count"])
def combine(left, right, factor):
    # A component called inside a step runs right here, as a child task of this step.
    scaled = [scale(v, factor) for v in left + right]
    return sum(scaled), len(scaled)


@PipelineDecorator.component(return_values=["report"])
def report(total, count):
    from pipekit import PipelineDecorator

    PipelineDecorator.get_logger().report_single_value("mean", total / count)
    return f"{count} rows, mean {total / count:.2f}"


@PipelineDecorator.pipeline(name="decorated", project="examples", version="1.0.0")
def pipeline(source="s3://bucket/data.csv", rows=4, factor=10):
    left = load(source, rows)             # returns at once: a lazy result
    right = load(source, rows * 2)        # runs concurrently with the first load
    total, count = combine(left, right, factor)   # left and right become its parents
    summary = report(total, count)
    print(f"the pipeline function sees: {summary}")   # using a value waits for it
    return summary


if __name__ == "__main__":
    if sys.argv[1:] == ["debug"]:
        PipelineDecorator.debug_pipeline()    # every step in this process, one at a time
    else:
        PipelineDecorator.run_locally()       # every step in its own subprocess
    began = time.monotonic()
    result = pipeline(rows=3)
    print(f"returned {result} after {time.monotonic() - began:.1f} s")

    run = Task.get_task(project_name="examples", task_name="decorated")   # the latest run
    print(f"run {run.id[:8]}: {run.get_status()}, Args = {run.get_parameters()}")
    print("mean on the controller:", run.get_reported_single_values())
    steps = Task.get_tasks(project_name="examples")
    for step in sorted(steps, key=lambda t: t.data.created):
        parent = Task.get_task(task_id=step.parent).name if step.parent else "-"
        print(f"  {step.name:<10} {step.get_status():<10} parent: {parent}")
    first, second = (t.data for t in steps if t.name in ("load", "load_1"))
    overlap = min(first.ended, second.ended) - max(first.started, second.started)
    print(f"the two loads overlapped for {max(overlap, 0):.1f} s")
    load_task = next(t for t in steps if t.name == "load")
    print("load's log:", load_task.get_log().strip())
