"""Step caching (SPEC §3 Caching, RELIABILITY 16).

The end-to-end tests run the same pipeline script in separate processes and count, with
side-effect files, which steps really executed.
"""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline_helpers import assert_cascade, node_statuses, run_locally

import pipekit
from pipekit import PipelineController, PipelineDecorator
from pipekit.caching import CacheKeyError, cache_key, hook_parts
from pipekit.plugin_manager import get_plugin_manager
from pipekit.store import get_store

# -- the same pipeline in separate processes ------------------------------------------------

SCRIPT = '''
import os, sys
from pipekit import PipelineController, PipelineDecorator

def _count(name):
    with open(os.path.join(os.environ["COUNTER_DIR"], name), "a") as fh:
        fh.write("x")

def helper(x):
    return x + {helper_delta}

def step_a(n):
    _count("a")
    return n * 2

def step_b(a):
    _count("b")
    return helper(a)

def step_c(b, k):
    _count("c")
    return b * k + {c_delta}

def step_d(a):
    _count("d")
    return a - 1

if __name__ == "__main__":
    pipe = PipelineController("cached", "caching-tests")
    pipe.add_parameter("n", int(sys.argv[1]))
    pipe.add_parameter("k", int(sys.argv[2]))
    pipe.add_function_step("a", step_a, function_kwargs={{"n": "${{pipeline.n}}"}},
                           function_return=["a"], cache_executed_step=True)
    pipe.add_function_step("b", step_b, function_kwargs={{"a": "${{a.a}}"}},
                           function_return=["b"], cache_executed_step=True,
                           helper_functions=[helper])
    pipe.add_function_step("c", step_c, function_kwargs={{"b": "${{b.b}}", "k": "${{pipeline.k}}"}},
                           function_return=["c"], cache_executed_step=True)
    pipe.add_function_step("d", step_d, function_kwargs={{"a": "${{a.a}}"}},
                           function_return=["d"], cache_executed_step=True)
    pipe.start_locally(run_pipeline_steps_locally=True, executor="{executor}")
    print("RESULT", pipe.id, pipe.is_successful())
'''


