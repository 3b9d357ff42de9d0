"""A failed step tells everything in one place (issue 12, item 7): the CLI's error line names
the step's reason and ``pipekit logs <step>``; the step's traceback starts at the user's own
frame, in the user's file and line (not cloudpickle's ``<dynamic-code>``), with pipekit's own
frames folded; ``pipekit runs show`` prints the failed step's last log lines.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from pipeline_helpers import one_error, pk

from pipekit import PipelineController
from pipekit.store import get_store

FAILING = Path(__file__).resolve().parent / "cli_scripts" / "failing.py"

def failed_step(run: str):
    (step,) = [t for t in get_store().find_tasks(parent=run) if t.status == "failed"]
    return step


def test_the_error_line_names_the_reason_and_the_steps_log_and_runs_show_prints_it() -> None:
    proc = pk("run", str(FAILING))
    (run,) = get_store().list_runs()
    step = failed_step(run.id)
    assert one_error(proc) == proc.stderr.strip().splitlines()[-1] == (
        f"Error: run {run.id} failed: step 'explode' failed: ValueError: cannot use value 42 "
        f"(pipekit logs {step.id[:12]}; pipekit runs show {run.id[:12]})")
    log = get_store().log_path(step.id).read_text()
    assert log == (
        "Traceback (most recent call last):\n"
        f'  File "{FAILING}", line 11, in explode\n'
        '    raise ValueError(f"cannot use value {value + 1}")\n'
        "ValueError: cannot use value 42\n")
    shown = pk("runs", "show", run.id)
    assert f"last log lines (pipekit logs {step.id[:12]}):" in shown.stdout
    assert "ValueError: cannot use value 42" in shown.stdout.split("last log lines")[1]
    view = json.loads(pk("runs", "show", run.id, "--json").stdout)
    (node,) = [n for n in view["nodes"] if n["name"] == "explode"]
    assert node["log_tail"] == log.splitlines()


def reads_a_missing_artifact():
    from pipekit import Task

    return Task.current_task().artifacts["no-such-artifact"].get()


@pytest.mark.parametrize("executor", ["inline", "thread", "subprocess"])
def test_pipekits_frames_inside_a_user_traceback_are_folded(executor: str) -> None:
    pipe = PipelineController(name="folds", project="failed-step", version="1.0.0")
    pipe.add_function_step("reads", reads_a_missing_artifact)
    pipe.start_locally(run_pipeline_steps_locally=True, executor=executor)
    step = failed_step(pipe.id)
    log = get_store().log_path(step.id).read_text()
    lines = log.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    line = inspect.getsourcelines(reads_a_missing_artifact)[1] + 3
    assert lines[1] == f'  File "{__file__}", line {line}, in reads_a_missing_artifact', log
    assert lines[2].strip() == 'return Task.current_task().artifacts["no-such-artifact"].get()'
    (fold,) = [x for x in lines if x.startswith("  [... ")]
    assert fold.endswith(" in pipekit ...]") and lines.index(fold) in (3, 4), log
    assert "pipekit/" not in log.replace(str(Path(__file__).parent), "")
    assert "<dynamic-code>" not in log
    assert lines[-1].startswith("pipekit.errors.ArtifactNotFound") or \
        lines[-1].startswith("ArtifactNotFound"), log
