"""A step script for docs/examples/pipeline_from_tasks.py: trains on prepare's artifact."""

import argparse

from pipekit import Task

task = Task.init(project_name="examples/templates", task_name="train")
parser = argparse.ArgumentParser()
parser.add_argument("--dataset_task", default="")
parser.add_argument("--lr", type=float, default=0.1)
args = parser.parse_args()
model = task.connect_configuration({"layers": 1, "width": 8}, name="model")

rows = Task.get_task(task_id=args.dataset_task).artifacts["rows"].get()
score = sum(rows) * args.lr * model["layers"]
print(f"trained on {len(rows)} rows: layers={model['layers']} lr={args.lr} score={score:.3f}")
task.get_logger().report_single_value("score", score)
task.upload_artifact("score", score)
