"""A pipeline whose step ``gate`` runs until a file appears (tests/test_ui_browser.py).

``first`` completes at once; ``gate`` writes ``gate.started`` (its pid) in
``$PIPEKIT_UI_GATES``, then waits for the file named by the parameter ``gate`` there, at most
``timeout`` seconds (the workload a test aborts or releases); ``last`` follows it.
"""

from pipekit import PipelineController


def first():
    print("first: done")
    return 1


def gate(value, name, timeout):
    import os
    import time
    from pathlib import Path

    folder = Path(os.environ["PIPEKIT_UI_GATES"])
    (folder / f"{name}.started").write_text(str(os.getpid()))
    print(f"gate: waiting for {name}", flush=True)
    deadline = time.monotonic() + timeout
    while not (folder / name).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody opened the gate {name!r} within {timeout} s")
        time.sleep(0.05)
    print(f"gate: {name} opened")
    return value + 1


def last(value):
    return value * 10


if __name__ == "__main__":
    pipe = PipelineController(name="ui-gated", project="ui-tests", version="1.0.0")
    pipe.add_parameter("gate", "open", description="the file the gate step waits for")
    pipe.add_parameter("timeout", 60.0)
    pipe.add_function_step("first", first, {}, ["value"])
    pipe.add_function_step("gate", gate, {"value": "${first.value}", "name": "${pipeline.gate}",
                                          "timeout": "${pipeline.timeout}"}, ["value"])
    pipe.add_function_step("last", last, {"value": "${gate.value}"}, ["value"])
    pipe.start_locally(run_pipeline_steps_locally=True)
