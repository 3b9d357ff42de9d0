"""A one-step pipeline given the secret ``${env:TOKEN}`` (tests/test_secrets.py).

    python secret.py EXECUTOR      # inline, thread, process, subprocess, or queue (agents)

The step prints the secret to stdout and stderr, from Python and from a child process, and,
when ``SECRET_TEST_FAIL=1``, raises an exception whose message holds it.
"""

import sys

from pipekit import PipelineController


def use(token):
    import os
    import subprocess
    import sys

    print(f"stdout sees {token}")
    print(f"stderr sees {token}", file=sys.stderr)
    subprocess.run(["echo", f"a child sees {token}"], check=True)
    if os.environ.get("SECRET_TEST_FAIL") == "1":
        raise ValueError(f"the service rejected token {token}")
    return len(token)


if __name__ == "__main__":
    executor = sys.argv[1]
    pipe = PipelineController(name="secret", project="secret-tests", version="1.0.0")
    pipe.add_function_step("use", use, {"token": "${env:TOKEN}"}, ["n"])
    if executor == "queue":
        pipe.set_default_execution_queue("secret-q")
        pipe.start_locally()
    else:
        pipe.start_locally(run_pipeline_steps_locally=True, executor=executor)
