"""``pipekit run``, ``rerun``, ``runs``, ``pipelines``, ``cache``, ``tasks abort`` and ``export``
on real pipeline scripts (``tests/cli_scripts/``), in-process with click's ``CliRunner`` and as
the installed console script (a real process) where what matters is what a terminal sees.

The scripts' steps leave one file per execution in ``$PIPEKIT_TEST_MARKS``
(``<step>.<pid>.<uuid>``), so a test counts executions and sees which process ran a step.
Nothing waits by sleeping: every wait is a poll with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from click.testing import CliRunner
from pipeline_helpers import PIPEKIT, ROOT, error_lines, executions, one_error, pk

from pipekit import Task
from pipekit.cli import cli
from pipekit.store import get_store

SCRIPTS = Path(__file__).resolve().parent / "cli_scripts"
CHECK_DIR = Path(__file__).resolve().parent / "export_check"
THREE = "tests/cli_scripts/three_steps.py"  # relative to ROOT, as a user types it

T = TypeVar("T")
pytestmark = pytest.mark.usefixtures("marks")  # (tests/conftest.py) for every script


# -- helpers ------------------------------------------------------------------------------------


def invoke(*args: str, code: int = 0) -> Any:
    """``pipekit args`` in-process; checks the exit status."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def pk_all(commands: list[list[str]], timeout: float = 60) -> list[subprocess.CompletedProcess]:
    """Several :func:`pk` at once (each pays the interpreter's start-up)."""
    procs = [subprocess.Popen([PIPEKIT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, env=dict(os.environ)) for args in commands]
    done = []
    try:
        for args, proc in zip(commands, procs, strict=True):
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess([PIPEKIT, *args], proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return done


def poll(condition: Callable[[], T], timeout: float = 30, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def only_run() -> dict[str, Any]:
    """The one run of this test's store (through ``runs ls --json``)."""
    found = json.loads(invoke("runs", "ls", "--json").stdout)
    assert len(found) == 1, found
    return found[0]


def show(run_id: str) -> dict[str, Any]:
    return json.loads(invoke("runs", "show", run_id, "--json").stdout)


def nodes(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in view["nodes"]}


def statuses(view: dict[str, Any]) -> dict[str, str]:
    return {n["name"]: n["status"] for n in view["nodes"]}


def args_of(run_id: str) -> dict[str, tuple[str, str, str]]:
    """The run's ``Args`` in the store: name -> (value, type, description)."""
    return {p.name: (p.value, p.type, p.description)
            for p in get_store().get_parameters(run_id).values() if p.section == "Args"}


def process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


# -- pipekit run --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["process", "clirunner"])
def test_run_a_controller_script_with_a_param(how: str, marks: Path) -> None:
    if how == "process":
        proc = pk("run", THREE, "--param", "n=3")
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        assert_no_traceback(proc.stdout, proc.stderr)
    else:
        invoke("run", str(SCRIPTS / "three_steps.py"), "--param", "n=3")
    run = only_run()
    assert (run["name"], run["project"], run["status"]) == ("three-steps", "cli-tests",
                                                           "completed")
    assert run["version"] == "1.0.0" and run["origin"] is None and run["parent"] is None
    # --param n=3 became the run's Args, typed like the default (2), description kept.
    assert args_of(run["id"]) == {"n": ("3", "int", "how many values load makes"),
                                  "k": ("1", "int", "")}
    assert Task(run["id"]).get_parameters(cast=True) == {"Args/n": 3, "Args/k": 1}
    view = show(run["id"])
    assert statuses(view) == {"load": "completed", "offset": "completed", "total": "completed"}
    assert nodes(view)["load"]["parameters"] == {"kwargs/n": "3"}
    assert nodes(view)["total"]["outputs"][0]["preview"] == "103"  # 0 + 1 + 2 + 100
    # The script's own choice (local mode): each step once, in a process of its own.
    script_pid = int((marks / "script.pid").read_text())
    for step in ("load", "offset", "total"):
        pids = executions(marks, step)
        assert len(pids) == 1, (step, pids)
        assert pids[0] != script_pid


def test_run_a_decorator_script_with_a_param(marks: Path) -> None:
    invoke("run", str(SCRIPTS / "decorated.py"), "--param", "n=3")
    run = only_run()
    assert (run["name"], run["status"]) == ("decorated", "completed")
    assert args_of(run["id"]) == {"n": ("3", "int", ""), "extra": ("1", "int", "")}
    view = show(run["id"])
    assert statuses(view) == {"square": "completed", "add": "completed"}
    assert nodes(view)["add"]["parents"] == ["square"]
    assert nodes(view)["add"]["outputs"][0]["preview"] == "10"  # 3 * 3 + 1
    script_pid = int((marks / "script.pid").read_text())
    for step in ("square", "add"):  # the script's run_locally(): a process per step
        (pid,) = executions(marks, step)
        assert pid != script_pid


def test_mode_debug_overrides_a_decorator_script_choice(marks: Path) -> None:
    invoke("run", str(SCRIPTS / "decorated.py"), "--mode", "debug")
    assert only_run()["status"] == "completed"
    script_pid = int((marks / "script.pid").read_text())
    assert executions(marks, "square") == executions(marks, "add") == [script_pid]


def test_mode_debug_runs_every_step_in_the_script_process(marks: Path) -> None:
    proc = pk("run", THREE, "--mode", "debug", "--param", "n=4")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    script_pid = int((marks / "script.pid").read_text())
    for step in ("load", "offset", "total"):
        assert executions(marks, step) == [script_pid], step
    run = only_run()
    assert statuses(show(run["id"])) == {"load": "completed", "offset": "completed",
                                         "total": "completed"}
    workers = {t.name: t.worker for t in get_store().find_tasks(parent=run["id"])}
    assert set(workers) == {"load", "offset", "total"}
    assert all(w is not None and w.endswith(f":{script_pid}") for w in workers.values()), workers


def test_live_progress_without_a_tty_is_plain_lines() -> None:
    proc = pk("run", THREE, "--param", "n=3")  # stdout is a pipe, not a terminal
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "\x1b" not in proc.stdout and "\x1b" not in proc.stderr
    lines = [line for line in proc.stdout.splitlines()
             if not re.fullmatch(r"run [0-9a-f]{32}", line)]  # a header is allowed
    assert lines, "no progress at all"
    pattern = re.compile(r"^(load|offset|total) +(pending|in_progress|completed)( +[0-9.]+ s)?$")
    for line in lines:
        assert pattern.match(line), f"not a plain progress line: {line!r}"
    for step in ("load", "offset", "total"):
        assert re.search(rf"^{step} +completed +[0-9.]+ s$", proc.stdout, re.M), step
    # total starts only after both of its parents completed
    first_total_running = lines.index(next(line for line in lines
                                           if re.match(r"total +in_progress", line)))
    done = [i for i, line in enumerate(lines) if re.match(r"(load|offset) +completed", line)]
    assert len(done) == 2 and max(done) < first_total_running


# -- rerun ----------------------------------------------------------------------------------------


def test_rerun_with_a_changed_param_is_a_new_run_linked_to_its_origin(marks: Path) -> None:
    invoke("run", str(SCRIPTS / "three_steps.py"), "--param", "n=3")
    origin = only_run()["id"]
    before = args_of(origin)
    proc = pk("rerun", origin[:12], "--param", "n=5")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    runs = json.loads(invoke("runs", "ls", "--json").stdout)
    assert [r["id"] for r in runs][1:] == [origin]
    new = runs[0]
    assert (new["status"], new["origin"], new["parent"]) == ("completed", origin, None)
    assert (new["name"], new["project"], new["version"]) == ("three-steps", "cli-tests", "1.0.0")
    # The Args differ from the origin's only in n (value; type and description kept) ...
    assert args_of(new["id"]) == {**before, "n": ("5", "int", "how many values load makes")}
    assert args_of(origin) == before  # ... and the origin is untouched
    view = show(new["id"])
    assert (view["origin"], view["parent"]) == (origin, None)
    assert view["parameters"] == {"n": "5", "k": "1"}
    # load's input changed, so it and total ran again; offset's did not: served from cache.
    assert statuses(view) == {"load": "completed", "offset": "cached", "total": "completed"}
    assert nodes(view)["offset"]["cached"] is True
    assert nodes(view)["offset"]["task"] == nodes(show(origin))["offset"]["task"]
    assert nodes(view)["total"]["outputs"][0]["preview"] == "110"  # 0+1+2+3+4 + 100
    assert (len(executions(marks, "load")), len(executions(marks, "offset")),
            len(executions(marks, "total"))) == (2, 1, 2)
    assert "rerun of " + origin in invoke("runs", "show", new["id"]).stdout


# -- failures and bad input ---------------------------------------------------------------------


def test_a_failing_pipeline_names_the_run_and_the_step_reason() -> None:
    proc = pk("run", "tests/cli_scripts/failing.py")
    line = one_error(proc)
    run = only_run()
    assert line.startswith(f"Error: run {run['id']} failed: ")
    assert "step 'explode' failed" in line and "ValueError: cannot use value 42" in line
    assert run["status"] == "failed"
    view = show(run["id"])
    assert statuses(view) == {"prepare": "completed", "explode": "failed"}
    assert "ValueError: cannot use value 42" in nodes(view)["explode"]["reason"]
    assert "Traceback" in Task(nodes(view)["explode"]["task"]).get_log()  # the details stay


def test_a_failing_pipeline_is_one_line_on_stderr() -> None:
    proc = pk("run", "tests/cli_scripts/failing.py")
    assert proc.returncode == 1
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("Error: run ")


def test_bad_input_is_one_line_without_traceback() -> None:
    invoke("run", str(SCRIPTS / "three_steps.py"), "--mode", "debug")
    run = only_run()["id"]
    step = nodes(show(run))["load"]["task"]
    tasks_before = len(get_store().find_tasks())
    cases: list[tuple[list[str], list[str]]] = [
        (["run", "tests/cli_scripts/nosuch.py"], ["script not found", "nosuch.py"]),
        (["run", THREE, "--param", "n"], ["--param 'n'", "=value"]),
        (["run", THREE, "--param", "=3"], ["--param '=3'"]),
        (["rerun", "0123456789abcdef", "--param", "n=1"], ["unknown task '0123456789abcdef'"]),
        (["rerun", step, "--param", "n=1"], [f"task {step} is not a pipeline run"]),
        (["rerun", run, "--param", "nosuch=1"], [f"run {run} has no parameter 'nosuch'"]),
        (["runs", "show", "0123456789abcdef"], ["unknown task '0123456789abcdef'"]),
        (["runs", "show", step], [f"task {step} is not a pipeline run"]),
        (["export", "0123456789abcdef"], ["unknown task '0123456789abcdef'"]),
        (["cache", "clear"], ["say what to clear", "--all"]),
        (["tasks", "abort", run], [f"task {run} is already completed"]),
    ]
    problems = []
    for (args, fragments), proc in zip(cases, pk_all([a for a, _ in cases]), strict=True):
        lines = proc.stderr.splitlines()
        if not (proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: ")
                and all(f in lines[0] for f in fragments) and proc.stdout == ""
                and "Traceback" not in proc.stderr):
            problems.append((args, proc.returncode, proc.stdout, proc.stderr))
    assert not problems, problems
    # click's own usage errors: exit 2, one "Error:" line (after click's usage hint)
    for args, fragment in [(["export", run, "--format", "pdf"], "'pdf' is not one of"),
                           (["run", THREE, "--mode", "fast"], "'fast' is not one of")]:
        proc = pk(*args)
        line = one_error(proc, 2)
        assert fragment in line and proc.stdout == "", (args, proc.stdout, line)
    # none of them made a task: no draft run, no clone
    assert len(get_store().find_tasks()) == tasks_before


@pytest.mark.parametrize(("param", "fragments"), [
    ("n=abc", ["'Args/n'", "'abc'", "int"]),
    ("Other/n=1", ["'Other/n'", "section Args"]),
])
def test_a_refused_rerun_leaves_no_draft_run(param: str, fragments: list[str]) -> None:
    invoke("run", str(SCRIPTS / "three_steps.py"), "--mode", "debug")
    run = only_run()["id"]
    tasks_before = len(get_store().find_tasks())
    result = invoke("rerun", run, "--param", param, code=1)
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: ") and all(f in line for f in fragments), line
    assert [r["id"] for r in json.loads(invoke("runs", "ls", "--json").stdout)] == [run]
    assert len(get_store().find_tasks()) == tasks_before


def test_run_with_a_param_value_of_the_wrong_type_says_why() -> None:
    proc = pk("run", THREE, "--param", "n=abc")
    line = one_error(proc)
    (task,) = get_store().find_tasks()
    assert task.status == "failed"
    assert line.startswith(f"Error: run {task.id} failed: ")
    assert "'Args/n'" in line and "'abc'" in line, line
    shown = pk("runs", "show", task.id)
    assert shown.returncode == 1 and "unknown task" not in shown.stderr, shown.stderr
    assert task.id in shown.stderr and "Traceback" not in shown.stderr


def test_run_with_an_unknown_param_fails_naming_it() -> None:
    proc = pk("run", THREE, "--param", "nosuch=1")
    line = one_error(proc)
    assert "no parameter 'nosuch'" in line and "its parameters: k, n" in line, line
    assert executions_of_any() == 0


def executions_of_any() -> int:
    return sum(1 for task in get_store().find_tasks() if task.type != "controller")


# -- runs show, pipelines ls ---------------------------------------------------------------------


def test_runs_show_json_and_text() -> None:
    invoke("run", str(SCRIPTS / "three_steps.py"), "--param", "n=3", "--param", "k=2")
    run = only_run()["id"]
    view = show(run[:8])  # a prefix is enough
    assert (view["id"], view["name"], view["status"]) == (run, "three-steps", "completed")
    assert view["parameters"] == {"n": "3", "k": "2"}
    assert isinstance(view["duration"], float) and view["duration"] >= 0
    by_name = nodes(view)
    assert list(by_name) == ["load", "offset", "total"]
    for name, node in by_name.items():
        assert node["status"] == "completed", name
        assert isinstance(node["duration"], float) and node["duration"] >= 0, name
        assert node["started"] <= node["ended"], name
        assert node["cached"] is False and node["task"], name
        assert len(node["cache_key"]) == 64, name
    assert by_name["total"]["parents"] == ["load", "offset"]
    assert by_name["load"]["parameters"] == {"kwargs/n": "3"}
    assert by_name["offset"]["parameters"] == {"kwargs/k": "2"}
    assert by_name["total"]["parameters"] == {
        "kwargs_artifacts/values": f"{by_name['load']['task']}.values",
        "kwargs_artifacts/base": f"{by_name['offset']['task']}.base"}
    (values,) = by_name["load"]["outputs"]
    assert (values["name"], values["type"], values["preview"]) == ("values", "list", "[0, 1, 2]")
    assert len(values["digest"]) == 64 and values["size"] > 0
    assert by_name["total"]["outputs"][0]["preview"] == "203"
    text = invoke("runs", "show", run).stdout
    assert run in text and "three-steps" in text and "n = 3" in text
    for name, node in by_name.items():
        assert re.search(rf"{name}  completed  [0-9.]+ s", text), (name, text)
        assert node["task"][:12] in text
    assert "after load, offset" in text and "values: [0, 1, 2]" in text and "total: 203" in text
    assert "kwargs/n = 3" in text and "kwargs/k = 2" in text


def test_pipelines_ls_lists_versions_with_run_counts() -> None:
    assert invoke("pipelines", "ls").stdout.strip() == "no pipelines"
    for _ in range(2):
        invoke("run", str(SCRIPTS / "three_steps.py"), "--mode", "debug")
    invoke("run", str(SCRIPTS / "decorated.py"), "--mode", "debug")
    found = json.loads(invoke("pipelines", "ls", "--json").stdout)
    by_name = {p["name"]: p for p in found}
    assert set(by_name) == {"three-steps", "decorated"}
    three = by_name["three-steps"]
    assert (three["project"], three["version"], three["runs"]) == ("cli-tests", "1.0.0", 2)
    assert by_name["decorated"]["runs"] == 1
    runs = json.loads(invoke("runs", "ls", "--json", "--name", "three-steps").stdout)
    assert {r["structure_hash"] for r in runs} == {three["structure_hash"]}
    assert json.loads(invoke("pipelines", "ls", "--json", "--project", "nope").stdout) == []
    text = invoke("pipelines", "ls").stdout
    assert "three-steps" in text and "decorated" in text and "1.0.0" in text


# -- cache ----------------------------------------------------------------------------------------


def test_cache_ls_cached_steps_no_cache_and_clear(marks: Path) -> None:
    def counts() -> tuple[int, ...]:
        return tuple(len(executions(marks, s)) for s in ("load", "offset", "total"))

    def latest() -> dict[str, Any]:
        return show(json.loads(invoke("runs", "ls", "--json", "--limit", "1").stdout)[0]["id"])

    assert json.loads(invoke("cache", "ls", "--json").stdout) == []
    invoke("run", str(SCRIPTS / "three_steps.py"))
    first = latest()
    assert counts() == (1, 1, 1)
    entries = json.loads(invoke("cache", "ls", "--json").stdout)
    assert sorted(e["name"] for e in entries) == ["load", "offset", "total"]
    assert {e["key"]: e["task"] for e in entries} == {
        n["cache_key"]: n["task"] for n in first["nodes"]}
    assert all(e["project"] == "cli-tests" for e in entries)
    # the same run again: every step served from the cache, nothing executes
    invoke("run", str(SCRIPTS / "three_steps.py"))
    second = latest()
    assert second["status"] == "completed" and second["id"] != first["id"]
    assert statuses(second) == dict.fromkeys(("load", "offset", "total"), "cached")
    assert all(n["cached"] for n in second["nodes"])
    assert [n["task"] for n in second["nodes"]] == [n["task"] for n in first["nodes"]]
    assert counts() == (1, 1, 1)
    # --no-cache runs them again
    invoke("run", str(SCRIPTS / "three_steps.py"), "--no-cache")
    assert statuses(latest()) == dict.fromkeys(("load", "offset", "total"), "completed")
    assert counts() == (2, 2, 2)
    # forgetting every cached result: the next run executes every step
    proc = pk("cache", "clear", "--all", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cleared"] >= 3
    assert json.loads(invoke("cache", "ls", "--json").stdout) == []
    assert invoke("cache", "ls").stdout.strip() == "the step cache is empty"
    invoke("run", str(SCRIPTS / "three_steps.py"))
    assert statuses(latest()) == dict.fromkeys(("load", "offset", "total"), "completed")
    assert counts() == (3, 3, 3)


def run_waits(timeout: int, *, new_session: bool = False) -> subprocess.Popen:
    """``pipekit run tests/cli_scripts/waits.py`` as a real process: its step waits up to
    ``timeout`` s for a file that never appears."""
    return subprocess.Popen([PIPEKIT, "run", "tests/cli_scripts/waits.py", "--param",
                             f"timeout={timeout}"], cwd=ROOT, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=new_session)


def step_started(marks: Path) -> int:
    """The pid of waits.py's step, once it runs."""
    started = marks / "wait.started"
    poll(started.exists, 30, "the step to start")
    return int(poll(started.read_text, 5, "the step's pid"))


# -- tasks abort ----------------------------------------------------------------------------------


@pytest.mark.exclusive
@pytest.mark.usefixtures("backend")
def test_tasks_abort_stops_a_live_run(marks: Path) -> None:
    store = get_store()
    proc = run_waits(20)
    try:
        step_pid = step_started(marks)
        run = poll(lambda: store.list_runs(), 10, "the run")[0].id
        assert statuses(show(run)) == {"wait": "in_progress"}
        began = time.monotonic()
        abort = pk("tasks", "abort", run[:12])
        assert abort.returncode == 0, abort.stderr
        assert abort.stdout.strip() == f"task {run} stopped"
        out, err = proc.communicate(timeout=15)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert took < 10, f"the run took {took:.1f} s to end"
    assert proc.returncode == 1, (out, err)
    assert_no_traceback(out, err)
    (line,) = error_lines(err)
    assert line.startswith(f"Error: run {run} stopped: aborted by user")
    view = show(run)
    assert (view["status"], view["reason"]) == ("stopped", "aborted by user")
    assert statuses(view) == {"wait": "stopped"}
    assert store.get_task(nodes(view)["wait"]["task"]).status == "stopped"
    assert not (marks / "never").exists()
    poll(lambda: process_gone(step_pid), 10, f"the step's process {step_pid} to end")
    # a finished run cannot be aborted again
    again = pk("tasks", "abort", run)
    assert again.returncode == 1
    assert again.stderr == f"Error: task {run} is already stopped\n"


@pytest.mark.parametrize("controller", ["alive", "killed"])
def test_runs_abort_ends_the_run_and_every_step_at_once(marks: Path, controller: str) -> None:
    """RELIABILITY 12, first half: the moment `runs abort` returns, the run and all its
    steps and nodes are terminal, whether or not a controller is there to notice."""
    store = get_store()
    proc = run_waits(20, new_session=True)
    try:
        step_pid = step_started(marks)
        run = poll(lambda: store.list_runs(), 10, "the run")[0].id
        if controller == "killed":
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and the pipeline's process
            proc.communicate(timeout=15)
        abort = pk("runs", "abort", run[:12], "--reason", "enough")
        assert abort.returncode == 0, abort.stderr
        assert abort.stdout.strip() == f"run {run} stopped"
        view = show(run)  # at once: no waiting for the controller
        assert (view["status"], view["reason"]) == ("stopped", "enough")
        assert statuses(view) == {"wait": "stopped"}
        assert store.get_task(nodes(view)["wait"]["task"]).status == "stopped"
        if controller == "alive":
            proc.communicate(timeout=15)
            poll(lambda: process_gone(step_pid), 10, f"the step's process {step_pid} to end")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        if not process_gone(step_pid):
            os.kill(step_pid, signal.SIGKILL)  # an orphan of the killed controller
    again = pk("runs", "abort", run)
    assert again.returncode == 1 and again.stderr == f"Error: task {run} is already stopped\n"
    not_a_run = pk("runs", "abort", nodes(view)["wait"]["task"])
    assert not_a_run.returncode == 1 and "is not a pipeline run" in not_a_run.stderr


def test_ctrl_c_stops_the_run_and_its_steps(marks: Path) -> None:
    proc = run_waits(20)
    try:
        step_pid = step_started(marks)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in its terminal sends it
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, (out, err)
    assert_no_traceback(out, err)
    run = only_run()["id"]
    (line,) = error_lines(err)
    assert line.startswith(f"Error: run {run} stopped: ") and "KeyboardInterrupt" in line
    view = show(run)
    assert view["status"] == "stopped" and statuses(view) == {"wait": "stopped"}
    poll(lambda: process_gone(step_pid), 10, f"the step's process {step_pid} to end")


# -- export ---------------------------------------------------------------------------------------

_MERMAID_NODE = re.compile(r'^  (n\d+)\["([^"]*)"\](?::::(\w+))?$')
_MERMAID_EDGE = re.compile(r"^  (n\d+) --> (n\d+)$")


def mermaid_structure(text: str) -> tuple[dict[str, tuple[str, str]], set[tuple[str, str]]]:
    """Step name -> (label, class) and edges by step name, of a flowchart without subgraphs."""
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    ids: dict[str, str] = {}
    steps: dict[str, tuple[str, str]] = {}
    edges: set[tuple[str, str]] = set()
    for line in lines[1:]:
        if m := _MERMAID_NODE.match(line):
            name = m.group(2).split("<br/>")[0]
            ids[m.group(1)] = name
            steps[name] = (m.group(2), m.group(3))
        elif m := _MERMAID_EDGE.match(line):
            edges.add((ids[m.group(1)], ids[m.group(2)]))
        else:
            assert line.startswith("  classDef "), f"unexpected line {line!r}"
    return steps, edges


def test_export_mermaid_dot_and_html(tmp_path: Path) -> None:
    invoke("run", str(SCRIPTS / "three_steps.py"), "--mode", "debug")
    invoke("run", str(SCRIPTS / "three_steps.py"), "--mode", "debug")  # all cached
    first, second = [r["id"] for r in reversed(json.loads(invoke("runs", "ls", "--json").stdout))]

    text = invoke("export", first[:12]).stdout  # mermaid is the default
    assert text == invoke("export", first, "--format", "mermaid").stdout
    steps, edges = mermaid_structure(text)
    assert set(steps) == {"load", "offset", "total"}
    assert edges == {("load", "total"), ("offset", "total")}
    assert {cls for _, cls in steps.values()} == {"completed"}
    assert all(label.split("<br/>")[1].startswith("completed") for label, _ in steps.values())
    cached, _ = mermaid_structure(invoke("export", second).stdout)
    assert {cls for _, cls in cached.values()} == {"cached"}
    if shutil.which("node") and (CHECK_DIR / "node_modules" / "mermaid").is_dir():
        diagram = tmp_path / "run.mmd"
        diagram.write_text(text, encoding="utf-8")
        check = subprocess.run(["node", "validate.mjs", str(diagram)], cwd=CHECK_DIR,
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and check.stdout.startswith("ok "), (
            check.stdout + check.stderr)

    dot = invoke("export", first, "--format", "dot").stdout
    assert dot.startswith("digraph")
    assert dot.count(" -> ") == 2 and all(f'label="{s}' in dot for s in steps)
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True,
                             timeout=60)
        assert svg.returncode == 0 and "<svg" in svg.stdout, svg.stderr

    out = tmp_path / "out.html"
    proc = pk("export", first, "--format", "html", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr.strip() == f"wrote {out}"
    page = out.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html>") and "</html>" in page
    assert all(s in page for s in steps) and "three-steps" in page
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no .partial


def test_rerun_from_python_with_task_clone(marks: Path) -> None:
    from pipekit import Task
    from pipekit.runs import execute

    invoke("run", THREE, "--param", "n=3")
    origin = only_run()["id"]
    draft = Task.clone(source_task=origin)
    draft.set_parameters({"Args/n": 4})
    done = execute(draft.id)
    assert done.status == "completed"
    view = show(draft.id)
    assert view["origin"] == origin and view["parent"] is None
    assert view["parameters"]["n"] == "4"
    assert set(statuses(view).values()) <= {"completed", "cached"}


# -- controller lost (RELIABILITY 26, first half) ---------------------------------------------


@pytest.mark.exclusive
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_dead_controller_here_shows_lost_at_once(marks: Path, sig: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEKIT_LEASE_TTL", "3")
    store = get_store()
    proc = run_waits(30, new_session=True)
    step_pid = run = None
    try:
        step_pid = step_started(marks)
        run = poll(lambda: store.list_runs(), 10, "the run")[0].id
        first = store.get_run(run).heartbeat
        # Alive: it heartbeats, so it is never lost, even after a whole TTL.
        poll(lambda: store.get_run(run).heartbeat > first + 3, 15, "heartbeats past one TTL")
        assert not store.list_runs()[0].controller_lost
        controller = int(store.get_run(run).owner.rpartition(":")[2])
        assert controller != proc.pid  # the pipeline's own process, not the CLI's
        os.killpg(proc.pid, sig)  # the CLI and, in its own session, the pipeline's process
        os.kill(controller, sig)  # die together; the step lives on, in a session of its own
        killed = time.monotonic()
        [listed] = poll(lambda: [r for r in json.loads(pk("runs", "ls", "--json").stdout)
                                 if r["controller_lost"]], 15, "the run to show lost")
        # Its process is known gone on this host: at once, well inside the 3 s TTL (another
        # host's controller is seen lost once its heartbeat is a TTL old: the store's part).
        assert time.monotonic() - killed < 2
        assert listed["id"] == run and listed["status"] == "in_progress"
        assert "controller lost" in pk("runs", "show", run).stdout
        assert show(run)["controller_lost"] is True
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if step_pid is not None and not process_gone(step_pid):
            os.kill(step_pid, signal.SIGKILL)
        if run is not None and store.get_task(run).status == "in_progress":
            # Nobody drives the crashed run (it waits for pipekit resume): end it, and its
            # step whose process is gone with it (RELIABILITY 12).
            from pipekit.runs import abort_run

            abort_run(run, "test over")


def test_a_controller_that_exited_is_dead_even_before_its_parent_reaps_it() -> None:
    """A controller that exited but whose parent has not waited for it yet (a zombie: a
    frozen agent, a busy launcher) drives nothing: ``pipekit resume`` may take its run."""
    import socket

    from pipekit.models import RunRecord
    from pipekit.runs import owner_alive

    def run_of(pid: int) -> RunRecord:
        return RunRecord(id="r", version=None, structure_hash=None, origin=None, dag={},
                         created=time.time(), owner=f"{socket.gethostname()}:{pid}",
                         heartbeat=time.time())

    assert owner_alive(run_of(os.getpid()))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        poll(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE, 30,
             "the exited child to be a zombie")
        assert not owner_alive(run_of(proc.pid))
    finally:
        proc.wait()


def test_a_controller_killed_under_pipekit_run_ends_its_run_and_steps(marks: Path) -> None:
    """The worker that ran the controller ends the run with it: no step stays open."""
    store = get_store()
    proc = run_waits(20)
    step_pid = None
    try:
        step_pid = step_started(marks)
        run = poll(lambda: store.list_runs(), 10, "the run")[0].id
        controller = int(poll(lambda: store.get_run(run).owner, 10, "the owner")
                         .rpartition(":")[2])
        os.kill(controller, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if step_pid is not None and not process_gone(step_pid):
            os.kill(step_pid, signal.SIGKILL)
    assert proc.returncode == 1
    (line,) = error_lines(err)
    assert line.startswith(f"Error: run {run} failed: killed by signal 9")
    view = show(run)
    assert view["status"] == "failed" and statuses(view) == {"wait": "stopped"}
    assert store.get_task(nodes(view)["wait"]["task"]).status == "stopped"
