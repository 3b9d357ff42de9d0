"""RELIABILITY 28 under ``pipekit run``: a script's own error is the run's reason and the CLI's
one error line (exception type, message, and where: ``file, line N`` for a syntax error, the
user's ``file:line`` for anything else), never just "exit code 1"; a script that starts no
pipeline fails; a script that crashes after its pipeline completed exits non-zero.

Every test runs the installed ``pipekit`` console script on a small script written to the
test's folder, against the test's own store (``PIPEKIT_HOME`` from conftest).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pipeline_helpers import PIPEKIT, one_error

from pipekit.models import Status
from pipekit.store import get_store

#: A two-step pipeline the scripts below build on (``{extra}`` is replaced by each test).
PIPELINE = """\
from pipekit import PipelineController


def one():
    return 1


def two(x):
    return x + 1


if __name__ == "__main__":
    pipe = PipelineController(name="causes", project="root-causes", version="1.0.0")
{steps}
    pipe.start_locally(run_pipeline_steps_locally=True)
{after}"""

TWO_STEPS = """\
    pipe.add_function_step("one", one, function_return=["x"])
    pipe.add_function_step("two", two, {"x": "${one.x}"}, ["y"])"""


def pipeline(steps: str = TWO_STEPS, after: str = "") -> str:
    return PIPELINE.format(steps=steps, after=after)


def write(folder: Path, text: str, name: str = "pipe.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, needle: str) -> int:
    """The 1-based number of the first line of ``path`` containing ``needle``."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def pk_run(script: Path, *args: str, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, str]:
    """``pipekit run SCRIPT ARGS`` as a real process; returns it and the run's id."""
    proc = subprocess.run([PIPEKIT, "run", str(script), *args], capture_output=True, text=True,
                          cwd=cwd or script.parent, timeout=120,
                          env={**os.environ, **(env or {})})
    found = re.match(r"run ([0-9a-f]{32})$", proc.stdout.splitlines()[0] if proc.stdout else "")
    assert found, (proc.stdout, proc.stderr)
    return proc, found.group(1)


def the_error(proc: subprocess.CompletedProcess) -> str:
    """The one ``Error:`` line of a failed ``pipekit run``, which is stderr's last line; no
    traceback anywhere."""
    line = one_error(proc)
    assert proc.stderr.rstrip("\n").splitlines()[-1] == line
    return line


def assert_cause(script: Path, cause: str, env: dict[str, str] | None = None) -> str:
    """``pipekit run script`` fails with ``cause`` as its error line's reason and as the
    run's status reason; returns the run's id."""
    proc, run_id = pk_run(script, env=env)
    line = the_error(proc)
    assert line.startswith(f"Error: run {run_id} failed: {cause} ("), line
    assert "exit code" not in line
    info = get_store().get_task(run_id)
    assert (info.status, info.status_reason) == (Status.failed.value, cause)
    return run_id


# -- root causes (issue 12, item 3) -------------------------------------------------------------


def test_a_syntax_error_names_its_file_and_line(tmp_path: Path) -> None:
    source = pipeline(after="    what = = 2\n")
    script = write(tmp_path, source)
    with pytest.raises(SyntaxError) as python_says:
        compile(script.read_text(), str(script), "exec")
    cause = f"SyntaxError: {python_says.value}"
    assert f"(pipe.py, line {python_says.value.lineno})" in cause
    run_id = assert_cause(script, cause)
    log = get_store().log_path(run_id).read_text()  # the log keeps Python's own report
    assert log.startswith(f'  File "{script}", line {python_says.value.lineno}\n'), log
    assert log.rstrip().endswith("SyntaxError: invalid syntax"), log


def test_an_import_error_names_the_users_line(tmp_path: Path) -> None:
    script = write(tmp_path, "import json\n\nimport pipekit_no_such_module\n")
    assert_cause(script, "ModuleNotFoundError: No module named 'pipekit_no_such_module' "
                         "(pipe.py:3)")


def test_an_import_error_in_a_module_beside_the_script(tmp_path: Path) -> None:
    """The script's folder is first on sys.path, as with ``python pipe.py``, and the user's
    line is the helper's, not pipekit's or importlib's."""
    write(tmp_path, "X = 1\nfrom os import no_such_name\n", name="helpers.py")
    script = write(tmp_path, "import helpers\n")
    assert_cause(script, "ImportError: cannot import name 'no_such_name' from 'os' "
                         f"({os.__file__}) (helpers.py:2)")


def test_a_cycle_names_the_steps_and_the_users_line(tmp_path: Path) -> None:
    script = write(tmp_path, pipeline(steps="""\
    pipe.add_function_step("one", one, function_return=["x"], parents=["two"])
    pipe.add_function_step("two", two, {"x": 1}, ["y"], parents=["one"])"""))
    line = line_of(script, "start_locally")
    assert_cause(script, "PipelineCycleError: steps form a cycle: one -> two -> one (each step "
                         "is a parent of the next); remove one of these parent links "
                         f"(pipe.py:{line})")


def test_an_unknown_reference_names_the_users_line(tmp_path: Path) -> None:
    script = write(tmp_path, pipeline(steps="""\
    pipe.add_function_step("one", one, function_return=["x"])
    pipe.add_function_step("two", two, {"x": "${nosuch.x}"}, ["y"])"""))
    line = line_of(script, "nosuch")
    assert_cause(script, "UnknownReference: step 'two' refers to unknown step 'nosuch' in "
                         "'${nosuch.x}': a function step's argument may refer only to a step "
                         f"added before it (added so far: 'one') (pipe.py:{line})")


