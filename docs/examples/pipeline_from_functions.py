"""A pipeline of Python functions: add_function_step, return values passed by reference.

    PIPEKIT_HOME=$(mktemp -d) python docs/examples/pipeline_from_functions.py

See docs/pipelines-from-functions.md.
"""

import datetime

from pipekit import PipelineController, Task


def mean(values):
    """A helper the step calls: listed in helper_functions, so it is part of the step's code."""
    return sum(values) / len(values)


def load(rows, offset):
    print(f"loading {rows} rows")
    return [float(i + offset) for i in range(rows)]


def split(data, ratio):
    cut = int(len(data) * ratio)
    return data[:cut], data[cut:]          # two values: function_return names both


def fit(train, test, lr, features, since):
    # Imports inside the function run in the step, wherever it executes.
    from pipekit import PipelineController

    model = {"bias": mean(train) * lr, "features": features, "since": since.isoformat()}
    error = abs(mean(test) - model["bias"])
    # Class-level calls act on the pipeline's controller task, from inside any step:
    PipelineController.get_logger().report_scalar("fit", "error", error, iteration=0)
    PipelineController.upload_artifact("model_summary", {"bias": model["bias"]})
    return model, error


pipe = PipelineController(name="from-functions", project="examples", version="1.0.0")
pipe.add_parameter("rows", 8)
pipe.add_parameter("ratio", 0.75)

pipe.add_function_step(
    name="load", function=load,
    function_kwargs={"rows": "${pipeline.rows}", "offset": 1},
    function_return=["data"],
)
pipe.add_function_step(
    name="split", function=split,
    function_kwargs={"data": "${load.data}", "ratio": "${pipeline.ratio}"},  # load -> split
    function_return=["train", "test"],
)
pipe.add_function_step(
    name="fit", function=fit,
    function_kwargs={"train": "${split.train}", "test": "${split.test}", "lr": 0.5,
                     "features": ["x", "y"],                 # plain: a kwargs/ parameter
                     "since": datetime.date(2024, 1, 1)},    # not plain: stored as an artifact
    function_return=["model", "error"],
    helper_functions=[mean],
    task_type="training",
)

pipe.start_locally(run_pipeline_steps_locally=True)

print(f"run {pipe.id}: successful={pipe.is_successful()}")
dag = pipe.get_pipeline_dag()
for name, node in dag.items():
    print(f"  {name:<6} {node.status:<10} task {node.executed[:8]}")

fit_task = Task.get_task(task_id=dag["fit"].executed)
print("fit parameters:")
for key, value in sorted(fit_task.get_parameters().items()):
    print(f"  {key} = {value}")
print("fit artifacts:", sorted(fit_task.artifacts))
print("model =", fit_task.artifacts["model"].get())
print("fit code entry point:", fit_task.data.script["entry_point"],
      "returns", fit_task.data.script["return"])

run = Task.get_task(task_id=pipe.id)
print("controller artifacts:", sorted(run.artifacts))
print("controller metrics:", run.get_last_scalar_metrics())
