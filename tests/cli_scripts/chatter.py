"""RELIABILITY 4's pipeline (tests/test_pressure.py): ``STEPS`` steps at once, each reporting
``RATE`` scalars a second for ``SECONDS`` seconds (from the environment: PRESSURE_STEPS,
PRESSURE_RATE, PRESSURE_SECONDS), then returning how many it reported.
"""

import os

from pipekit import PipelineController


def chatter(seconds, rate):
    import time

    from pipekit import Task

    logger = Task.current_task().get_logger()
    total = int(seconds * rate)
    begun = time.monotonic()
    for i in range(total):
        logger.report_scalar("pressure", "value", value=float(i), iteration=i)
        ahead = begun + (i + 1) / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # the reporting pace, not synchronisation
    return total


if __name__ == "__main__":
    steps = int(os.environ.get("PRESSURE_STEPS", "8"))
    pipe = PipelineController(name="pressure", project="pressure-tests", version="1.0.0")
    for i in range(steps):
        pipe.add_function_step(f"chatter{i}", chatter,
                               {"seconds": float(os.environ.get("PRESSURE_SECONDS", "10")),
                                "rate": float(os.environ.get("PRESSURE_RATE", "1000"))},
                               ["reported"])
    pipe.start_locally(run_pipeline_steps_locally=True, max_workers=steps)
