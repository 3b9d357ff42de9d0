"""`make demo` runs docs/examples/demo.py: it must complete on a fresh store."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

from pipekit.store import get_store


def test_demo_pipeline_completes_and_says_where_to_look(pipekit_home):
    proc = subprocess.run([sys.executable, str(ROOT / "docs/examples/demo.py")],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "best model: degree" in proc.stdout
    assert f"export PIPEKIT_HOME={pipekit_home}" in proc.stdout
    store = get_store()
    [run] = store.find_tasks(type=["controller"])
    assert run.status == "completed" and run.name == "polyfit"
    nodes = store.list_nodes(run.id)
    assert [n.name for n in nodes] == ["load", "split", "fit_degree_1", "fit_degree_3",
                                          "fit_degree_7", "pick_best"]
    assert {n.status for n in nodes} == {"completed"}
    # the live view printed each step's progress (plain lines: stdout is not a terminal)
    assert "pick_best                completed" in proc.stdout
