"""ClearML-style pipeline callbacks: pre/post execute per step, and status changes.

Uses the step 1 and step 2 scripts of the from-tasks example as templates, plus a function
step. Everything the callbacks see is printed, for the test to check.
"""

import json
import os

from pipekit import PipelineController, Task

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = "compat callbacks"


def pre_execute_callback_example(a_pipeline, a_node, current_param_override):
    # type (PipelineController, PipelineController.Node, dict) -> bool
    params = json.dumps(current_param_override, sort_keys=True)
    print(f"PRE {a_node.name} base={a_node.base_task_id} params={params}")
    if a_node.name == "stage_process":
        # change a parameter of the step about to be launched
        current_param_override["General/test_size"] = 0.5
    if a_node.name == "stage_skipped":
        # returning False skips this node (and the subtree below it)
        return False
    # return True to continue DAG execution
    return True


def post_execute_callback_example(a_pipeline, a_node):
    # type (PipelineController, PipelineController.Node) -> None
    print(f"POST {a_node.name} executed={a_node.executed} job={a_node.job.task_id()}")
    # the actual executed Task
    executed = Task.get_task(task_id=a_node.executed)
    artifacts = sorted(executed.artifacts.keys())
    print(f"POSTTASK {a_node.name} status={executed.get_status()} artifacts={artifacts}")


def status_change_callback_example(a_pipeline, a_node, previous_status):
    print(f"STATUS {a_node.name} {previous_status}->{a_node.status}")


def count_rows(dataset_url):
    import pickle

    from pipekit import StorageManager

    with open(StorageManager.get_local_copy(remote_url=dataset_url), "rb") as f:
        return {"rows": len(pickle.load(f)["data"])}


templates = {}
for script, name in [("step1_dataset_artifact.py", "callbacks step 1"),
                     ("step2_data_processing.py", "callbacks step 2")]:
    templates[name] = Task.create(project_name=PROJECT, task_name=name,
                                  script=os.path.join(HERE, script)).id
    print(f"TEMPLATE {name} {templates[name]}")

pipe = PipelineController(name="compat callbacks pipeline", project=PROJECT, version="1.0.0")
pipe.add_parameter("rows", 12)

pipe.add_step(name="stage_data", base_task_id=templates["callbacks step 1"],
              parameter_override={"General/rows": "${pipeline.rows}"},
              pre_execute_callback=pre_execute_callback_example,
              post_execute_callback=post_execute_callback_example,
              status_change_callback=status_change_callback_example)
pipe.add_step(name="stage_process", parents=["stage_data"],
              base_task_project=PROJECT, base_task_name="callbacks step 2",
              parameter_override={"General/dataset_task_id": "${stage_data.id}",
                                  "General/test_size": 0.25},
              pre_execute_callback=pre_execute_callback_example,
              post_execute_callback=post_execute_callback_example)
pipe.add_step(name="stage_skipped", parents=["stage_process"],
              base_task_id=templates["callbacks step 2"],
              parameter_override={"General/dataset_task_id": "${stage_data.id}"},
              pre_execute_callback=pre_execute_callback_example,
              post_execute_callback=post_execute_callback_example)
pipe.add_function_step(name="after_skipped", parents=["stage_skipped"], function=count_rows,
                       function_kwargs=dict(dataset_url=""), function_return=["summary"],
                       post_execute_callback=post_execute_callback_example)
pipe.add_function_step(name="summary", function=count_rows,
                       function_kwargs=dict(dataset_url="${stage_data.artifacts.dataset.url}"),
                       function_return=["summary"],
                       pre_execute_callback=pre_execute_callback_example,
                       post_execute_callback=post_execute_callback_example)

pipe.start_locally(run_pipeline_steps_locally=True)

for node in pipe.get_pipeline_dag().values():
    print(f"NODE {node.name} status={node.status} executed={node.executed}")
print(f"SUCCESS {pipe.is_successful()}")
print(f"RUN {pipe.id}")
