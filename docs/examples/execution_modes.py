"""One pipeline under each executor; what a time limit does on the thread executor; remote mode.

    PIPEKIT_HOME=$(mktemp -d) python docs/examples/execution_modes.py

See docs/execution-modes.md.
"""

import os
import subprocess
import sys
import threading
import time

from pipekit import PipelineController, Task


def work(seconds, label):
    import os
    import time

    time.sleep(seconds)
    return f"{label} in pid {os.getpid()}"


def join(a, b):
    return [a, b]


def build(name):
    pipe = PipelineController(name=name, project="examples/modes", version="1.0.0")
    pipe.add_function_step("a", work, {"seconds": 0.5, "label": "a"}, ["out"])
    pipe.add_function_step("b", work, {"seconds": 0.5, "label": "b"}, ["out"])
    pipe.add_function_step("both", join, {"a": "${a.out}", "b": "${b.out}"}, ["out"])
    return pipe


print(f"controller pid {os.getpid()}")
for executor in ("inline", "thread", "process", "subprocess"):
    pipe = build(f"modes-{executor}")
    began = time.monotonic()
    pipe.start_locally(run_pipeline_steps_locally=True, executor=executor, max_workers=2)
    both = Task.get_task(task_id=pipe.get_pipeline_dag()["both"].executed)
    print(f"{executor:<10} {time.monotonic() - began:4.1f} s  {both.artifacts['out'].get()}")

# The thread executor cannot kill a function step that is running: a time limit (or stop())
# marks the step's task failed (stopped) at once, and the thread finishes in the background.
pipe = PipelineController(name="modes-time-limit", project="examples/modes")
pipe.add_function_step("slow", work, {"seconds": 2, "label": "slow"}, ["out"], time_limit=0.5)
began = time.monotonic()
pipe.start_locally(run_pipeline_steps_locally=True, executor="thread")
node = pipe.get_pipeline_dag()["slow"]
task = Task.get_task(task_id=node.executed or node.tasks[-1])
print(f"time limit: run ended after {time.monotonic() - began:.1f} s; step {node.status} "
      f"({node.reason}); task {task.get_status()}; "
      f"step threads still running: {[t.name for t in threading.enumerate() if 'step' in t.name]}")

# Remote mode: the controller runs here, the steps go to their queue, and an agent runs them.
pipekit_cli = os.path.join(os.path.dirname(sys.executable), "pipekit")
agent = subprocess.Popen([pipekit_cli, "agent", "--queue", "default"], stderr=subprocess.DEVNULL)
try:
    pipe = build("modes-remote")
    pipe.set_default_execution_queue("default")
    pipe.start_locally()
    both = Task.get_task(task_id=pipe.get_pipeline_dag()["both"].executed)
    print(f"remote     steps run by agent pid {agent.pid}: {both.artifacts['out'].get()}")
finally:
    agent.terminate()  # a graceful stop: it has nothing left to run
    agent.wait()
