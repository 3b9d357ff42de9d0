"""``finish_task``: the one place a task execution gets its final status."""

from __future__ import annotations

import pytest

from pipekit import Logger, Task
from pipekit.finish import finish_task
from pipekit.models import Status
from pipekit.store import get_store


@pytest.fixture
def running(tmp_path) -> Task:
    script = tmp_path / "s.py"
    script.write_text("pass\n")
    task = Task.create(project_name="finish", task_name="t", script=str(script))
    task.mark_started()
    return task


def test_it_writes_buffered_metrics_and_the_log_size_before_the_status(running):
    Logger(running.id).report_scalar("loss", "train", 0.5, iteration=3)  # still buffered
    assert finish_task(running.id, Status.completed, log_size=1234) is True
    info = get_store().get_task(running.id)
    assert (info.status, info.log_size) == ("completed", 1234)
    assert [(p.title, p.iteration, p.value) for p in get_store().scalars(running.id)] == \
        [("loss", 3, 0.5)]


@pytest.mark.parametrize("first, second", [
    (Status.stopped, Status.completed),  # a step stopped from outside keeps "stopped"
    (Status.failed, Status.completed),
    (Status.completed, Status.failed),
])
def test_the_first_final_status_wins(running, first, second):
    assert finish_task(running.id, first, "first word") is True
    assert finish_task(running.id, second, "late word") is False
    info = get_store().get_task(running.id)
    assert (info.status, info.status_reason) == (first.value, "first word")
