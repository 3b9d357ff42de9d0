"""A ClearML-style decorated pipeline; only the import line differs from a ClearML script.

Run mode from argv: ``debug`` (every step in this process) or ``local`` (steps as
subprocesses, the default).
"""

import json
import os
import sys

from pipekit import PipelineDecorator, TaskTypes


# Each component becomes its own task when the pipeline calls it; its return values are
# stored as artifacts of that task under the names given in `return_values`.
@PipelineDecorator.component(return_values=["data_frame"], cache=False,
                             task_type=TaskTypes.data_processing)
def step_one(rows: int, noise: int = 0):
    print(f"step_one: generating {rows} rows")
    # a tiny "dataset": y = 3x + 2 (+ a constant noise term)
    return [{"x": float(i), "y": 3.0 * i + 2.0 + noise} for i in range(rows)]


@PipelineDecorator.component(return_values=["X_train", "X_test"], cache=False,
                             task_type=TaskTypes.data_processing)
def step_two(data_frame, test_size=0.25):
    print(f"step_two: splitting {len(data_frame)} rows")
    cut = int(len(data_frame) * (1 - test_size))
    return data_frame[:cut], data_frame[cut:]


@PipelineDecorator.component(return_values=["model"], cache=False, task_type=TaskTypes.training)
def step_three(data):
    from pipekit import PipelineDecorator

    print("step_three: fitting")
    train, test = data
    n = len(train)
    mean_x = sum(r["x"] for r in train) / n
    mean_y = sum(r["y"] for r in train) / n
    cov = sum((r["x"] - mean_x) * (r["y"] - mean_y) for r in train)
    var = sum((r["x"] - mean_x) ** 2 for r in train)
    slope = cov / var
    intercept = mean_y - slope * mean_x
    error = max(abs(slope * r["x"] + intercept - r["y"]) for r in test)
    # report on the pipeline's own task, from inside a step
    PipelineDecorator.get_logger().report_scalar(
        title="model", series="test_error", value=error, iteration=0)
    PipelineDecorator.upload_artifact("model_card", {"kind": "linear", "rows": n + len(test)})
    return {"slope": round(slope, 6), "intercept": round(intercept, 6),
            "test_error": round(error, 6), "n_train": n, "n_test": len(test)}


# The pipeline function's arguments are the run's parameters (the controller's Args).
@PipelineDecorator.pipeline(name="compat decorator pipeline", project="compat examples",
                            version="1.0.0")
def executing_pipeline(rows, mock_parameter="mock"):
    print("pipeline args:", rows, mock_parameter)

    print("launch step one")
    data_frame = step_one(rows)

    # Passing a step's result to another step does not load it here: it makes step_one a
    # parent of step_two.
    print("launch step two")
    X_train, X_test = step_two(data_frame)

    # Results can be used in the pipeline logic too: this waits for step_two and loads them.
    print("train rows in pipeline logic:", len(X_train))
    data = [X_train, X_test]

    print("launch step three")
    model = step_three(data)

    # Printing the model loads it, i.e. waits for step_three to complete.
    print(f"pipeline completed with model: {model}")
    return model


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "local"
    if mode == "debug":
        # everything in this process, synchronously: breakpoints work
        PipelineDecorator.debug_pipeline()
    else:
        # every step as a subprocess of this machine, same Python environment
        PipelineDecorator.run_locally()

    model = executing_pipeline(rows=20)
    print("RESULT " + json.dumps(dict(model), sort_keys=True))
    print(f"PID {os.getpid()}")
    print("process completed")
