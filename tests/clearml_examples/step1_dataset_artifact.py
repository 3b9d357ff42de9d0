"""Mirrors ClearML's examples/pipeline/step1_dataset_artifact.py (allegroai/clearml).

Differences from ClearML's file: this docstring, ``import os``, and the dataset URL, read from
``PIPEKIT_TEST_IRIS_URL`` (a loopback server the test starts) instead of github.com.
"""
import os

from clearml import Task, StorageManager

# create an dataset experiment
task = Task.init(project_name="examples", task_name="Pipeline step 1 dataset artifact")

# only create the task, we will actually execute it later
task.execute_remotely()

# simulate local dataset, download one, so we have something local
local_iris_pkl = StorageManager.get_local_copy(
    remote_url=os.environ['PIPEKIT_TEST_IRIS_URL'])

# add and upload local file containing our toy dataset
task.upload_artifact('dataset', artifact_object=local_iris_pkl)

print('uploading artifacts in the background')

# we are done
print('Done')
