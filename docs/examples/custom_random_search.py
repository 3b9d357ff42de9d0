"""A manual random search, as in ClearML's
examples/automation/manual_random_param_search_example.py: clone a template task with random
parameters, enqueue each clone, let agents run them, read their metrics and pick the best.

    python docs/examples/train_task.py --epochs 2     # the template, once (or use an id)
    pipekit agent --queue default --workers 2 &       # who runs the clones
    python docs/examples/custom_random_search.py [TEMPLATE_ID]

With no TEMPLATE_ID it makes the template itself, from train_task.py next to this file.
"""

import random
import sys
from pathlib import Path

from pipekit import Task

TRIALS = 4

if len(sys.argv) > 1:
    template = Task.get_task(task_id=sys.argv[1])
else:
    template = Task.create(project_name="examples", task_name="train",
                           script=str(Path(__file__).with_name("train_task.py")),
                           argparse_args=[("epochs", 3), ("lr", 0.1)])

rng = random.Random(7)
trials = []
for i in range(TRIALS):
    clone = Task.clone(source_task=template, name=f"train lr trial {i}")
    clone.set_parameter("Args/lr", round(rng.uniform(0.01, 0.5), 3))
    Task.enqueue(clone, queue_name="default")
    trials.append(clone)
    print(f"enqueued {clone.id} with lr={clone.get_parameter('Args/lr')}")

for clone in trials:
    clone.wait_for_status(timeout=300)  # raises if a trial failed or was stopped

results = sorted((clone.get_reported_single_values()["final_loss"],
                  clone.get_parameter("Args/lr"), clone.id) for clone in trials)
for loss, lr, task_id in results:
    print(f"lr={lr:<6} final_loss={loss:.4f}  ({task_id})")
best_loss, best_lr, best_id = results[0]
print(f"best: lr={best_lr} (task {best_id})")
