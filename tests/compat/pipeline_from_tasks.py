"""A ClearML-style pipeline from existing tasks; only the import line differs from ClearML."""

import os

from pipekit import PipelineController, Task

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = "compat examples"


def register_templates():
    # ClearML users register each step's task beforehand (by running the step script once
    # or with Task.create); the pipeline clones the most recent task of each name.
    for script, name in [
        ("step1_dataset_artifact.py", "pipeline step 1 dataset artifact"),
        ("step2_data_processing.py", "pipeline step 2 process dataset"),
        ("step3_train_model.py", "pipeline step 3 train model"),
    ]:
        template = Task.create(project_name=PROJECT, task_name=name,
                               script=os.path.join(HERE, script))
        print(f"TEMPLATE {name} {template.id}")


register_templates()

pipe = PipelineController(
    name="compat tasks pipeline",
    project=PROJECT,
    version="1.0.0",
    add_pipeline_tags=False,
)
pipe.add_parameter("rows", 40)
pipe.add_parameter("scale", 2)

pipe.add_step(name="stage_data", base_task_project=PROJECT,
              base_task_name="pipeline step 1 dataset artifact",
              parameter_override={"General/rows": "${pipeline.rows}"})
pipe.add_step(name="stage_process", parents=["stage_data"],
              base_task_project=PROJECT, base_task_name="pipeline step 2 process dataset",
              parameter_override={"General/dataset_url": "${stage_data.artifacts.dataset.url}",
                                  "General/dataset_task_id": "${stage_data.id}",
                                  "General/test_size": 0.25})
pipe.add_step(name="stage_train", parents=["stage_process"],
              base_task_project=PROJECT, base_task_name="pipeline step 3 train model",
              parameter_override={"General/dataset_task_id": "${stage_process.id}",
                                  "General/scale": "${pipeline.scale}"})

# for debugging purposes run the steps as local subprocesses
pipe.start_locally(run_pipeline_steps_locally=True)

print(f"SUCCESS {pipe.is_successful()}")
print(f"RUN {pipe.id}")
print("done")
