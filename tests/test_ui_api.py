"""The web UI's JSON API (docs/ui-api.md), endpoint by endpoint, and its guards
(RELIABILITY 20: bind, Host, token; 21: no secret in any response).

Reads go through starlette's TestClient against the real app over a store made by real
pipeline runs (``pipekit run`` in a subprocess); what a server process does (bind, the
printed URL, refusing a public address) is tested on real ``pipekit ui`` processes.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

starlette = pytest.importorskip("starlette", reason="the ui extra is not installed")
from starlette.testclient import TestClient  # noqa: E402

import pipekit  # noqa: E402
from pipekit import PipelineDecorator  # noqa: E402
from pipekit.models import Status  # noqa: E402
from pipekit.store import get_store, reset_store  # noqa: E402
from pipekit.testing import wait_until  # noqa: E402
from pipekit.ui.app import create_app, local_hosts  # noqa: E402

# one worker under pytest-xdist: the module's runs are built once
pytestmark = pytest.mark.xdist_group("ui_api")

PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"
TOKEN = "test-token-" + "x" * 20

PIPELINE = textwrap.dedent('''
    import os
    from pipekit import PipelineController


    def make(n: int):
        import numpy as np
        from pipekit import Logger

        print("making", n, "items: héllo")
        log = Logger.current_logger()
        for i in range(5):
            log.report_scalar("loss", "train", 1.0 / (i + 1) * n, i)
            log.report_scalar("loss", "eval", 2.0 / (i + 1), i)
        log.report_histogram("sizes", "h", [1, 2, 3], iteration=0)
        log.report_image("picture", "p", iteration=0, image=np.zeros((4, 4, 3), dtype=np.uint8))
        return list(range(n)), "x" * 100_000


    def total(data):
        print("total of", data)
        return sum(data)


    pipe = PipelineController(name="uiapi", project="ui", version="1.0.0")
    pipe.add_parameter("n", 3, description="how many")
    pipe.add_function_step("make", make, {"n": "${pipeline.n}"}, ["data", "big"],
                           cache_executed_step=True)
    pipe.add_function_step("total", total, {"data": "${make.data}"}, ["sum"])
    if os.environ.get("GATE"):
        def wait(sum):
            import os
            import time
            deadline = time.time() + 120
            while not os.path.exists(os.environ["GATE"]) and time.time() < deadline:
                time.sleep(0.05)  # the workload: a step that runs until told to stop
            return sum
        pipe.add_function_step("wait", wait, {"sum": "${total.sum}"}, ["out"])
    pipe.start_locally(run_pipeline_steps_locally=True)
''')


def pipekit_cmd(*args: str, env: dict[str, str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipekit", *args], capture_output=True,
                          text=True, timeout=timeout, env=env or dict(os.environ))


def client(token: str = TOKEN) -> TestClient:
    return TestClient(create_app(token=token, hosts=local_hosts(PORT), version="test"),
                      base_url=BASE)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with two completed runs of a two-step pipeline (n=3, then a rerun with n=4)."""
    root = tmp_path_factory.mktemp("ui-api")
    script = root / "uiapi.py"
    script.write_text(PIPELINE)
    env = {**os.environ, "PIPEKIT_HOME": str(root / "home"), "PIPEKIT_PROGRESS": "0",
           "PIPEKIT_CONFIG": str(root / "no-config.toml")}
    env.pop("PIPEKIT_DB", None)
    first = pipekit_cmd("run", str(script), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    run1 = first.stdout.split()[1]
    second = pipekit_cmd("rerun", run1, "--param", "n=4", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    run2 = second.stdout.split()[1]
    return {"home": root / "home", "script": script, "run1": run1, "run2": run2}


@pytest.fixture
def shared(built: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The module's store, for tests that only read it."""
    monkeypatch.setenv("PIPEKIT_HOME", str(built["home"]))
    pipekit.configure(home=built["home"])
    reset_store()
    return built


def get(path: str, status: int = 200, **kwargs: Any) -> Any:
    response = client().get(path, **kwargs)
    assert response.status_code == status, (path, response.status_code, response.text)
    return response.json() if response.headers["content-type"].startswith(
        "application/json") else response


def steps(run_id: str) -> dict[str, str]:
    return {n.name: n.task for n in get_store().list_nodes(run_id)}


# -- reading ---------------------------------------------------------------------------------


def test_meta_says_whether_the_token_is_right(shared) -> None:
    assert get("/api/meta")["token_ok"] is False
    body = get(f"/api/meta?token={TOKEN}")
    assert body["token_ok"] is True and body["version"] == "test"
    assert body["store"] == get_store().where
    assert body["queues"] and all(q["agents"] == 0 for q in body["queues"])  # none live
    assert get("/api/meta?token=wrong")["token_ok"] is False


def test_the_runs_list_pages_and_filters(shared) -> None:
    body = get("/api/runs")
    assert body["total"] == 2 and [r["id"] for r in body["runs"]] == [
        shared["run2"], shared["run1"]]  # newest first
    newest = body["runs"][0]
    assert newest["pipeline"] == "uiapi" and newest["status"] == "completed"
    assert newest["origin"] == shared["run1"] and newest["version"]
    assert newest["user"] and newest["duration"] > 0 and newest["controller_lost"] is False
    assert "ui" in body["projects"] and body["pipelines"] == ["uiapi"]
    page = get("/api/runs?limit=1&offset=1")
    assert page["total"] == 2 and [r["id"] for r in page["runs"]] == [shared["run1"]]
    assert get("/api/runs?project=nope")["total"] == 0
    assert get("/api/runs?pipeline=uiapi&status=completed&status=failed")["total"] == 2
    assert get("/api/runs?status=failed")["runs"] == []
    assert "limit" in get("/api/runs?limit=0", 400)["error"]
    assert "'x'" in get("/api/runs?offset=x", 400)["error"]


def test_a_run_page_links_the_dashboards_its_executor_recorded_and_nothing_else() -> None:
    from pipekit.models import ParamInfo
    from pipekit.ui.api import dashboards

    def prop(name: str, value: str, section: str = "properties") -> ParamInfo:
        return ParamInfo(section, name, value, "str", "")

    assert dashboards([prop("dask_dashboard", "http://127.0.0.1:8787/status"),
                       prop("ray_dashboard", "https://ray.example/"),
                       prop("evil_dashboard", "javascript:alert(1)"),
                       prop("other", "http://x/"),
                       prop("dask_dashboard", "http://x/", section="Args")]) == [
        {"name": "dask", "url": "http://127.0.0.1:8787/status"},
        {"name": "ray", "url": "https://ray.example/"}]


def test_a_run_page_has_the_view_typed_args_and_a_left_to_right_layout(shared) -> None:
    body = get(f"/api/runs/{shared['run2'][:10]}")  # a unique prefix will do
    assert body["id"] == shared["run2"] and body["status"] == "completed"
    assert body["parameters"] == {"n": "4"}
    assert body["args"] == [{"name": "n", "value": "4", "type": "int",
                             "description": "how many"}]
    assert [n["name"] for n in body["nodes"]] == ["make", "total"]
    assert {n["name"]: n["status"] for n in body["nodes"]} == {"make": "completed",
                                                               "total": "completed"}
    assert body["dashboards"] == []
    placed = body["layout"]
    assert placed["direction"] == "LR"
    boxes = {n["name"]: n for n in placed["nodes"]}
    assert boxes["make"]["x"] + placed["node_width"] < boxes["total"]["x"]
    assert [(e["parent"], e["child"]) for e in placed["edges"]] == [("make", "total")]


def test_the_status_endpoint_mirrors_the_store(shared) -> None:
    body = get(f"/api/runs/{shared['run1']}/status")
    store = get_store()
    assert body["status"] == store.get_task(shared["run1"]).status == "completed"
    assert {k: (v["status"], v["task"]) for k, v in body["nodes"].items()} == {
        n.name: (n.status, n.task) for n in store.list_nodes(shared["run1"])}
    assert body["runs"] == {}


@PipelineDecorator.component(return_values=["out"])
def double(n):
    return 2 * n


@PipelineDecorator.pipeline(name="ui-inner", project="ui")
def inner(n=1):
    return int(double(n))


@PipelineDecorator.component(return_values=["out"])
def call_inner(n):
    return inner(n=n)  # a run nested in this step


@PipelineDecorator.pipeline(name="ui-outer", project="ui")
def outer(n=2):
    return int(double(call_inner(n)))


def test_nested_runs_come_inside_their_step_with_layouts_and_live_statuses() -> None:
    PipelineDecorator.run_locally(executor="thread")
    assert outer(n=3) == 12
    store = get_store()
    (run,) = [r for r in store.list_runs() if r.name == "ui-outer"]
    (nested,) = [r for r in store.list_runs() if r.name == "ui-inner"]
    body = get(f"/api/runs/{run.id}")
    caller = next(n for n in body["nodes"] if n["name"] == "call_inner")
    (group,) = caller["runs"]
    assert group["id"] == nested.id and [n["name"] for n in group["nodes"]] == ["double"]
    assert group["layout"]["direction"] == "LR" and len(group["layout"]["nodes"]) == 1
    status = get(f"/api/runs/{run.id}/status")
    assert status["runs"] == {nested.id: {"status": "completed", "nodes": {
        "double": get(f"/api/runs/{nested.id}/status")["nodes"]["double"]}}}
    assert get("/api/runs?pipeline=ui-inner")["runs"][0]["parent"] == caller["task"]


def test_unknown_and_wrong_ids_are_one_line_errors(shared) -> None:
    assert "unknown task 'f00dfeed'" in get("/api/runs/f00dfeed", 404)["error"]
    assert get("/api/tasks/f00dfeed/log", 404)["error"]
    make = steps(shared["run1"])["make"]
    assert "not a pipeline run" in get(f"/api/runs/{make}", 400)["error"]
    assert "not a pipeline run" in get(f"/api/runs/{make}/status", 400)["error"]


def test_a_step_page_resolves_inputs_and_explains_its_cache(shared) -> None:
    tasks = steps(shared["run1"])
    body = get(f"/api/tasks/{tasks['total']}?run={shared['run1']}")
    assert body["run"] == shared["run1"] and body["node"] == "total"
    assert body["inputs"] == [{"name": "data", "reference": f"{tasks['make']}.data",
                               "task": tasks["make"], "artifact": "data", "step": "make"}]
    (artifact,) = body["artifacts"]
    assert artifact["name"] == "sum" and artifact["preview"] == "3"
    assert "def total(data)" in body["code"]
    assert body["cache"] == {"key": None, "cached": False, "source": None,
                             "reason": "caching is off for this step"}
    make = get(f"/api/tasks/{tasks['make']}?run={shared['run1']}")
    assert make["cache"]["key"] and make["cache"]["cached"] is False
    assert make["cache"]["reason"] == "ran: no completed task had this cache key yet"
    assert {(p["section"], p["name"], p["value"]) for p in make["parameters"]} == {
        ("kwargs", "n", "3")}
    assert make["scalars"] == 10 and make["plots"] == 2


def test_a_cached_step_says_where_its_result_came_from(shared) -> None:
    """The rerun with n=4 changed make's input, so make ran; total's input changed too.
    A third run with n=3 again is served from the first run's results.
    """
    proc = pipekit_cmd("rerun", shared["run1"])
    assert proc.returncode == 0, proc.stderr
    run3 = proc.stdout.split()[1]
    try:
        node = next(n for n in get_store().list_nodes(run3) if n.name == "make")
        assert node.status == "cached"
        cache = get(f"/api/tasks/{node.task}?run={run3}")["cache"]
        assert cache["cached"] is True and cache["source"] == steps(shared["run1"])["make"]
        assert "same cache key" in cache["reason"]
    finally:
        shared["run3"] = run3


def test_artifact_downloads_are_the_stored_bytes_and_names_are_data(shared) -> None:
    tasks = steps(shared["run1"])
    body = get(f"/api/tasks/{tasks['make']}")
    artifact = next(a for a in body["artifacts"] if a["name"] == "data")
    response = client().get(artifact["url"])
    assert response.status_code == 200
    assert json.loads(response.content) == [0, 1, 2]
    assert response.headers["content-disposition"].startswith("attachment;")
    for name in ("..%2F..%2Fpipekit.db", "../../pipekit.db", "%2Fetc%2Fpasswd", "nope"):
        assert client().get(f"/api/tasks/{tasks['make']}/artifacts/{name}").status_code == 404


def test_a_corrupt_artifact_is_refused_not_served(shared, tmp_path) -> None:
    """An object whose bytes changed is never sent (its digest is checked first)."""
    store = get_store()
    task = steps(shared["run2"])["make"]
    info = store.get_artifact(task, "big")
    assert info.ref.inline is None  # 100 kB: a blob file
    path = store.blobs.verified_path(info.ref.digest, "big")
    original = path.read_bytes()
    path.chmod(0o600)
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        response = client().get(f"/api/tasks/{task}/artifacts/big")
        assert response.status_code == 500 and "'big'" in response.json()["error"]
        assert "x" * 100 not in response.text
    finally:
        path.write_bytes(original)


def test_models_download_verified(tmp_path) -> None:
    from pipekit import Task

    task = Task.create(project_name="ui", task_name="with-model")
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00weights" * 1000)
    task.upload_model("net", weights)
    (model,) = get(f"/api/tasks/{task.id}")["models"]
    response = client().get(model["url"])
    assert response.status_code == 200 and response.content == weights.read_bytes()
    assert 'filename="weights.bin"' in response.headers["content-disposition"]
    assert get("/api/models/nope", 404)["error"]
    get_store().set_archived(task.id, True)


def test_a_task_outside_pipelines_is_aborted_with_the_token() -> None:
    from pipekit import Task

    task = Task.create(project_name="ui", task_name="to-stop")
    get_store().set_status(task.id, Status.in_progress)
    response = client().post(f"/api/tasks/{task.id}/abort", headers={"x-pipekit-token": TOKEN})
    assert response.status_code == 200 and response.json() == {"id": task.id,
                                                                "status": "stopped"}
    assert get_store().get_task(task.id).status_reason == "aborted from the web UI"
    again = client().post(f"/api/tasks/{task.id}/abort", headers={"x-pipekit-token": TOKEN})
    assert again.status_code == 409 and "already stopped" in again.json()["error"]


def test_scalars_come_as_columns_per_title_and_series(shared) -> None:
    make = steps(shared["run2"])["make"]
    charts = get(f"/api/tasks/{make}/scalars")["charts"]
    assert set(charts) == {"loss"} and set(charts["loss"]) == {"train", "eval"}
    assert charts["loss"]["train"]["x"] == [0, 1, 2, 3, 4]
    assert charts["loss"]["train"]["y"] == pytest.approx([4 / (i + 1) for i in range(5)])


def test_plots_pass_their_records_and_serve_their_images(shared) -> None:
    make = steps(shared["run1"])["make"]
    plots = get(f"/api/tasks/{make}/plots")["plots"]
    kinds = {p["kind"]: p for p in plots}
    assert set(kinds) == {"histogram", "image"}
    assert kinds["histogram"]["title"] == "sizes" and kinds["histogram"]["data"]["data"]
    url = kinds["image"]["image"]
    response = client().get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")
    assert client().get(url[:-4] + "0000").status_code == 404


def test_the_log_is_read_in_pieces_from_an_offset(shared) -> None:
    make = steps(shared["run1"])["make"]
    whole = get(f"/api/tasks/{make}/log")
    assert "making 3 items: héllo" in whole["text"] and whole["final"] is True
    assert whole["offset"] == whole["size"] == len(whole["text"].encode())
    assert get(f"/api/tasks/{make}/log?offset={whole['offset']}")["text"] == ""
    # An offset inside the two bytes of "é" never splits it: the pieces join up again.
    cut = whole["text"].encode().index("é".encode()) + 1
    head = get(f"/api/tasks/{make}/log?offset=0")
    tail = get(f"/api/tasks/{make}/log?offset={cut + 1}")
    assert head["text"] + "" == whole["text"] and tail["text"] in whole["text"]
    assert "offset" in get(f"/api/tasks/{make}/log?offset=-1", 400)["error"]


@pytest.mark.parametrize("raw", [b"", b"ab\xc3", b"\xe2\x82", b"plain", b"\xf0\x9f\x98\x80x"])
def test_a_log_piece_ends_on_a_whole_character(raw: bytes) -> None:
    from pipekit.ui.api import _whole_characters

    cut = _whole_characters(raw)
    raw[:cut].decode("utf-8")  # never raises: the cut is on a boundary
    assert raw[cut:] in (b"", b"\xc3", b"\xe2\x82")


def test_compare_runs_marks_the_parameters_that_differ(shared) -> None:
    body = get(f"/api/compare?runs={shared['run1']},{shared['run2']}")
    assert [i["id"] for i in body["items"]] == [shared["run1"], shared["run2"]]
    rows = {r["name"]: r for r in body["parameters"]}
    assert rows["n"] == {"name": "n", "values": ["3", "4"], "differs": True}
    assert rows["make/kwargs/n"]["differs"] is True
    assert not any(r["differs"] for name, r in rows.items() if not name.endswith("/n")
                   and name != "n" and "kwargs_artifacts" not in name)
    series = body["charts"]["make: loss"]["train"]
    assert [s["item"] for s in series] == [shared["run1"], shared["run2"]]
    assert series[0]["y"][0] == 3.0 and series[1]["y"][0] == 4.0


def test_compare_tasks_and_bad_compares(shared) -> None:
    a, b = steps(shared["run1"])["make"], steps(shared["run2"])["make"]
    body = get(f"/api/compare?tasks={a},{b}")
    assert {r["name"]: r["differs"] for r in body["parameters"]} == {"kwargs/n": True}
    assert "2 to 5" in get(f"/api/compare?runs={a}", 400)["error"]
    assert "2 to 5" in get("/api/compare?runs=" + ",".join([shared["run1"]] * 6),
                           400)["error"]
    assert "one of them" in get(f"/api/compare?runs={a},{b}&tasks={a},{b}", 400)["error"]


def test_the_tasks_list_keeps_standalone_tasks_apart(shared) -> None:
    everything = get("/api/tasks?limit=500")
    assert everything["total"] >= 6 and "ui" in everything["projects"]
    standalone = get("/api/tasks?standalone=1")
    assert standalone["total"] == 0  # every task here belongs to a pipeline
    from pipekit import Task

    task = Task.create(project_name="ui", task_name="lonely")
    try:
        assert [t["id"] for t in get("/api/tasks?standalone=1")["tasks"]] == [task.id]
        assert get(f"/api/tasks/{task.id}")["run"] is None
    finally:
        get_store().set_archived(task.id, True)


# -- guards ------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1:1",
                                  "localhost.evil.example:8765", ""])
def test_a_foreign_host_header_is_refused(shared, host: str) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host."""
    for path in ("/", "/api/runs", f"/api/runs/{shared['run1']}", "/static/app.js"):
        response = client().get(path, headers={"host": host})
        assert response.status_code == 421, (path, host)
        assert shared["run1"] not in response.text
    response = client().post(f"/api/runs/{shared['run1']}/abort",
                             headers={"host": host, "x-pipekit-token": TOKEN})
    assert response.status_code == 421


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "[::1]:8765",
                                  "LOCALHOST:8765"])
def test_loopback_host_headers_are_served(shared, host: str) -> None:
    assert client().get("/api/runs", headers={"host": host}).status_code == 200


def test_every_response_carries_the_security_headers(shared) -> None:
    for path in ("/api/runs", "/api/runs/nope"):
        headers = client().get(path).headers
        assert "default-src 'self'" in headers["content-security-policy"]
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert "access-control-allow-origin" not in headers


@pytest.mark.parametrize("path", ["/api/runs/{run}/abort", "/api/runs/{run}/resume",
                                  "/api/runs/{run}/rerun", "/api/tasks/{run}/abort"])
@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x", TOKEN[:-1]])
def test_a_change_without_the_token_is_refused_and_changes_nothing(
        shared, path: str, token: str | None) -> None:
    before = get("/api/runs")
    headers = {} if token is None else {"x-pipekit-token": token}
    response = client().post(path.format(run=shared["run1"]), headers=headers,
                             json={"params": {"n": "9"}})
    assert response.status_code == 403 and "token" in response.json()["error"]
    assert get("/api/runs") == before


def test_reads_have_no_side_door_for_changes(shared) -> None:
    """Every change is a POST: GET, PUT and DELETE on a change's URL do nothing."""
    for method in ("get", "put", "delete"):
        response = getattr(client(), method)(f"/api/runs/{shared['run1']}/abort",
                                             headers={"x-pipekit-token": TOKEN})
        assert response.status_code == 405
    assert get_store().get_task(shared["run1"]).status == "completed"


def test_changes_refused_by_the_run_state_are_409(shared) -> None:
    headers = {"x-pipekit-token": TOKEN}
    response = client().post(f"/api/runs/{shared['run1']}/abort", headers=headers)
    assert response.status_code == 409 and "already completed" in response.json()["error"]
    response = client().post(f"/api/runs/{shared['run1']}/resume", headers=headers)
    assert response.status_code == 409 and "already ended" in response.json()["error"]


def test_new_run_refuses_bad_parameters_and_queues(shared) -> None:
    headers = {"x-pipekit-token": TOKEN}
    before = len(get_store().find_tasks())
    for body, words in [({"params": {"n": "many"}}, "'many'"),
                        ({"params": {"nope": "1"}}, "'nope'"),
                        ({"params": {"n": 5}}, "as text"),
                        ({"params": ["n"]}, "params must be"),
                        ({"params": {}, "queue": "gpu"}, "'gpu' has no live agent")]:
        response = client().post(f"/api/runs/{shared['run1']}/rerun", headers=headers,
                                 json=body)
        assert response.status_code == 400, (body, response.text)
        assert words in response.json()["error"], (body, response.json())
    response = client().post(f"/api/runs/{shared['run1']}/rerun", headers=headers,
                             content=b"{not json")
    assert response.status_code == 400 and "not JSON" in response.json()["error"]
    assert len(get_store().find_tasks()) == before  # nothing was made


# -- changing, for real ------------------------------------------------------------------------


def test_new_run_clones_with_the_changed_value_and_runs_it(shared, tmp_path) -> None:
    headers = {"x-pipekit-token": TOKEN}
    response = client().post(f"/api/runs/{shared['run1']}/rerun", headers=headers,
                             json={"params": {"n": "6"}, "queue": None})
    assert response.status_code == 200, response.text
    new = response.json()["id"]
    store = get_store()
    wait_until(lambda: store.get_task(new).status in ("completed", "failed", "stopped"), 90,
               "the new run to end")
    assert store.get_task(new).status == "completed", store.get_task(new).status_reason
    assert get(f"/api/runs/{new}")["parameters"] == {"n": "6"}
    total = store.get_artifact(steps(new)["total"], "sum")
    assert total.preview == str(sum(range(6)))
    assert get(f"/api/runs/{new}")["origin"] == shared["run1"]


def test_new_run_on_a_queue_goes_to_its_agent(tmp_path: Path, agents) -> None:
    """With a live agent on a queue, New run may send the run there instead of running it
    here: the agent runs the controller, which runs its steps.
    """
    script = tmp_path / "uiapi.py"
    script.write_text(PIPELINE)
    first = pipekit_cmd("run", str(script), env={**os.environ, "PIPEKIT_PROGRESS": "0"})
    assert first.returncode == 0, first.stderr
    run = first.stdout.split()[1]
    agents("--queue", "ui-q", "--create-queue")
    wait_until(lambda: get("/api/meta")["queues"] and any(
        q["name"] == "ui-q" and q["agents"] for q in get("/api/meta")["queues"]), 30,
        "the agent")
    response = client().post(f"/api/runs/{run}/rerun", headers={"x-pipekit-token": TOKEN},
                             json={"params": {"n": "2"}, "queue": "ui-q"})
    assert response.status_code == 200, response.text
    new = response.json()["id"]
    store = get_store()
    wait_until(lambda: store.get_task(new).status in ("completed", "failed", "stopped"), 90,
               "the queued run to end")
    info = store.get_task(new)
    assert info.status == "completed", info.status_reason
    assert get(f"/api/runs/{new}")["parameters"] == {"n": "2"}
    assert store.get_artifact(steps(new)["total"], "sum").preview == "1"


def test_abort_from_the_api_stops_a_running_run(tmp_path: Path) -> None:
    script = tmp_path / "gated.py"
    script.write_text(PIPELINE)
    gate = tmp_path / "gate"
    env = {**os.environ, "GATE": str(gate), "PIPEKIT_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "pipekit", "run", str(script)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        store = get_store()
        wait_until(lambda: store.list_runs() and any(
            n.name == "wait" and n.status == "in_progress"
            for n in store.list_nodes(store.list_runs()[0].id)), 90, "the gated step to run")
        run = store.list_runs()[0].id
        assert get(f"/api/runs/{run}/status")["nodes"]["wait"]["status"] == "in_progress"
        response = client().post(f"/api/runs/{run}/abort", headers={"x-pipekit-token": TOKEN})
        assert response.status_code == 200 and response.json()["status"] == "stopped"
        proc.wait(timeout=60)  # the controller sees it and stops its step
        status = get(f"/api/runs/{run}/status")
        assert status["status"] == "stopped"
        assert {v["status"] for v in status["nodes"].values()} <= {"completed", "stopped"}
        assert status["nodes"]["wait"]["status"] == "stopped"
    finally:
        gate.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_no_secret_reaches_any_response(monkeypatch: pytest.MonkeyPatch) -> None:
    """RELIABILITY 21 for the UI: crawl every read endpoint of a run whose step printed the
    secret and failed with it in its message.
    """
    token = "tok_" + secrets.token_hex(16)
    monkeypatch.setenv("TOKEN", token)
    monkeypatch.setenv("SECRET_TEST_FAIL", "1")
    script = Path(__file__).resolve().parent / "cli_scripts" / "secret.py"
    proc = subprocess.run([sys.executable, str(script), "inline"], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    (run,) = get_store().list_runs()
    step = steps(run.id)["use"]
    bodies = [client().get(path).text for path in (
        "/api/runs", f"/api/runs/{run.id}", f"/api/runs/{run.id}/status", "/api/tasks",
        f"/api/tasks/{step}", f"/api/tasks/{step}/log", f"/api/tasks/{run.id}/log",
        f"/api/tasks/{step}/scalars", f"/api/tasks/{step}/plots",
        f"/api/tasks/{run.id}", f"/api/compare?tasks={step},{run.id}")]
    assert all(bodies) and not [b for b in bodies if token in b]
    assert "stdout sees ***" in bodies[5] and "rejected token ***" in bodies[4]


# -- the server process -----------------------------------------------------------------------


def start_ui(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "pipekit", "ui", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith("pipekit ui: http://"), (line, proc.stderr.read()
                                                     if proc.stderr else "")
    return proc, line.split()[-1]


def test_the_server_binds_loopback_and_prints_its_url_with_the_token() -> None:
    proc, url = start_ui("--port", "0")
    try:
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url
        port = int(url.split(":")[2].split("/")[0])
        host, _ = url.split("/?token=")
        import httpx

        wait_until(lambda: httpx.get(f"{host}/api/meta").status_code == 200, 30, "the server")
        token = url.split("token=")[1]
        assert httpx.get(f"{host}/api/meta?token={token}").json()["token_ok"] is True
        assert httpx.get(f"{host}/").text.startswith("<!") or httpx.get(f"{host}/").status_code
        # Listening on loopback only: the port is not reachable on another address.
        import psutil

        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections()
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(a.ip == "127.0.0.1" and a.port == port for a in listening)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_a_public_address_needs_allow_remote(host: str) -> None:
    proc = pipekit_cmd("ui", "--host", host, "--port", "0", timeout=30)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(f"Error: --host {host} would serve the UI beyond")
    assert "--allow-remote" in proc.stderr and "Traceback" not in proc.stderr


def test_a_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = pipekit_cmd("ui", "--port", str(port), timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_allow_remote_serves_other_addresses_but_still_checks_host() -> None:
    proc, url = start_ui("--host", "0.0.0.0", "--allow-remote", "--port", "0",
                         "--allow-host", "pipekit.internal")
    try:
        import httpx

        host = url.split("/?token=")[0]
        port = host.rsplit(":", 1)[1]
        wait_until(lambda: httpx.get(f"{host}/api/meta").status_code == 200, 30, "the server")
        named = httpx.get(f"{host}/api/meta", headers={"host": f"pipekit.internal:{port}"})
        assert named.status_code == 200
        evil = httpx.get(f"{host}/api/meta", headers={"host": f"evil.example:{port}"})
        assert evil.status_code == 421
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_static_pages_are_served(shared) -> None:
    static = Path(pipekit.__file__).parent / "ui" / "static"
    if not (static / "index.html").exists():
        pytest.fail("pipekit/ui/static/index.html is missing")
    page = client().get("/")
    assert page.status_code == 200 and "<script" in page.text
    assert client().get("/static/../app.py").status_code == 404
    assert client().get("/static/%2e%2e/app.py").status_code == 404

