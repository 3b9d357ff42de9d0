"""A ClearML-style training script: run it directly, or clone it and run the clone.

    python docs/examples/train_task.py --epochs 5
    pipekit tasks clone <id> --param Args/epochs=3   # then: pipekit tasks run <new id>
"""

import argparse
import math

from pipekit import Task

task = Task.init(project_name="examples", task_name="train")

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--lr", type=float, default=0.1)
args = parser.parse_args()

config = task.connect({"hidden": 32, "activation": "relu"}, name="model")

logger = task.get_logger()
loss = 1.0
for epoch in range(args.epochs):
    loss *= math.exp(-args.lr * 3)
    logger.report_scalar("loss", "train", loss, iteration=epoch)
    print(f"epoch {epoch}: loss={loss:.4f}")
logger.report_single_value("final_loss", loss)

weights = [[0.1 * i * j for j in range(config["hidden"])] for i in range(4)]
task.upload_artifact("weights", weights, metadata={"epochs": args.epochs})
task.upload_model("mlp", weights, framework="python")
print(f"done: task {task.id}")