class Scripted:
    """Writes the pipeline with chosen sources and runs it in a fresh interpreter."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.counters = tmp_path / "counters"
        self.counters.mkdir()

    def run(self, n: int = 3, k: int = 2, *, helper_delta: int = 1, c_delta: int = 0,
            executor: str = "thread", env: dict[str, str] | None = None
            ) -> tuple[str, set[str]]:
        """Run once; returns the run id and the steps that executed."""
        for counter in self.counters.iterdir():
            counter.unlink()
        script = self.dir / "pipeline.py"
        script.write_text(SCRIPT.format(helper_delta=helper_delta, c_delta=c_delta,
                                        executor=executor))
        full_env = {**os.environ, "COUNTER_DIR": str(self.counters), **(env or {})}
        proc = subprocess.run([sys.executable, str(script), str(n), str(k)], env=full_env,
                              capture_output=True, text=True, timeout=120, cwd=self.dir)
        assert proc.returncode == 0, proc.stderr
        line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
        _, run_id, ok = line.split()
        assert ok == "True", proc.stdout + proc.stderr
        return run_id, {counter.name for counter in self.counters.iterdir()}


@pytest.fixture
def scripted(tmp_path: Path) -> Scripted:
    return Scripted(tmp_path)


def test_second_process_runs_nothing_and_succeeds(scripted: Scripted) -> None:
    first, ran = scripted.run()
    assert ran == {"a", "b", "c", "d"}
    second, ran = scripted.run()
    assert ran == set()
    assert node_statuses(second) == {"a": "cached", "b": "cached", "c": "cached",
                                     "d": "cached"}
    assert get_store().get_task(second).status == "completed"
    # the cached nodes point at the first run's tasks: their outputs are plugged in
    first_tasks = {n.name: n.task for n in get_store().list_nodes(first)}
    assert {n.name: n.task for n in get_store().list_nodes(second)} == first_tasks
    assert_cascade(second)


def test_subprocess_steps_are_cached_too(scripted: Scripted) -> None:
    scripted.run(executor="subprocess")
    _, ran = scripted.run(executor="subprocess")
    assert ran == set()


@pytest.mark.parametrize(("change", "expected"), [
    ({"k": 5}, {"c"}),                      # a parameter only c reads
    ({"n": 4}, {"a", "b", "c", "d"}),       # the root's input: everything downstream
    ({"c_delta": 7}, {"c"}),                # one step's source
    ({"helper_delta": 2}, {"b", "c"}),      # a helper's source: its step and descendants
])
def test_a_change_reruns_exactly_the_affected_steps(scripted: Scripted, change: dict[str, int],
                                                   expected: set[str]) -> None:
    scripted.run()
    _, ran = scripted.run(**change)
    assert ran == expected


def test_same_output_upstream_keeps_children_cached(scripted: Scripted) -> None:
    """Keys see input digests, not task ids: a re-run step returning the same bytes does
    not invalidate its children.
    """
    scripted.run()
    # b's helper changes its source but not its result for this input (x + 1 == x + 1)
    _, ran = scripted.run(helper_delta=1, env={"PIPEKIT_NO_CACHE": "1"})
    assert ran == {"a", "b", "c", "d"}  # refresh: everything runs, results identical
    _, ran = scripted.run()
    assert ran == set()


def test_no_cache_forces_a_rerun_that_then_serves(scripted: Scripted) -> None:
    scripted.run()
    refreshed, ran = scripted.run(env={"PIPEKIT_NO_CACHE": "1"})
    assert ran == {"a", "b", "c", "d"}
    assert set(node_statuses(refreshed).values()) == {"completed"}
    third, ran = scripted.run()
    assert ran == set()
    # the refreshed run's tasks are the newest results
    assert {n.task for n in get_store().list_nodes(third)} == \
        {n.task for n in get_store().list_nodes(refreshed)}


# -- in-process pipelines ------------------------------------------------------------------

CALLS: list[str] = []


def flaky(x: int, marker: str) -> int:
    CALLS.append("flaky")
    if not Path(marker).exists():
        raise RuntimeError("not yet")
    return x + 1


def plain(x: int) -> int:
    CALLS.append("plain")
    return x * 10


def _pipe(marker: Path, *, cache: bool = True, post: Any = None) -> PipelineController:
    pipe = PipelineController("inproc", "caching-tests")
    pipe.add_function_step("flaky", flaky, function_kwargs={"x": 1, "marker": str(marker)},
                           function_return=["y"], cache_executed_step=cache,
                           post_execute_callback=post)
    return pipe


def test_failed_step_never_populates_the_cache(tmp_path: Path) -> None:
    CALLS.clear()
    marker = tmp_path / "ready"
    pipe = _pipe(marker)
    run_locally(pipe)
    assert not pipe.is_successful()
    assert get_store().cache_entries() == []
    marker.touch()
    pipe = _pipe(marker)
    run_locally(pipe)
    assert pipe.is_successful() and CALLS == ["flaky", "flaky"]
    pipe = _pipe(marker)
    run_locally(pipe)
    assert CALLS == ["flaky", "flaky"]
    assert node_statuses(pipe.id) == {"flaky": "cached"}


def test_cached_step_counts_as_success_and_runs_post_callbacks(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    marker.touch()
    first = _pipe(marker)
    run_locally(first)
    seen: list[tuple[str, Any]] = []
    second = _pipe(marker, post=lambda pipeline, node: seen.append((node.status, node.executed)))
    run_locally(second)
    assert second.is_successful()
    produced = get_store().list_nodes(first.id)[0].task
    assert seen == [("cached", produced)]
    assert second.get_pipeline_dag()["flaky"].executed == produced


def test_uncached_steps_do_not_reuse(tmp_path: Path) -> None:
    CALLS.clear()
    marker = tmp_path / "ready"
    marker.touch()
    for _ in range(2):
        run_locally(_pipe(marker, cache=False))
    assert CALLS == ["flaky", "flaky"]


def test_archived_results_are_not_reused(tmp_path: Path) -> None:
    CALLS.clear()
    marker = tmp_path / "ready"
    marker.touch()
    first = _pipe(marker)
    run_locally(first)
    get_store().set_archived(get_store().list_nodes(first.id)[0].task, True)
    second = _pipe(marker)
    run_locally(second)
    assert CALLS == ["flaky", "flaky"]
    assert node_statuses(second.id) == {"flaky": "completed"}


def big(x: int) -> list[int]:
    CALLS.append("big")
    return list(range(x))


def test_a_result_whose_object_is_gone_is_not_reused() -> None:
    CALLS.clear()

    def pipe() -> PipelineController:
        p = PipelineController("big", "caching-tests")
        p.add_function_step("big", big, function_kwargs={"x": 50_000}, function_return=["r"],
                            cache_executed_step=True)
        return p

    first = pipe()
    run_locally(first)
    store = get_store()
    produced = store.list_nodes(first.id)[0].task
    [artifact] = store.list_artifacts(produced)
    assert artifact.ref.inline is None
    store.blobs.path(artifact.ref.digest).unlink()
    second = pipe()
    run_locally(second)
    assert CALLS == ["big", "big"]
    assert node_statuses(second.id) == {"big": "completed"}


def odd_keys(d: dict) -> int:
    CALLS.append("odd")
    return len(d)


def test_an_input_without_canonical_form_disables_caching_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    CALLS.clear()
    for _ in range(2):
        pipe = PipelineController("odd", "caching-tests")
        pipe.add_function_step("odd", odd_keys, function_kwargs={"d": {1: "a", "b": 2}},
                               function_return=["n"], cache_executed_step=True)
        run_locally(pipe)
        assert pipe.is_successful()
    assert CALLS == ["odd", "odd"]
    assert any("runs uncached" in r.getMessage() and "'odd'" in r.getMessage()
               for r in caplog.records)


class DataVersion:
    version = "v1"

    @pipekit.hookimpl
    def pipekit_cache_key(self, node: Any) -> list[str]:
        return [f"data={self.version}"]


def test_plugin_key_parts_change_the_key(tmp_path: Path) -> None:
    CALLS.clear()
    plugin = DataVersion()
    get_plugin_manager().register(plugin, name="data-version")
    marker = tmp_path / "ready"
    marker.touch()
    run_locally(_pipe(marker))
    run_locally(_pipe(marker))
    assert CALLS == ["flaky"]
    plugin.version = "v2"
    run_locally(_pipe(marker))
    assert CALLS == ["flaky", "flaky"]


def test_cache_lookup_plugin_answers_first(tmp_path: Path) -> None:
    """A plugin's ``pipekit_cache_lookup`` (a shared remote cache, say) beats the built-in."""
    marker = tmp_path / "ready"
    marker.touch()
    first = _pipe(marker, cache=False)
    run_locally(first)
    produced = get_store().list_nodes(first.id)[0].task
    asked: list[str] = []

    class Remote:
        @pipekit.hookimpl
        def pipekit_cache_lookup(self, key: str, node: Any) -> str:
            asked.append(key)
            return produced

    get_plugin_manager().register(Remote(), name="remote-cache")
    second = _pipe(marker)
    run_locally(second)
    assert len(asked) == 1 and len(asked[0]) == 64
    assert node_statuses(second.id) == {"flaky": "cached"}


