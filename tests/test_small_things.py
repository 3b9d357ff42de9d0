"""Small things a new user hits (issue 12, item 10), each a clear one-liner."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pipeline_helpers import PIPEKIT, one_error, pk

from pipekit import Task
from pipekit.errors import ParameterError
from pipekit.params import cast
from pipekit.store import get_store


def test_an_unknown_task_names_the_store_that_was_searched() -> None:
    assert one_error(pk("tasks", "show", "nope"), alone=True) == (
        f"Error: unknown task 'nope' in the store {get_store().settings.sqlite_path}")


def test_piped_tables_are_not_wrapped_at_80_columns() -> None:
    name = "a-task-with-a-rather-long-name-that-would-wrap-at-eighty-columns"
    task = Task.create(project_name="a-long-project-name-too", task_name=name)
    proc = pk("tasks", "ls")
    assert proc.returncode == 0, proc.stderr
    (row,) = [line for line in proc.stdout.splitlines() if task.id[:12] in line]
    assert name in row and "a-long-project-name-too" in row
    assert max(len(line) for line in proc.stdout.splitlines()) > 80


@pytest.mark.parametrize("pair", ["k", "=1", " =1"])
def test_a_param_without_key_and_value_asks_for_them(pair: str) -> None:
    proc = pk("run", "tests/cli_scripts/three_steps.py", "--param", pair)
    assert one_error(proc, alone=True) == (
        f"Error: --param {pair!r}: expected key=value or Section/key=value (e.g. --param "
        "lr=0.1, --param Args/lr=0.1)")
    assert get_store().find_tasks() == []  # nothing was made


@pytest.mark.parametrize(("text", "like", "message"), [
    ("abc", 1, "parameter 'Args/k': cannot read 'abc' as int"),
    ("3.5", 1, "parameter 'Args/k': cannot read '3.5' as int"),
    ("abc", 1.0, "parameter 'Args/k': cannot read 'abc' as float"),
    ("maybe", True, "parameter 'Args/k': cannot read 'maybe' as bool"),
])
def test_a_bad_number_says_which_type_it_is_not(text: str, like: object, message: str) -> None:
    with pytest.raises(ParameterError) as raised:
        cast(text, like=like, name="Args/k")
    assert str(raised.value) == message
    assert cast("3.0", like=1, name="Args/k") == 3


def test_a_refused_param_of_a_rerun_leaves_no_run_behind(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setenv("PIPEKIT_TEST_MARKS", str(tmp_path))
    assert pk("run", "tests/cli_scripts/three_steps.py").returncode == 0
    before = {t.id for t in get_store().find_tasks()}
    (run,) = get_store().list_runs()
    assert one_error(pk("rerun", run.id, "--param", "n=abc"), alone=True) == (
        "Error: parameter 'Args/n': cannot read 'abc' as int")
    assert {t.id for t in get_store().find_tasks()} == before



def test_task_enqueue_takes_the_record_clone_run_returns() -> None:
    from pipekit.errors import TaskNotFound

    draft = Task.create(project_name="small", task_name="draft")
    assert Task.enqueue(get_store().get_task(draft.id), "default")["status"] == "queued"
    with pytest.raises(TaskNotFound):
        Task.enqueue(42, "default")  # type: ignore[arg-type]


def test_local_agents_find_a_step_module_next_to_the_script(tmp_path: Path) -> None:
    """``pipekit run scripts/pipe.py`` from the folder above: the agents it starts import the
    step function from ``scripts/steps.py`` as the script did."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "steps.py").write_text("def double(x):\n    return 2 * x\n")
    (scripts / "pipe.py").write_text(
        "from steps import double\n"
        "from pipekit import PipelineController\n"
        "pipe = PipelineController(name='beside', project='small', version='1.0.0')\n"
        "pipe.set_default_execution_queue('default')\n"
        "pipe.add_function_step('double', double, {'x': 21}, ['y'])\n"
        "pipe.start_locally()\n")
    proc = subprocess.run([PIPEKIT, "run", "scripts/pipe.py"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    (run,) = get_store().list_runs()
    (step,) = get_store().find_tasks(parent=run.id)
    assert Task(step.id).artifacts["y"].get() == 42
