"""A ClearML-style pipeline from functions; only the import line differs from a ClearML script."""

from pipekit import PipelineController


# A helper used by a step: passed as `helper_functions` so it travels with the step's code.
def split_rows(rows, test_size):
    cut = int(len(rows) * (1 - test_size))
    return rows[:cut], rows[cut:]


# We will use the following function as an independent pipeline component step;
# imports needed by the step are made inside the function.
def step_one(rows, noise=0):
    import random

    print(f"step_one: generating {rows} rows")
    rnd = random.Random(1234)
    data_frame = [{"x": float(i), "y": 3.0 * i + 2.0 + noise * rnd.uniform(-1, 1)}
                  for i in range(rows)]
    return data_frame


# Returns several values: each name in `function_return` becomes an artifact of the step.
def step_two(data_frame, test_size=0.2, tag=""):
    print(f"step_two: splitting {len(data_frame)} rows, tag={tag!r}")
    X_train, X_test = split_rows(data_frame, test_size)
    return X_train, X_test, tag


def step_three(X_train, X_test, data_task_id):
    from pipekit import PipelineController, Task

    print(f"step_three: training on {len(X_train)} rows (data from task {data_task_id})")
    n = len(X_train)
    mean_x = sum(r["x"] for r in X_train) / n
    mean_y = sum(r["y"] for r in X_train) / n
    slope = (sum((r["x"] - mean_x) * (r["y"] - mean_y) for r in X_train)
             / sum((r["x"] - mean_x) ** 2 for r in X_train))
    intercept = mean_y - slope * mean_x
    model = {"slope": round(slope, 6), "intercept": round(intercept, 6),
             "n_train": n, "n_test": len(X_test), "data_task_id": data_task_id}

    # Report on the pipeline (controller) task, not on this step's task.
    PipelineController.upload_artifact("final_model", model)
    PipelineController.get_logger().report_scalar(
        title="model", series="slope", value=slope, iteration=0)
    # ... and on this step's own task, as any task does.
    Task.current_task().get_logger().report_scalar(
        title="train", series="rows", value=n, iteration=0)
    return model


if __name__ == "__main__":

    # create the pipeline controller
    pipe = PipelineController(
        project="compat examples",
        name="compat functions pipeline",
        version="1.1",  # as ClearML's example writes it
        add_pipeline_tags=False,
    )

    # pipeline parameters: `${pipeline.<name>}` in the steps' arguments
    pipe.add_parameter(name="rows", description="how many rows to generate", default=40)
    pipe.add_parameter(name="test_size", default=0.25)
    pipe.add_parameter(name="run_label", default="nightly")

    pipe.add_function_step(
        name="step_one",
        function=step_one,
        function_kwargs=dict(rows="${pipeline.rows}"),
        function_return=["data_frame"],
        cache_executed_step=False,
    )
    pipe.add_function_step(
        name="step_two",
        # parents=['step_one'],  # detected from the kwargs references
        function=step_two,
        function_kwargs=dict(data_frame="${step_one.data_frame}",
                             test_size="${pipeline.test_size}",
                             tag="${pipeline.run_label}-split"),
        function_return=["X_train", "X_test", "tag"],
        helper_functions=[split_rows],
        cache_executed_step=False,
    )
    pipe.add_function_step(
        name="step_three",
        function=step_three,
        function_kwargs=dict(X_train="${step_two.X_train}", X_test="${step_two.X_test}",
                             data_task_id="${step_one.id}"),
        function_return=["model"],
        cache_executed_step=False,
    )

    # Run the pipeline here, each step as a subprocess of this machine.
    pipe.start_locally(run_pipeline_steps_locally=True)

    print(f"SUCCESS {pipe.is_successful()}")
    print(f"RUN {pipe.id}")
    print("pipeline completed")
