"""Values keep their type (issue 12, item 6): a string a step returns stays a string even when
it happens to name a file or folder; only a ``pathlib.Path`` is a file or folder artifact. In
``Task.upload_artifact`` (and ``upload_model``) a string naming an existing path is that path,
as ClearML documents; any other string is a string.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipekit import PipelineController, Task
from pipekit.store import get_store


def names():
    return "sub", "data.csv"


def path_of():
    from pathlib import Path

    return Path("sub")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("a")
    (tmp_path / "data.csv").write_text("x,y\n1,2\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("executor", ["inline", "thread", "subprocess"])
def test_a_returned_string_that_names_a_path_stays_a_string(workdir: Path,
                                                             executor: str) -> None:
    pipe = PipelineController(name="types", project="types", version="1.0.0")
    pipe.add_function_step("names", names, function_return=["folder", "file"])
    pipe.add_function_step("path_of", path_of, function_return=["folder"])
    pipe.start_locally(run_pipeline_steps_locally=True, executor=executor)
    steps = {t.name: Task(t.id) for t in get_store().find_tasks(parent=pipe.id)}
    assert steps["names"].artifacts["folder"].get() == "sub"
    assert steps["names"].artifacts["file"].get() == "data.csv"
    assert steps["names"].artifacts["folder"].type == "json"  # (its serializer)
    folder = steps["path_of"].artifacts["folder"].get()  # a Path is the folder it names
    assert isinstance(folder, Path) and (folder / "a.txt").read_text() == "a"


def test_upload_artifact_reads_a_string_naming_a_path_as_clearml_does(workdir: Path) -> None:
    task = Task.create(project_name="types", task_name="uploads")
    task.upload_artifact("file", "data.csv")
    task.upload_artifact("folder", "sub")
    task.upload_artifact("text", "no such file here")
    assert Path(task.artifacts["file"].get()).read_text() == "x,y\n1,2\n"
    assert (Path(task.artifacts["folder"].get()) / "a.txt").read_text() == "a"
    assert task.artifacts["text"].get() == "no such file here"
    model = task.upload_model("weights", "data.csv")
    assert Path(model.get_local_copy()).read_text() == "x,y\n1,2\n"
