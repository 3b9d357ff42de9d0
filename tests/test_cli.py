"""The ``pipekit`` command: in-process with click's ``CliRunner`` where behaviour allows, and as
the installed console script (a real process) where what matters is what a user's terminal
sees: one ``Error:`` line on stderr, exit status 1, a traceback only with ``--debug``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pipekit import Task
from pipekit.cli import cli
from pipekit.store import get_store, reset_store
from pipekit.store.migrate import known_migrations
from pipekit.worker import run_task

PIPEKIT = str(Path(sys.executable).with_name("pipekit"))


def invoke(*args: str, code: int = 0):
    """Run ``pipekit args`` in-process; check its exit status."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result


def pk(*args: str, env: dict[str, str] | None = None, timeout: float = 60
       ) -> subprocess.CompletedProcess:
    """Run the installed ``pipekit`` console script against this test's store."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([PIPEKIT, *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 1, exactly one stderr line starting ``Error:`` holding ``fragments``, no traceback."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    (line,) = lines
    assert line.startswith("Error: ")
    for fragment in fragments:
        assert fragment in line
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    return line


def write_script(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "script.py"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def script(tmp_path: Path) -> Path:
    return write_script(tmp_path / "code", """
        from pipekit import Task
        task = Task.init()
        print("step output", flush=True)
    """)


@pytest.fixture
def draft(script: Path) -> Task:
    task = Task.create(project_name="proj", task_name="draft", script=str(script),
                       argparse_args=[("lr", 0.1)])
    task.add_tags(["nightly"])
    return task


# -- tasks --------------------------------------------------------------------------------------


def test_tasks_ls_table_json_and_filters(draft, script):
    other = Task.create(project_name="other", task_name="second", script=str(script))
    other.mark_started()
    table = invoke("tasks", "ls").stdout
    assert "draft" in table and "second" in table and draft.id[:12] in table
    listed = json.loads(invoke("tasks", "ls", "--json").stdout)
    assert [t["id"] for t in listed] == [other.id, draft.id]
    assert listed[1]["status"] == "created" and listed[1]["tags"] == ["nightly"]

    def ids(*filters: str) -> list[str]:
        return [t["id"] for t in json.loads(invoke("tasks", "ls", "--json", *filters).stdout)]

    assert ids("--project", "proj") == [draft.id]
    assert ids("--name", "second") == [other.id]
    assert ids("--status", "in_progress") == [other.id]
    assert ids("--tag", "nightly") == [draft.id]
    assert ids("--limit", "1") == [other.id]
    assert invoke("tasks", "ls", "--project", "none").stdout.strip() == "no tasks"
    invoke("tasks", "ls", "--status", "bogus", code=2)  # click's own usage error


def test_tasks_show_text_and_json(draft):
    draft.upload_artifact("data", {"k": [1, 2]})
    draft.get_logger().report_scalar("loss", "train", 0.5, 1)
    draft.get_logger().report_single_value("acc", 0.9)
    text = invoke("tasks", "show", draft.id[:8]).stdout
    assert draft.id in text and "status    created" in text and "Args/lr" in text
    assert "data" in text and "loss" in text and "acc" in text
    details = json.loads(invoke("tasks", "show", draft.id, "--json").stdout)
    assert details["task"]["id"] == draft.id and details["task"]["name"] == "draft"
    assert details["parameters"] == {"Args/lr": "0.1"}
    assert [a["name"] for a in details["artifacts"]] == ["data"]
    assert details["artifacts"][0]["serializer"] == "json"
    assert details["metrics"] == {"loss": {"train": {"last": 0.5, "min": 0.5, "max": 0.5}}}
    assert details["single_values"] == {"acc": 0.9}
    assert details["queue"] is None


def test_tasks_clone_with_param_overrides(draft):
    new_id = invoke("tasks", "clone", draft.id, "--param", "Args/lr=0.5",
                    "--param", "Extra/name=a=b").stdout.strip()
    clone = Task(new_id)
    assert clone.name == "Clone Of draft" and clone.parent == draft.id
    assert clone.get_parameters() == {"Args/lr": "0.5", "Extra/name": "a=b"}
    assert draft.get_parameters() == {"Args/lr": "0.1"}
    out = json.loads(invoke("tasks", "clone", draft.id, "--name", "mine", "--project", "p2",
                            "--json").stdout)
    assert out["source"] == draft.id
    assert (Task(out["id"]).name, Task(out["id"]).project) == ("mine", "p2")


@pytest.mark.parametrize(("param", "fragment"), [
    ("noequals", "Section/key=value"),
    ("=1", "Section/key=value"),
    ("/x=1", "invalid parameter name '/x'"),
    ("a//b=1", "invalid parameter name 'a//b'"),
])
def test_tasks_clone_with_a_bad_param_creates_nothing(draft, param, fragment):
    result = invoke("tasks", "clone", draft.id, "--param", param, code=1)
    assert result.stderr.startswith("Error: ") and fragment in result.stderr
    assert Task.get_tasks() == [draft]


def test_tasks_run_echoes_output_and_completes(draft):
    result = invoke("tasks", "run", draft.id)
    assert "step output" in result.stdout
    assert f"task {draft.id} completed" in result.stderr
    assert draft.get_status() == "completed"
    assert "step output" in draft.get_log()
    result = invoke("tasks", "run", draft.id, code=1)  # not runnable twice
    assert "cannot run task" in result.stderr and "'completed'" in result.stderr


def test_tasks_run_of_a_failing_task_is_one_error_line(tmp_path):
    script = write_script(tmp_path / "bad", "raise SystemExit(5)\n")
    task = Task.create(script=str(script))
    result = invoke("tasks", "run", task.id, "--quiet", code=1)
    assert result.stderr == f"Error: task {task.id} failed: exit code 5\n"
    assert result.stdout == ""


def test_tasks_run_of_a_draft_without_a_script_is_one_error_line():
    task = Task.create(project_name="proj", task_name="holder")  # ClearML allows no script
    proc = pk("tasks", "run", task.id)
    assert_one_line_error(proc, f"task {task.id} failed: no script to run: ",
                          "Task.create() without script=")
    assert task.get_status() == "failed"


def test_tasks_enqueue_and_queues_ls(draft):
    assert "queued on 'default'" in invoke("tasks", "enqueue", draft.id).stdout
    assert draft.get_status() == "queued"
    queues = json.loads(invoke("queues", "ls", "--json").stdout)
    assert queues == [{"name": "default", "pending": 1, "running": 0, "agents": 0},
                      {"name": "services", "pending": 0, "running": 0, "agents": 0}]
    table = invoke("queues", "ls").stdout
    assert "default" in table and "services" in table
    assert json.loads(invoke("tasks", "show", draft.id, "--json").stdout)["queue"] == "default"
    result = invoke("tasks", "enqueue", draft.id, "--queue", "gpu", code=1)
    assert "unknown queue 'gpu' (known queues: default, services)" in result.stderr


# -- logs ---------------------------------------------------------------------------------------


def test_logs_prints_the_captured_output(draft):
    run_task(draft.id)
    assert invoke("logs", draft.id).stdout == draft.get_log()
    assert "step output" in draft.get_log()
    fresh = Task.clone(draft)
    assert invoke("logs", fresh.id).stdout == ""  # no log yet: nothing, not an error


def test_logs_follow_prints_until_the_task_ends(tmp_path):
    go = tmp_path / "go"
    script = write_script(tmp_path / "code", f"""
        import time
        from pathlib import Path
        print("first line", flush=True)
        deadline = time.monotonic() + 30
        while not Path({str(go)!r}).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        print("second line", flush=True)
    """)
    task = Task.create(project_name="proj", task_name="slow", script=str(script))
    runner = subprocess.Popen([PIPEKIT, "tasks", "run", task.id, "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    follower = subprocess.Popen([PIPEKIT, "logs", "--follow", task.id],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The follower has printed the first line before the second one exists ...
        assert follower.stdout.readline() == b"first line\n"
        assert follower.poll() is None
        go.touch()
        # ... and goes on until the task's final status, then exits by itself.
        rest, err = follower.communicate(timeout=30)
        assert runner.wait(timeout=30) == 0
    finally:
        for proc in (runner, follower):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert follower.returncode == 0, err
    assert rest == b"second line\n"
    assert task.get_status() == "completed"


# -- db, plugins --------------------------------------------------------------------------------


def test_db_status_and_upgrade_of_a_new_store(pipekit_home):
    names = [m.name for m in known_migrations()]
    before = json.loads(invoke("db", "status", "--json").stdout)
    assert before["current"] == 0 and before["pending"] == names
    assert before["newest"] == len(names)
    assert str(pipekit_home) in before["location"]
    assert invoke("db", "upgrade").stdout.strip() == (
        f"applied {len(names)} migration(s): {', '.join(names)}")
    after = json.loads(invoke("db", "status", "--json").stdout)
    assert (after["current"], after["pending"]) == (len(names), [])
    assert "up to date" in invoke("db", "status").stdout
    assert "is up to date" in invoke("db", "upgrade").stdout


def test_plugins_lists_the_core_plugins():
    plugins = json.loads(invoke("plugins", "--json").stdout)
    by_name = {p["name"]: p for p in plugins}
    assert by_name["serializers"]["dist"] == "pipekit"
    assert by_name["serializers"]["module"] == "pipekit_plugins.serializers"
    assert "pipekit_serializers" in by_name["serializers"]["hooks"]
    assert by_name["serializers"]["version"]
    assert "serializers" in invoke("plugins").stdout


@pytest.mark.parametrize("args", [
    ["tasks", "ls", "--json"],
    ["tasks", "show", "DRAFT", "--json"],
    ["tasks", "clone", "DRAFT", "--json"],
    ["queues", "ls", "--json"],
    ["plugins", "--json"],
    ["db", "status", "--json"],
])
def test_every_json_output_parses(draft, args):
    out = invoke(*[draft.id if a == "DRAFT" else a for a in args]).stdout
    assert json.loads(out) not in (None, "")


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


ALL_COMMANDS = [" ".join(path) for path, _ in _commands(cli)]


def test_the_cli_has_the_commands_of_this_release():
    assert {"tasks ls", "tasks show", "tasks clone", "tasks run", "tasks enqueue", "logs",
            "db status", "db upgrade", "plugins", "queues ls"} <= set(ALL_COMMANDS)


@pytest.mark.parametrize("path", ["", *ALL_COMMANDS])
def test_every_command_has_help_text(path):
    args = path.split()
    command: click.Command = cli
    for name in args:
        command = command.commands[name]  # type: ignore[attr-defined]
    assert (command.help or "").strip(), f"`pipekit {path}` has no docstring"
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert (param.help or "").strip(), f"`pipekit {path}` option {param.name} has no help"
    out = invoke(*args, "--help").stdout
    assert command.help.strip().splitlines()[0] in " ".join(out.split())
    assert "Usage:" in out


# -- errors, as a user's terminal sees them --------------------------------------------------------


@pytest.mark.parametrize(("args", "fragments"), [
    (["tasks", "show", "0123456789abcdef"], ["unknown task '0123456789abcdef'"]),
    (["logs", "nope"], ["unknown task 'nope'"]),
    (["tasks", "clone", "DRAFT", "--param", "lr"], ["'lr'", "Section/key=value"]),
    (["tasks", "clone", "DRAFT", "--param", "Args//lr=1"], ["'Args//lr'"]),
    (["tasks", "enqueue", "DRAFT", "--queue", "gpu"], ["unknown queue 'gpu'", "default"]),
])
def test_errors_are_one_line_without_traceback(draft, args, fragments):
    proc = pk(*[draft.id if a == "DRAFT" else a for a in args])
    assert_one_line_error(proc, *fragments)
    assert proc.stdout == ""


@pytest.mark.parametrize("command", [["runs", "show"], ["tasks", "show"], ["logs"]])
def test_a_short_or_shared_id_prefix_says_how_many_characters_it_needs(command):
    store = get_store()
    store.create_task(project="p", name="one", task_id="c0ffee" + "1" * 26)
    proc = pk(*command, "c0f")
    assert_one_line_error(proc, "task id prefix 'c0f' is too short (1 task starts with it)",
                          "give at least 6 characters")
    store.create_task(project="p", name="two", task_id="c0ffee12" + "0" * 24)
    proc = pk(*command, "c0ffee")
    assert_one_line_error(proc, "task id prefix 'c0ffee' is ambiguous (2 tasks start with it)",
                          "give at least 8 characters")


def test_debug_shows_the_traceback():
    proc = pk("--debug", "tasks", "show", "0123456789abcdef")
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "TaskNotFound" in proc.stderr and "unknown task '0123456789abcdef'" in proc.stderr


def test_a_path_like_artifact_name_fails_the_task_with_one_error_line(tmp_path, pipekit_home):
    script = write_script(tmp_path / "code", """
        from pipekit import Task
        task = Task.init()
        task.upload_artifact("../x", 1)
    """)
    task = Task.create(project_name="proj", task_name="escape", script=str(script))
    proc = pk("tasks", "run", task.id, "--quiet")
    line = assert_one_line_error(proc, task.id, "failed", "InvalidName",
                                 "invalid artifact name '../x'")
    assert line.endswith("(script.py:4)")  # the script's line, not pipekit's
    assert task.get_status() == "failed"
    assert "invalid artifact name '../x'" in task.data.status_reason
    assert "Traceback" in task.get_log()  # the task's own log keeps the details
    assert len(task.artifacts) == 0
    assert not (pipekit_home.parent / "x").exists()


@pytest.fixture
def newer_store(draft, pipekit_home) -> Iterator[Path]:
    """This test's store, marked as written by a future pipekit (schema version 999)."""
    db = pipekit_home / "pipekit.db"
    reset_store()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO schema_version (version, name, applied) "
                     "VALUES (999, '0999_future', 0)")
    conn.close()
    yield db
    conn = sqlite3.connect(db)  # let the autouse fixture's teardown open the store again
    with conn:
        conn.execute("DELETE FROM schema_version WHERE version = 999")
    conn.close()


