"""A 500-step pipeline for the run page's performance test (tests/test_ui_browser.py).

``python wide.py [STEPS] [WIDTH]``: ``STEPS`` tiny function steps in layers of ``WIDTH``, each
step after one or two of the layer before, run in debug mode (inline, one process) so that
building the run takes seconds, not minutes.
"""

import sys

from pipekit import PipelineController


def tiny(i):
    return i


if __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    width = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    pipe = PipelineController(name="ui-wide", project="ui-tests", version="1.0.0")
    for i in range(steps):
        layer, slot = divmod(i, width)
        parents = []
        if layer:
            parents = sorted({f"s{(layer - 1) * width + slot}",
                              f"s{(layer - 1) * width + (slot * 7 + 3) % width}"})
        pipe.add_function_step(f"s{i}", tiny, {"i": i}, parents=parents)
    pipe.start_locally(run_pipeline_steps_locally=True, executor="inline")
