"""A ClearML-style step script that registers itself as a template with execute_remotely().

Run by hand, ``task.execute_remotely()`` (no queue) leaves the task as a draft with its
connected arguments and ends the process: nothing below it runs. Run as a pipeline step,
the call does nothing and the step does its work.
"""

from pipekit import Task

task = Task.init(project_name="compat examples", task_name="compat registered step")

args = {
    "value": 1,
}
task.connect(args)

# only create the task, we will actually execute it later
task.execute_remotely()

print("computing with value={}".format(args["value"]))
task.upload_artifact("doubled", args["value"] * 2)
print("Done")
