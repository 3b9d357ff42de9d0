from pipekit import PipelineController


def load(rows: int) -> list[int]:
    print("loading", rows, "rows")            # printed only when the step really runs
    return list(range(rows))


def total(data: list[int], scale: int) -> int:
    return sum(data) * scale


if __name__ == "__main__":
    pipe = PipelineController("cached-totals", "examples")
    pipe.add_parameter("rows", 1000)
    pipe.add_function_step("load", load, function_kwargs={"rows": "${pipeline.rows}"},
                           function_return=["data"], cache_executed_step=True)
    pipe.add_function_step("total", total,
                           function_kwargs={"data": "${load.data}", "scale": 3},
                           function_return=["total"], cache_executed_step=True)
    pipe.start_locally(run_pipeline_steps_locally=True)
    print({name: node.status for name, node in pipe.get_pipeline_dag().items()})
