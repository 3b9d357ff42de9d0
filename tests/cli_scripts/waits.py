"""A pipeline whose step ``wait`` waits for a file that never appears (at most ``timeout`` s).

The step writes ``wait.started`` in ``$PIPEKIT_TEST_MARKS`` first, so a test knows it runs.
"""

from pipekit import PipelineController


def wait(timeout):
    import os
    import time
    from pathlib import Path

    marks = Path(os.environ["PIPEKIT_TEST_MARKS"])
    (marks / "wait.started").write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout
    while not (marks / "never").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody aborted the run within {timeout} s")
        time.sleep(0.05)


if __name__ == "__main__":
    pipe = PipelineController(name="waits", project="cli-tests", version="1.0.0")
    pipe.add_parameter("timeout", 60.0)
    pipe.add_function_step("wait", wait, {"timeout": "${pipeline.timeout}"})
    pipe.start_locally(run_pipeline_steps_locally=True)
