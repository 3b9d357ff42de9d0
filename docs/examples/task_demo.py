"""Run a task on the embedded store, re-run a clone of it, show where to look.

1. runs docs/examples/train_task.py, which makes itself a task with ``Task.init``;
2. clones that task with a changed parameter and executes the clone as a subprocess, the way
   an agent would (``pipekit tasks clone`` + ``pipekit tasks run``);
3. prints both tasks' results and the commands to inspect them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipekit import Task, configure
from pipekit.worker import run_task

HERE = Path(__file__).resolve().parent


def main() -> int:
    settings = configure()  # PIPEKIT_HOME from the environment (the Makefile sets it)
    print(f"store: {settings.home}")
    print("\n== 1. run a training script that calls Task.init ==")
    subprocess.run([sys.executable, str(HERE / "train_task.py"), "--epochs", "4"], check=True)
    original = Task.get_task(project_name="examples", task_name="train")

    print("\n== 2. clone it with Args/epochs=8 and execute the clone ==")
    clone = Task.clone(original, name="train (8 epochs)")
    clone.set_parameter("Args/epochs", 8)
    final = run_task(clone.id, echo=sys.stdout.buffer)

    print("\n== 3. results ==")
    for task in (original, clone):
        loss = task.get_last_scalar_metrics()["loss"]["train"]
        print(f"{task.id}  {task.name:<18} {task.get_status():<10} "
              f"epochs={task.get_parameter('Args/epochs')}  final loss={loss['last']:.4f}")
    if final.status != "completed":
        print(f"clone ended {final.status}: {final.status_reason}", file=sys.stderr)
        return 1
    pipekit = Path(sys.executable).with_name("pipekit")
    print(f"""
Look at them with the CLI:
  export PIPEKIT_HOME={os.environ.get('PIPEKIT_HOME', settings.home)}
  {pipekit} tasks ls
  {pipekit} tasks show {clone.id[:12]}
  {pipekit} logs {clone.id[:12]}""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
