"""Pipeline step 2 (ClearML style): read step 1's dataset, split it, upload the parts."""

import pickle

from pipekit import StorageManager, Task

# Connecting to the tracker
task = Task.init(project_name="compat examples", task_name="pipeline step 2 process dataset")

# program arguments
# Use either dataset_task_id to point to a task's artifact or
# use a direct url with dataset_url
args = {
    "dataset_task_id": "",
    "dataset_url": "",
    "random_state": 42,
    "test_size": 0.2,
}

# store arguments, later we will be able to change them from outside the code
task.connect(args)
print(f"Arguments: {args}")

# get the dataset from a direct url
if args["dataset_url"]:
    dataset_pkl = StorageManager.get_local_copy(remote_url=args["dataset_url"])
    print("Input url {}".format(args["dataset_url"]))
# get the dataset from the task's artifact
elif args["dataset_task_id"]:
    dataset_upload_task = Task.get_task(task_id=args["dataset_task_id"])
    dataset_pkl = dataset_upload_task.artifacts["dataset"].get_local_copy()
else:
    raise ValueError("Missing dataset link")

with open(dataset_pkl, "rb") as f:
    dataset = pickle.load(f)

# both links must point at the same data
if args["dataset_task_id"]:
    dataset_upload_task = Task.get_task(task_id=args["dataset_task_id"])
    print("Input task id={} artifacts {}".format(
        args["dataset_task_id"], list(dataset_upload_task.artifacts.keys())))
    with open(dataset_upload_task.artifacts["dataset"].get_local_copy(), "rb") as f:
        if pickle.load(f) != dataset:
            raise ValueError("dataset_url and dataset_task_id disagree")

# "process" the data: a deterministic split
X, y = dataset["data"], dataset["target"]
cut = int(len(X) * (1 - args["test_size"]))
X_train, X_test, y_train, y_test = X[:cut], X[cut:], y[:cut], y[cut:]

# upload processed data
print("Uploading process dataset")
task.upload_artifact("X_train", X_train)
task.upload_artifact("X_test", X_test)
task.upload_artifact("y_train", y_train)
task.upload_artifact("y_test", y_test)
print("Done")