# -- the key itself (RELIABILITY 16) ---------------------------------------------------------

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(string.ascii_letters, max_size=5), inner, max_size=3),
    max_leaves=8)
names = st.text(string.ascii_letters + "/_", min_size=1, max_size=8)
digests = st.text("0123456789abcdef", min_size=64, max_size=64)
parts = st.fixed_dictionaries({
    "code": digests, "entry_point": names,
    "parameters": st.dictionaries(names, values, max_size=4),
    "inputs": st.dictionaries(names, digests, max_size=3),
    "configuration": st.dictionaries(names, values, max_size=2),
    "returns": st.lists(names, max_size=3, unique=True),
    "extra": st.lists(st.text(max_size=6), max_size=3),
    "version": st.none() | st.text(max_size=6),
})


@settings(max_examples=150, deadline=None)
@given(parts, st.randoms(use_true_random=False))
def test_key_ignores_dict_and_extra_order(p: dict[str, Any], rnd: Any) -> None:
    def shuffled(d: dict[str, Any]) -> dict[str, Any]:
        items = list(d.items())
        rnd.shuffle(items)
        return {k: shuffled(v) if isinstance(v, dict) else v for k, v in items}

    other = {**p, "parameters": shuffled(p["parameters"]), "inputs": shuffled(p["inputs"]),
             "configuration": shuffled(p["configuration"]),
             "extra": rnd.sample(p["extra"], len(p["extra"]))}
    assert cache_key(**p) == cache_key(**other)


@settings(max_examples=150, deadline=None)
@given(parts, st.sampled_from(["code", "entry_point", "parameters", "inputs",
                               "configuration", "returns", "extra", "version"]), st.data())
def test_key_changes_with_every_part(p: dict[str, Any], which: str, data: Any) -> None:
    changed = data.draw(parts)[which]
    if which == "extra":
        same = sorted(changed) == sorted(p["extra"])
    elif which == "version":
        same = changed == p["version"]
    else:
        same = json.dumps(changed, sort_keys=True) == json.dumps(p[which], sort_keys=True)
    if same:
        return
    assert cache_key(**p) != cache_key(**{**p, which: changed})


@settings(max_examples=100, deadline=None)
@given(parts, names, values, values)
def test_key_changes_with_any_single_parameter_value(p: dict[str, Any], name: str, a: Any,
                                                     b: Any) -> None:
    if json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True):
        return
    assert cache_key(**{**p, "parameters": {**p["parameters"], name: a}}) != \
        cache_key(**{**p, "parameters": {**p["parameters"], name: b}})


KEY_IN_CHILD = textwrap.dedent('''
    import json, sys
    from pipekit.caching import cache_key
    p = json.loads(sys.argv[1])
    p["parameters"]["kwargs/tags"] = set(p["parameters"]["kwargs/tags"])
    print(cache_key(**p))
''')


