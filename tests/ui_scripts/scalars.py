"""A task with many scalar points, for the chart's performance test (tests/test_ui_browser.py).

``python scalars.py [POINTS]``: one completed task, ``ui-scalars``, with ``POINTS`` points of
the chart ``big`` (series ``a`` and ``b``, half each), written with the store's ``add_scalars``
in one transaction (``Logger.report_scalar`` stores the same rows, point by point); it prints
the task's id.
"""

import math
import sys
import time

from pipekit import Task
from pipekit.store import get_store

if __name__ == "__main__":
    points = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    task = Task.init(project_name="ui-tests", task_name="ui-scalars")
    now = time.time()
    rows = [("big", "a", i, math.sin(i / 500.0), now) for i in range(points // 2)]
    rows += [("big", "b", i, math.cos(i / 700.0) * 0.5, now) for i in range(points - points // 2)]
    get_store().add_scalars(task.id, rows)
    print(task.id)
