"""Pipeline step 1 (ClearML style): make a dataset and upload it as the artifact "dataset"."""

import pickle

from pipekit import Task

# Connecting to the tracker: executing a pipeline step, this returns the step's task
task = Task.init(project_name="compat examples", task_name="pipeline step 1 dataset artifact")

# program arguments, overridable from outside the code (section "General")
args = {
    "rows": 10,
    "noise": 0.0,
}
task.connect(args)
print(f"Arguments: {args}")

# "download" the data: a small linear dataset y = 3x + 2 (+ noise)
dataset = {
    "data": [[float(i)] for i in range(args["rows"])],
    "target": [3.0 * i + 2.0 + args["noise"] for i in range(args["rows"])],
    "feature_names": ["x"],
}
local_pkl = "dataset.pkl"  # in the working directory
with open(local_pkl, "wb") as f:
    pickle.dump(dataset, f)

# add and upload a local file as an artifact
task.upload_artifact("dataset", artifact_object=local_pkl)
print("uploading artifacts in the background")
print("Done")
