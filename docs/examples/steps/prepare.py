"""A step script for docs/examples/pipeline_from_tasks.py: makes a small data set."""

import argparse

from pipekit import Task

task = Task.init(project_name="examples/templates", task_name="prepare")
parser = argparse.ArgumentParser()
parser.add_argument("--rows", type=int, default=10)
parser.add_argument("--scale", type=float, default=1.0)
args = parser.parse_args()

rows = [round(i * args.scale, 3) for i in range(args.rows)]
print(f"prepared {len(rows)} rows (scale {args.scale})")
task.upload_artifact("rows", rows)
