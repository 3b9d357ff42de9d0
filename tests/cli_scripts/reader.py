"""A reader for RELIABILITY 2 (tests/test_readers.py): loops ``pipekit runs ls --json`` and
``pipekit runs show RUN --json`` (in-process, through click), or with argv[2] ``ui`` the web
UI's ``/api/runs`` and ``/api/runs/RUN`` (through the real app), until the file ``stop``
appears in the folder given as argv[1]; writes ``reads N`` and every error or inconsistency
seen to ``<folder>/reader.<pid>.txt``.

A run read as final must have no open node and no open step: a reader never sees a run half
way through being ended.
"""

import json
import os
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from pipekit.cli import cli

FINAL = {"completed", "failed", "stopped"}
OPEN = {"pending", "in_progress", "queued", "created"}


class Ui:
    """``runs ls --json`` / ``runs show --json`` answered by the UI's JSON API instead."""

    def __init__(self) -> None:
        from starlette.testclient import TestClient

        from pipekit.ui.app import create_app, local_hosts

        self.client = TestClient(create_app(token="t", hosts=local_hosts(80), version="x"),
                                 base_url="http://127.0.0.1")

    def invoke(self, _cli, args):
        path = "/api/runs?limit=500" if args[:2] == ["runs", "ls"] else f"/api/runs/{args[2]}"
        response = self.client.get(path)
        body = response.json()
        ok = response.status_code == 200
        stdout = json.dumps(body["runs"] if "runs" in body else body) if ok else ""
        return Result(0 if ok else response.status_code, stdout, body.get("error", ""))


class Result:
    def __init__(self, exit_code, stdout, stderr):
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr


def main() -> None:
    folder = Path(sys.argv[1])
    runner = Ui() if sys.argv[2:] == ["ui"] else CliRunner()
    reads, problems = 0, []
    deadline = time.monotonic() + 600
    while not (folder / "stop").exists() and time.monotonic() < deadline:
        listed = runner.invoke(cli, ["runs", "ls", "--json"])
        if listed.exit_code != 0:
            problems.append(f"runs ls: {listed.exit_code} {listed.stderr.strip()}")
            continue
        reads += 1
        for run in json.loads(listed.stdout):
            shown = runner.invoke(cli, ["runs", "show", run["id"], "--json"])
            if shown.exit_code != 0:
                problems.append(f"runs show: {shown.exit_code} {shown.stderr.strip()}")
                continue
            reads += 1
            view = json.loads(shown.stdout)
            if view["status"] in FINAL:
                still = [n["name"] for n in view["nodes"] if n["status"] in OPEN]
                if still:
                    problems.append(f"run {run['id']} {view['status']} with open {still}")
    (folder / f"reader.{os.getpid()}.txt").write_text(
        f"reads {reads}\n" + "".join(p + "\n" for p in problems))


if __name__ == "__main__":
    main()
