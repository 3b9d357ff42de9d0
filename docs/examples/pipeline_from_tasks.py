"""A pipeline of existing tasks: templates made with Task.create, cloned and overridden.

    PIPEKIT_HOME=$(mktemp -d) python docs/examples/pipeline_from_tasks.py

See docs/pipelines-from-tasks.md.
"""

from pathlib import Path

from pipekit import PipelineController, Task

STEPS = Path(__file__).resolve().parent / "steps"

# 1. Templates: draft tasks that record a script and its default arguments.
Task.create(project_name="examples/templates", task_name="prepare",
            script=str(STEPS / "prepare.py"), argparse_args=[("rows", 10), ("scale", 1.0)])
train_template = Task.create(project_name="examples/templates", task_name="train",
                             script=str(STEPS / "train.py"))


def make_check_task(node):
    """base_task_factory: build the step's task at launch time (here, a fresh draft)."""
    return Task.create(project_name="examples", task_name=f"{node.name} (factory)",
                       script=str(STEPS / "prepare.py"), argparse_args=[("rows", 3)])


# 2. The pipeline.
pipe = PipelineController(name="from-tasks", project="examples", version="1.0.0")
pipe.add_parameter("rows", 6, description="how many rows prepare makes")

pipe.add_step(
    name="prepare",
    base_task_project="examples/templates", base_task_name="prepare",  # the latest of that name
    parameter_override={"Args/rows": "${pipeline.rows}", "Args/scale": 0.5},
    task_overrides={"comment": "made by the from-tasks pipeline", "tags": ["data"]},
)
pipe.add_step(
    name="train",
    base_task_id=train_template.id,
    parents=["prepare"],
    parameter_override={"Args/dataset_task": "${prepare.id}", "Args/lr": 0.25},
    configuration_overrides={"model": {"layers": 3, "width": 8}},
    task_overrides={"name": "train (3 layers)"},
)
pipe.add_step(
    name="check",
    base_task_factory=make_check_task,
    parameter_override={"Args/scale": "${train.parameters.Args/lr}"},  # train becomes a parent
)

# 3. Run it: the controller here, each step in its own subprocess.
pipe.start_locally(run_pipeline_steps_locally=True)

# 4. Look at what ran.
print(f"run {pipe.id}: successful={pipe.is_successful()}")
for name, node in pipe.get_pipeline_dag().items():
    task = Task.get_task(task_id=node.executed)
    print(f"  {name:<8} {node.status:<10} task {task.id[:8]} {task.name!r}")

prepare = Task.get_task(task_id=pipe.get_pipeline_dag()["prepare"].executed)
print("prepare:", prepare.get_parameters()["Args/rows"], prepare.data.comment, prepare.get_tags())
print("         rows =", prepare.artifacts["rows"].get())
train = Task.get_task(task_id=pipe.get_pipeline_dag()["train"].executed)
print("train:   model =", train.get_configuration_object_as_dict("model"))
print("         score =", train.artifacts["score"].get())
check = Task.get_task(task_id=pipe.get_pipeline_dag()["check"].executed)
print("check:   Args/scale =", check.get_parameter("Args/scale", cast=True))
print("the template is untouched:", train_template.get_status(), train_template.get_parameters())