def test_a_bad_max_workers_setting_names_the_users_line(tmp_path: Path) -> None:
    script = write(tmp_path, pipeline())
    line = line_of(script, "start_locally")
    assert_cause(script, "PipekitError: PIPEKIT_MAX_WORKERS='many' is not a positive integer "
                         f"(pipe.py:{line})", env={"PIPEKIT_MAX_WORKERS": "many"})


def test_an_error_with_a_multi_line_message_stays_one_line(tmp_path: Path) -> None:
    script = write(tmp_path, "raise ValueError('first\\nsecond')\n")
    assert_cause(script, "ValueError: first second (pipe.py:1)")


# -- exit codes (issue 12, item 4) --------------------------------------------------------------


@pytest.mark.parametrize("source", [
    "print('hello')\n",
    "from pipekit import Task\n\ntask = Task.init(project_name='p', task_name='plain')\n"
    "task.get_logger().report_scalar('loss', 'train', 0.5, iteration=0)\n",
], ids=["plain", "task-init"])
def test_a_script_that_starts_no_pipeline_fails(tmp_path: Path, source: str) -> None:
    script = write(tmp_path, source)
    proc, run_id = pk_run(script)
    line = the_error(proc)
    assert line.startswith(f"Error: run {run_id} failed: the script pipe.py started no "
                           "pipeline"), line
    info = get_store().get_task(run_id)
    assert info.status == Status.failed.value
    assert info.status_reason.startswith("the script pipe.py started no pipeline")


def test_a_crash_after_the_pipeline_completed_exits_1(tmp_path: Path) -> None:
    """The run stays ``completed`` (its steps ran and their results stand: the pipeline did
    complete); its reason and the error line say the script failed afterwards."""
    script = write(tmp_path, pipeline(after="    raise RuntimeError('report failed')\n"))
    line = line_of(script, "report failed")
    proc, run_id = pk_run(script)
    error = the_error(proc)
    cause = f"RuntimeError: report failed (pipe.py:{line})"
    assert error.startswith(f"Error: run {run_id} completed, then the script failed: {cause} ("), \
        error
    info = get_store().get_task(run_id)
    assert (info.status, info.status_reason) == (
        Status.completed.value, f"then the script failed: {cause}")
    steps = {n.name: n.status for n in get_store().list_nodes(run_id)}
    assert steps == {"one": "completed", "two": "completed"}


def test_an_exit_code_after_the_pipeline_completed_exits_1(tmp_path: Path) -> None:
    script = write(tmp_path, pipeline(after="    import sys\n    sys.exit(3)\n"))
    proc, run_id = pk_run(script)
    error = the_error(proc)
    assert error.startswith(f"Error: run {run_id} completed, then the script failed: "
                            "exit code 3 ("), error


# -- what the script sees is what `python SCRIPT` gives it --------------------------------------


def test_the_script_sees_what_python_script_gives_it(tmp_path: Path) -> None:
    """``__name__``, ``__file__``, the ``__main__`` module's other globals, ``sys.argv``,
    ``sys.path[0]`` (the script's folder, not the working directory), argparse, a module
    beside the script, and classes pickled by reference from ``__main__``: the same under
    ``pipekit run`` as with ``python SCRIPT``; of pipekit's environment the script sees
    only its task and store, not the runner's cause file."""
    folder = tmp_path / "code"
    folder.mkdir()
    write(folder, "def double(x):\n    return 2 * x\n", name="helpers.py")
    script = write(folder, """\
        \"\"\"The docstring.\"\"\"
        import argparse
        import json
        import os
        import pickle
        import sys

        import helpers
        from pipekit import PipelineController


        class Point:
            pass


        def one(n):
            return n


        if __name__ == "__main__":
            parser = argparse.ArgumentParser()
            parser.add_argument("--n", type=int, default=1)
            parser.add_argument("rest", nargs="*")
            args = parser.parse_args()
            main = sys.modules["__main__"]
            seen = {"name": __name__, "file": __file__, "argv": sys.argv, "path0": sys.path[0],
                    "n": args.n, "rest": args.rest, "double": helpers.double(args.n),
                    "main_is_me": main.Point is Point, "main_file": main.__file__,
                    "pickled": type(pickle.loads(pickle.dumps(Point()))) is Point,
                    "globals": sorted(k for k in globals() if k.startswith("__")),
                    "spec": repr(__spec__), "package": repr(__package__), "doc": __doc__,
                    "cached": repr(__cached__), "loader": type(__loader__).__name__,
                    "annotations": repr(__annotations__),
                    "pipekit_env": sorted(k for k in os.environ if k.startswith("PIPEKIT_")
                                          and k not in ("PIPEKIT_TASK_ID", "PIPEKIT_DB"))}
            with open(os.environ["SEEN"], "w") as fh:
                json.dump(seen, fh)
            pipe = PipelineController(name="semantics", project="root-causes", version="1")
            pipe.add_function_step("one", one, {"n": args.n}, ["n"])
            pipe.start_locally(run_pipeline_steps_locally=True)
        """)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    write(workdir, "raise AssertionError('the working directory is not on sys.path')\n",
          name="helpers.py")
    args = ["--n", "4", "a", "b"]
    subprocess.run([sys.executable, str(script.resolve()), *args], cwd=workdir, check=True,
                   timeout=120, env={**os.environ, "SEEN": str(tmp_path / "python.json")})
    proc, run_id = pk_run(script, *args, cwd=workdir,
                          env={"SEEN": str(tmp_path / "pipekit.json")})
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    python = json.loads((tmp_path / "python.json").read_text())
    assert python["argv"] == [str(script.resolve()), *args]
    assert python["path0"] == str(folder.resolve())
    assert python["main_is_me"] and python["pickled"] and python["double"] == 8
    assert json.loads((tmp_path / "pipekit.json").read_text()) == python
    assert get_store().get_task(run_id).status == Status.completed.value
