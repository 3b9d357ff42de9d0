"""A pipeline whose second step raises: ``prepare`` completes, ``explode`` fails."""

from pipekit import PipelineController


def prepare():
    return 41


def explode(value):
    raise ValueError(f"cannot use value {value + 1}")


if __name__ == "__main__":
    pipe = PipelineController(name="failing", project="cli-tests", version="1.0.0")
    pipe.add_function_step("prepare", prepare, function_return=["value"])
    pipe.add_function_step("explode", explode, {"value": "${prepare.value}"})
    pipe.start_locally(run_pipeline_steps_locally=True)