def test_key_is_the_same_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    p = {"code": "ab" * 32, "entry_point": "train", "returns": ["model"], "extra": ["x", "y"],
         "parameters": {"kwargs/lr": 0.1, "kwargs/layers": [3, 2], "kwargs/opts": {"b": 1,
                        "a": None}, "kwargs/tags": ["red", "green", "blue", "cyan"]},
         "inputs": {"kwargs/data": "cd" * 32}, "configuration": {"cfg": "text"}}
    script = tmp_path / "key.py"
    script.write_text(KEY_IN_CHILD)
    keys = set()
    for seed in ("0", "1", "12345", "random"):
        out = subprocess.run([sys.executable, str(script), json.dumps(p)], text=True,
                             capture_output=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        keys.add(out.stdout.strip())
    local = {**p, "parameters": {**p["parameters"],
                                 "kwargs/tags": set(p["parameters"]["kwargs/tags"])}}
    assert keys == {cache_key(**local)}


def test_key_refuses_values_without_canonical_form() -> None:
    with pytest.raises(CacheKeyError, match="cannot be hashed"):
        cache_key(code="c", entry_point="e", parameters={"d": {1: "a", "b": 2}}, inputs={})
    with pytest.raises(CacheKeyError):
        cache_key(code="c", entry_point="e", parameters={"o": object()}, inputs={})


def test_hook_parts_flatten() -> None:
    assert hook_parts([None, "a", ["b", "c"], ("d",)]) == ["a", "b", "c", "d"]


@PipelineDecorator.component(return_values=["doubled"], cache=True)
def doubled(x: int) -> int:
    CALLS.append("doubled")
    return 2 * x


@PipelineDecorator.component(return_values=["total"], cache=True)
def summed(a: int, b: int) -> int:
    CALLS.append("summed")
    return a + b


@PipelineDecorator.pipeline(name="decorated-cache", project="caching-tests")
def decorated(x: int = 1) -> int:
    return summed(doubled(x), doubled(x + 1))


def test_decorator_components_with_cache_are_reused() -> None:
    CALLS.clear()
    PipelineDecorator.run_locally(executor="thread")
    assert decorated(x=1) == 6
    assert decorated(x=1) == 6
    assert sorted(CALLS) == ["doubled", "doubled", "summed"]
    assert decorated(x=2) == 10  # doubled(2) and doubled(3): one of them is cached
    assert sorted(CALLS) == ["doubled", "doubled", "doubled", "summed", "summed"]
    runs = get_store().list_runs(name="decorated-cache")
    assert [set(node_statuses(r.id).values()) for r in runs][1] == {"cached"}


def test_docs_example_is_cached_the_second_time(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "docs" / "examples" / "caching.py"
    outputs = [subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                              check=True, cwd=tmp_path, timeout=120).stdout.strip()
               for _ in range(2)]
    assert outputs == ["{'load': 'completed', 'total': 'completed'}",
                       "{'load': 'cached', 'total': 'cached'}"]


def test_a_declared_cache_version_is_part_of_the_key(tmp_path, monkeypatch):
    """RELIABILITY 16: ``cache_version=`` on a step or component: the same version reuses
    the cached result, a new one runs the step again; a key without one is unchanged."""
    from pipekit import PipelineController, PipelineDecorator

    calls = tmp_path / "calls"
    monkeypatch.setenv("CACHE_VERSION_CALLS", str(calls))

    def run(version):
        pipe = PipelineController(name="versioned", project="cache-version", version="1.0.0")
        pipe.add_function_step("count", count_call, cache_executed_step=True,
                               cache_version=version, function_return=["n"])
        pipe.start_locally(run_pipeline_steps_locally=True, executor="thread")

    run("1")
    run("1")
    assert calls.read_text() == "x"  # the second run was served from the cache
    run("2")
    assert calls.read_text() == "xx"
    run(None)
    assert calls.read_text() == "xxx"

    @PipelineDecorator.component(cache=True, cache_version="a", return_values=["n"])
    def counted():
        return count_call()

    @PipelineDecorator.pipeline(name="versioned-decorated", project="cache-version",
                                version="1.0.0")
    def pipeline():
        return counted()

    PipelineDecorator.run_locally(executor="thread")
    pipeline()
    pipeline()
    assert calls.read_text() == "xxxx"
    assert cache_key(code="c", entry_point="e", parameters={}, inputs={}) == \
        cache_key(code="c", entry_point="e", parameters={}, inputs={}, version=None)


def count_call():
    import os

    with open(os.environ["CACHE_VERSION_CALLS"], "a") as fh:
        fh.write("x")
    return 1

