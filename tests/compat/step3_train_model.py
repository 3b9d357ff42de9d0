"""Pipeline step 3 (ClearML style): train on step 2's artifacts, upload the model."""

import json

from pipekit import Task

# Connecting to the tracker
task = Task.init(project_name="compat examples", task_name="pipeline step 3 train model")

# Arguments
args = {
    "dataset_task_id": "REPLACE_WITH_DATASET_TASK_ID",
    "scale": 1,
}
task.connect(args)

print("Retrieving dataset")
dataset_task = Task.get_task(task_id=args["dataset_task_id"])
X_train = dataset_task.artifacts["X_train"].get()
X_test = dataset_task.artifacts["X_test"].get()
y_train = dataset_task.artifacts["y_train"].get()
y_test = dataset_task.artifacts["y_test"].get()
print("dataset loaded")

# least squares on one feature
xs = [row[0] for row in X_train]
n = len(xs)
mean_x, mean_y = sum(xs) / n, sum(y_train) / n
slope = (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, y_train, strict=True))
         / sum((x - mean_x) ** 2 for x in xs))
intercept = mean_y - slope * mean_x
error = max(abs(slope * row[0] + intercept - y) for row, y in zip(X_test, y_test, strict=True))

model = {"slope": round(slope * args["scale"], 6), "intercept": round(intercept, 6),
         "n_train": n, "n_test": len(X_test), "scale": args["scale"]}
model_path = "model.json"  # in the working directory
with open(model_path, "w") as f:
    json.dump(model, f)

task.get_logger().report_scalar(title="test", series="max_error", value=error, iteration=0)
task.upload_artifact("model", model)
task.upload_model("linear", model_path, framework="custom")
print("model trained & stored")
print("Done")
