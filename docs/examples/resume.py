"""Crash a pipeline's controller mid-run, then continue it with ``pipekit resume``.

    PIPEKIT_HOME=$(mktemp -d) python docs/examples/resume.py

The pipeline ``prepare -> train -> report`` runs with its steps as subprocesses. The
controller is killed (SIGKILL, as an out-of-memory killer or a closed laptop would) right
after ``train`` completed; ``pipekit resume`` then runs the script again as the same run:
``prepare`` and ``train`` are kept, only ``report`` runs. Each step appends its name to
``executions.txt`` in a temporary folder, so you see what ran, and how often. See
docs/resume.md.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pipekit import PipelineController


def note(step):
    import os

    with open(os.environ["RESUME_EXAMPLE_LOG"], "a") as fh:
        fh.write(step + "\n")


def prepare(size):
    note("prepare")
    return list(range(size))


def train(data):
    note("train")
    return sum(data) / len(data)


def report(score):
    note("report")
    return f"score {score:.2f}"


def pipeline() -> None:
    pipe = PipelineController(name="resumable", project="examples/resume", version="1.0.0")
    pipe.add_parameter("size", 10)
    pipe.add_function_step("prepare", prepare, {"size": "${pipeline.size}"}, ["data"],
                           helper_functions=[note])
    pipe.add_function_step("train", train, {"data": "${prepare.data}"}, ["score"],
                           helper_functions=[note])
    pipe.add_function_step("report", report, {"score": "${train.score}"}, ["text"],
                           helper_functions=[note])
    pipe.start_locally(run_pipeline_steps_locally=True)


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    env = dict(os.environ, RESUME_EXAMPLE_LOG=str(folder / "executions.txt"))
    # 1. The controller dies the moment it is about to launch "report" (a test-only hook;
    #    any SIGKILL of the controller has the same effect).
    crash = subprocess.run([sys.executable, __file__, "--pipeline"], env=dict(
        env, PIPEKIT_TEST_CRASH_AT="before-enqueue:report"))
    print(f"controller exited with {crash.returncode} (killed by signal 9)")
    pipekit = [sys.executable, "-m", "pipekit"]
    runs = subprocess.run([*pipekit, "runs", "ls"], env=env, capture_output=True, text=True)
    print(runs.stdout)
    from pipekit.store import get_store

    (run,) = get_store().list_runs(name="resumable")
    # 2. Continue it: the same run, only what had not completed runs.
    subprocess.run([*pipekit, "resume", run.id], env=env, check=True)
    subprocess.run([*pipekit, "runs", "show", run.id], env=env, check=True)
    print("executions:", (folder / "executions.txt").read_text().split())


if __name__ == "__main__":
    if "--pipeline" in sys.argv:
        pipeline()
    else:
        main()