@pytest.mark.parametrize("args", [["tasks", "ls"], ["db", "status"], ["db", "upgrade"],
                                  ["logs", "abcdef"]])
def test_a_store_from_a_newer_pipekit_is_refused_untouched(newer_store, args):
    before = hashlib.sha256(newer_store.read_bytes()).hexdigest()
    proc = pk(*args)
    assert_one_line_error(proc, str(newer_store), "schema version 999",
                          "upgrade pipekit", "not modified")
    assert hashlib.sha256(newer_store.read_bytes()).hexdigest() == before
    conn = sqlite3.connect(newer_store)
    try:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (999,)
    finally:
        conn.close()


def test_a_newer_store_is_refused_in_process_too(newer_store):
    result = invoke("tasks", "ls", code=1)
    assert result.stderr.startswith("Error: store ") and "999" in result.stderr
    with pytest.raises(Exception, match="newer than this pipekit"):
        get_store()


def test_clone_param_overrides_keep_the_parameter_type(script):
    task = Task.create(project_name="proj", task_name="typed", script=str(script),
                       argparse_args=[("epochs", 5), ("lr", 0.1), ("fast", True)])
    new_id = invoke("tasks", "clone", task.id, "--param", "Args/epochs=3",
                    "--param", "Args/fast=false", "--param", "New/key=7").stdout.strip()
    typed = Task(new_id).get_parameters(cast=True)
    assert typed == {"Args/epochs": 3, "Args/lr": 0.1, "Args/fast": False, "New/key": "7"}


def test_clone_param_of_the_wrong_type_is_refused_before_cloning(script):
    task = Task.create(project_name="proj", task_name="typed", script=str(script),
                       argparse_args=[("epochs", 5)])
    result = invoke("tasks", "clone", task.id, "--param", "Args/epochs=abc", code=1)
    assert "Args/epochs" in result.stderr and "'abc'" in result.stderr
    assert Task.get_tasks() == [task]
