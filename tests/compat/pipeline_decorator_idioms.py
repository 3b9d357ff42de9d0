"""ClearML idioms inside a decorated pipeline's logic (seen in real ClearML scripts).

* ``PipelineDecorator.get_current_pipeline()`` is the running pipeline (a controller: ``.id``,
  ``add_tags``, ``connect_configuration``);
* ``Task.current_task()`` in the pipeline logic is the pipeline's controller task.
"""

from pipekit import PipelineDecorator, Task


@PipelineDecorator.component(return_values=["total"])
def add(a, b):
    return a + b


@PipelineDecorator.pipeline(name="compat decorator idioms", project="compat examples",
                            version="1.0.0")
def pipeline_logic(a=1, b=2):
    pipeline = PipelineDecorator.get_current_pipeline()
    pipeline.connect_configuration(configuration={"lr": 0.1, "epochs": 3},
                                   name="train config")
    pipeline.add_tags(["idioms", "lr-0.1"])
    print(f"PIPELINE {pipeline.id}")

    controller = Task.current_task()
    print(f"CONTROLLER {controller.id if controller is not None else None}")

    total = add(a, b)
    print(f"TOTAL {total}")


if __name__ == "__main__":
    PipelineDecorator.debug_pipeline()
    pipeline_logic(a=20, b=22)
