"""ClearML's step callbacks, and a plugin watching the same events through pipekit's hooks.

    PIPEKIT_HOME=$(mktemp -d) python docs/examples/callbacks.py

See docs/callbacks.md.
"""

import pipekit
from pipekit import PipelineController, Task
from pipekit.plugin_manager import make_plugin_manager, set_plugin_manager


def double(x):
    return x * 2


# -- ClearML callbacks ----------------------------------------------------------------------

def on_created(pipeline, node, parameters):
    """step_task_created_callback: every step, before its task is created."""
    print(f"created-callback  {node.name}: {parameters}")


def tune(pipeline, node, parameters):
    """pre_execute_callback: edit the resolved parameters the step's task will get."""
    parameters["kwargs/x"] = parameters["kwargs/x"] + 100
    print(f"pre-execute       {node.name}: x -> {parameters['kwargs/x']}")


def veto(pipeline, node, parameters):
    """pre_execute_callback returning False: the node and its descendants are skipped."""
    print(f"pre-execute       {node.name}: vetoed")
    return False


def done(pipeline, node):
    """post_execute_callback: the step succeeded; node.executed is its task id."""
    value = Task.get_task(task_id=node.executed).artifacts["y"].get()
    print(f"post-execute      {node.name}: y = {value}")


def changed(pipeline, node, previous_status):
    """status_change_callback: every status change of this node."""
    print(f"status-change     {node.name}: {previous_status} -> {node.status}")


# -- the same events through pipekit's hooks, from a plugin -----------------------------------

class Watcher:
    @pipekit.hookimpl
    def pipekit_pipeline_started(self, run):
        print(f"hook  pipeline_started  {run.name} {run.version}")

    @pipekit.hookimpl
    def pipekit_step_created(self, node, task):
        print(f"hook  step_created      {node.name}: task {task.id[:8]} ({task.status})")

    @pipekit.hookimpl
    def pipekit_step_status_changed(self, node, old, new):
        print(f"hook  status_changed    {node.name}: {old} -> {new}")

    @pipekit.hookimpl
    def pipekit_step_completed(self, node, task):
        print(f"hook  step_completed    {node.name}: task {task.id[:8]}")

    @pipekit.hookimpl
    def pipekit_pipeline_finished(self, run, status):
        print(f"hook  pipeline_finished {run.name}: {status}")


pm = make_plugin_manager()
pm.register(Watcher(), name="watcher")
set_plugin_manager(pm)

pipe = PipelineController(name="callbacks", project="examples", version="1.0.0")
pipe.add_function_step("first", double, {"x": 1}, ["y"], pre_execute_callback=tune,
                       post_execute_callback=done, status_change_callback=changed)
pipe.add_function_step("second", double, {"x": "${first.y}"}, ["y"],
                       post_execute_callback=done)
pipe.add_function_step("vetoed", double, {"x": 5}, ["y"], pre_execute_callback=veto,
                       status_change_callback=changed)
pipe.add_function_step("below", double, {"x": "${vetoed.y}"}, ["y"],
                       status_change_callback=changed)

pipe.start_locally(run_pipeline_steps_locally=True, executor="inline",
                   step_task_created_callback=on_created)
print({name: node.status for name, node in pipe.get_pipeline_dag().items()})
