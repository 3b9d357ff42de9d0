"""Pipeline versions (SPEC §3 Versioning): dot-separated numbers as ClearML takes them
(``1.0.0``, ``1.2``, ``23``), a new pipeline starts at
``1.0.0``, every run records its structure hash, and ``auto_version_bump=True`` bumps the
version through the ``pipekit_version_bump`` hook when the structure changed.

Step code is identified by its *source*, so the step functions here live in small modules
written under ``tmp_path`` and imported (``inspect.getsource`` must find them); two modules
with the same source are the same code. The third-party bump plugin is a real distribution,
``tests/plugins/pipekit-example-versioner`` (installed editable by ``make test``): it answers
minor + 1. The autouse fixture in ``conftest.py`` loads pipekit's own plugins only, so it is
active only in the tests that ask for it.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pipeline_helpers import assert_cascade

import pipekit
from pipekit import PipelineController, PipelineDecorator
from pipekit.errors import DefinitionError
from pipekit.models import RunRecord
from pipekit.plugin_manager import (
    get_plugin_manager,
    list_plugins,
    make_plugin_manager,
    set_plugin_manager,
)
from pipekit.store import get_store
from pipekit.versioning import FIRST_VERSION

try:
    import pipekit_example_versioner
except ImportError:  # pragma: no cover - an environment problem, reported as such
    pytest.fail("the example versioner plugin is not installed: run `make test`, or `pip "
                "install -e tests/plugins/pipekit-example-versioner`", pytrace=False)

PROJECT = "versioning-tests"
EXAMPLE = "example_versioner"  # the example plugin's entry-point name
EXAMPLE_DIST = "pipekit-example-versioner"
HASH = re.compile(r"[0-9a-f]{64}")

_modules = itertools.count()


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``load(source)``: ``source`` written to a new module file under ``tmp_path`` and
    imported (each call a new file, so ``inspect.getsource`` never sees a stale cache).
    """

    def load_module(source: str) -> ModuleType:
        name = f"versioning_steps_{next(_modules)}"
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load_module



# -- PipelineController -----------------------------------------------------------------------

STEPS = """
def load(n):
    return list(range(n))


def total(data):
    return sum(data)


def report():
    return "done"
"""

# ``total`` with another body (and nothing else changed).
STEPS_CHANGED = STEPS.replace("return sum(data)", "return sum(data) * 1")


def build(steps: ModuleType, *, default: int = 3, report_parent: str = "load",
          extra: bool = False, auto: bool = True, version: str | None = None,
          name: str = "versioned") -> PipelineController:
    """load -> total, and ``report`` after ``report_parent``; ``extra`` adds a step."""
    pipe = PipelineController(name, PROJECT, version=version, auto_version_bump=auto)
    pipe.add_parameter("n", default)
    pipe.add_function_step("load", steps.load, function_kwargs={"n": "${pipeline.n}"},
                           function_return=["data"])
    pipe.add_function_step("total", steps.total, function_kwargs={"data": "${load.data}"},
                           function_return=["sum"])
    pipe.add_function_step("report", steps.report, parents=[report_parent])
    if extra:
        pipe.add_function_step("again", steps.total, function_kwargs={"data": "${load.data}"})
    return pipe


def run(pipe: PipelineController) -> RunRecord:
    """Run ``pipe`` (steps on threads); returns its run record (``store.get_run``)."""
    pipe.start_locally(run_pipeline_steps_locally=True, executor="thread")
    assert pipe.id is not None and pipe.is_successful()
    assert_cascade(pipe.id, pipe)
    return get_store().get_run(pipe.id)


def versions_of(name: str) -> dict[str, int]:
    """``{version: number of runs}`` of pipeline ``name`` (``pipekit pipelines ls``)."""
    return {p.version: p.runs for p in get_store().list_pipelines(PROJECT)
            if p.name == name}


def test_a_new_pipeline_starts_at_1_0_0_and_records_its_structure_hash(load):
    steps = load(STEPS)
    record = run(build(steps))

    assert record.version == FIRST_VERSION == "1.0.0"
    assert HASH.fullmatch(record.structure_hash)
    assert get_store().latest_pipeline_version(PROJECT, "versioned") == (
        "1.0.0", record.structure_hash)
    assert versions_of("versioned") == {"1.0.0": 1}


def test_an_unchanged_pipeline_keeps_its_version(load):
    steps = load(STEPS)
    first = run(build(steps))
    again = run(build(steps))
    # A fresh module with the same source is the same code: the same pipeline.
    third = run(build(load(STEPS)))

    assert [first.version, again.version, third.version] == ["1.0.0"] * 3
    assert first.structure_hash == again.structure_hash == third.structure_hash
    assert versions_of("versioned") == {"1.0.0": 3}


CHANGES = {
    "function source": dict(steps=STEPS_CHANGED),
    "added step": dict(extra=True),
    "changed parent": dict(report_parent="total"),
    "parameter default": dict(default=4),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_structure_bumps_the_patch_with_auto_version_bump(load, change):
    options = dict(CHANGES[change])
    source = options.pop("steps", STEPS)
    base = run(build(load(STEPS)))
    changed = run(build(load(source), **options))
    changed_again = run(build(load(source), **options))

    assert base.version == "1.0.0"
    assert changed.structure_hash != base.structure_hash
    assert changed.version == "1.0.1"
    assert changed_again.structure_hash == changed.structure_hash
    assert changed_again.version == "1.0.1"  # compared with the newest version: unchanged
    assert versions_of("versioned") == {"1.0.0": 1, "1.0.1": 2}


def test_each_further_change_bumps_the_patch_again(load):
    records = [
        run(build(load(STEPS))),
        run(build(load(STEPS_CHANGED))),
        run(build(load(STEPS_CHANGED), extra=True)),
        run(build(load(STEPS_CHANGED), extra=True, report_parent="total")),
        run(build(load(STEPS_CHANGED), extra=True, report_parent="total", default=9)),
    ]

    assert [r.version for r in records] == ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4"]
    assert len({r.structure_hash for r in records}) == len(records)
    assert get_store().latest_pipeline_version(PROJECT, "versioned") == (
        "1.0.4", records[-1].structure_hash)
    # Each version is recorded with the hash of the run that created it.
    recorded = {p.version: p.structure_hash for p in get_store().list_pipelines(PROJECT)}
    assert recorded == {r.version: r.structure_hash for r in records}


def test_pipelines_are_versioned_apart_by_name(load):
    steps = load(STEPS)
    run(build(steps))
    run(build(steps, default=4))
    other = run(build(steps, default=4, name="other"))

    assert other.version == "1.0.0"
    assert versions_of("versioned") == {"1.0.0": 1, "1.0.1": 1}


def test_without_auto_version_bump_the_version_stays_but_the_hash_is_recorded(load):
    base = run(build(load(STEPS), auto=False))
    changed = run(build(load(STEPS_CHANGED), auto=False))
    added = run(build(load(STEPS_CHANGED), extra=True, auto=False))

    assert [base.version, changed.version, added.version] == ["1.0.0"] * 3
    hashes = [base.structure_hash, changed.structure_hash, added.structure_hash]
    assert all(HASH.fullmatch(h) for h in hashes) and len(set(hashes)) == 3
    assert versions_of("versioned") == {"1.0.0": 3}
    # 1.0.0 keeps the hash of the run that created it: turning the bump on now compares with
    # that one, so the first structure is still 1.0.0 and a changed one is 1.0.1.
    assert run(build(load(STEPS))).version == "1.0.0"
    assert run(build(load(STEPS_CHANGED))).version == "1.0.1"


def test_an_explicit_version_is_used_as_given(load):
    steps = load(STEPS)
    run(build(steps))
    explicit = run(build(steps, default=4, version="2.5.0"))  # changed, but told
    same = run(build(load(STEPS), version="0.1.0"))  # unchanged, but told

    assert explicit.version == "2.5.0"
    assert same.version == "0.1.0"
    assert HASH.fullmatch(explicit.structure_hash)
    assert set(versions_of("versioned")) == {"1.0.0", "2.5.0", "0.1.0"}
    # The bump continues from the newest version recorded.
    assert run(build(steps, default=7)).version == "0.1.1"


@pytest.mark.parametrize("version", ["abc", "1..2", "-1", "1.", ".1", "v1.0.0", "1.0.0-rc1",
                                     "1.0.0.post1", "1,0", "١.2", 100])
def test_a_malformed_version_is_a_definition_error_when_the_controller_is_made(version):
    with pytest.raises(DefinitionError, match="numbers separated by dots") as info:
        PipelineController("versioned", PROJECT, version=version)
    assert repr(version) in str(info.value)
    assert get_store().list_runs() == []


# ClearML's own examples of versions (automation/controller.py, PipelineController.__init__'s
# docstring: "version='1.0.1' , version='23', version='1.2'"), and its bump rule
# (utilities/version.py, Version.get_next_version: the last release number + 1).
CLEARML_VERSIONS = [("1.2", "1.3"), ("23", "24"), ("1.0.1", "1.0.2"), ("1.1", "1.2"),
                    ("0.1", "0.2"), ("2024.01.9", "2024.1.10")]


@pytest.mark.parametrize(("given", "bumped"), CLEARML_VERSIONS)
def test_clearml_versions_are_accepted_and_bumped_on_their_last_number(load, given, bumped):
    steps = load(STEPS)
    pipe = build(steps, version=given)
    assert pipe.version == given  # ClearML's PipelineController.version, before the run
    first = run(pipe)
    assert first.version == pipe.version == given
    again = build(steps)
    assert again.version is None  # not given: chosen when the run starts
    assert run(again).version == again.version == given  # unchanged: the newest version
    changed = build(load(STEPS_CHANGED))
    assert run(changed).version == changed.version == bumped
    assert set(versions_of("versioned")) == {given, bumped}


@pytest.mark.parametrize(("version", "stored"), [(" 1.2 ", "1.2"), ("", None), (None, None)])
def test_a_version_is_stripped_and_a_blank_one_is_not_set(version, stored):
    """As ClearML: ``str(version).strip() if version else None``."""
    assert PipelineController("versioned", PROJECT, version=version).version == stored


def test_the_version_property_is_the_version_of_the_run(load):
    steps = load(STEPS)
    pipe = build(steps)
    assert pipe.version is None
    assert run(pipe).version == pipe.version == "1.0.0"
    bumped = build(steps, default=9)
    assert run(bumped).version == bumped.version == "1.0.1"


# -- PipelineDecorator: the version is settled when the run ends -------------------------------

DECORATED = """
from pipekit import PipelineDecorator
from pipekit.store import get_store

#: the run record as seen from inside the pipeline function, while the run is going
SEEN = []


@PipelineDecorator.component(return_values=["data"])
def load(n):
    return list(range(n))


@PipelineDecorator.component(return_values=["sum"])
def total(data):
    return sum(data)


@PipelineDecorator.pipeline(name="decorated", project="versioning-tests",
                            auto_version_bump=True)
def pipeline(n=3):
    SEEN.append(get_store().get_run(PipelineDecorator.get_current_pipeline().id))
    return int(total(load(n)))
"""

DECORATED_CHANGES = {
    "component source": ("return sum(data)", "return sum(data) + 0"),
    "added component": ("return int(total(load(n)))",
                        "total(load(n + 1))\n    return int(total(load(n)))"),
    "parameter default": ("def pipeline(n=3)", "def pipeline(n=4)"),
}


def run_decorated(module: ModuleType, **kwargs: Any) -> RunRecord:
    PipelineDecorator.run_locally(executor="thread")
    assert module.pipeline(**kwargs) == sum(range(kwargs.get("n", 3)))
    runs = [r for r in get_store().list_runs(project=PROJECT) if r.name == "decorated"]
    assert runs[0].status == "completed"
    assert_cascade(runs[0].id)
    return get_store().get_run(runs[0].id)


@pytest.mark.parametrize("change", list(DECORATED_CHANGES))
def test_a_decorated_pipeline_is_versioned_when_its_run_ends(load, change):
    old, new = DECORATED_CHANGES[change]
    assert old in DECORATED
    base = run_decorated(load(DECORATED), n=3)
    unchanged = run_decorated(load(DECORATED), n=5)  # another value, the same default
    changed_module = load(DECORATED.replace(old, new))
    changed = run_decorated(changed_module, n=3)

    assert [base.version, unchanged.version] == ["1.0.0", "1.0.0"]
    assert base.structure_hash == unchanged.structure_hash
    assert HASH.fullmatch(base.structure_hash)
    assert changed.structure_hash != base.structure_hash
    assert changed.version == "1.0.1"
    # While the run went on its structure was not known yet: no hash, the newest version.
    assert [(r.version, r.structure_hash) for r in changed_module.SEEN] == [
        ("1.0.0", None)]
    assert versions_of("decorated") == {"1.0.0": 2, "1.0.1": 1}


def test_a_decorated_pipeline_without_auto_version_bump_keeps_its_version(load):
    source = DECORATED.replace("auto_version_bump=True", "auto_version_bump=False")
    base = run_decorated(load(source))
    changed = run_decorated(load(source.replace("return sum(data)", "return sum(data) + 0")))

    assert [base.version, changed.version] == ["1.0.0", "1.0.0"]
    assert base.structure_hash != changed.structure_hash
    assert all(HASH.fullmatch(r.structure_hash) for r in (base, changed))


def test_a_decorated_pipeline_with_an_explicit_version_uses_it(load):
    run_decorated(load(DECORATED))
    source = DECORATED.replace("auto_version_bump=True", "auto_version_bump=True, "
                               "version='3.1.4'")
    module = load(source.replace("def pipeline(n=3)", "def pipeline(n=4)"))
    record = run_decorated(module, n=3)

    assert record.version == "3.1.4"
    assert module.SEEN[0].version == "3.1.4"  # known from the start
    assert versions_of("decorated") == {"1.0.0": 1, "3.1.4": 1}


def test_a_malformed_decorated_pipeline_version_is_a_definition_error_when_decorated(load):
    source = DECORATED.replace("auto_version_bump=True", "version='1..0'")
    try:
        load(source)
    except DefinitionError as exc:
        assert "'1..0'" in str(exc) and "numbers separated by dots" in str(exc)
    else:
        raise AssertionError("@PipelineDecorator.pipeline(version='1..0') was accepted")
    assert get_store().list_runs() == []


@pytest.mark.parametrize(("given", "bumped"), [("1.1", "1.2"), ("23", "24")])
def test_a_decorated_pipeline_takes_clearml_versions_and_bumps_them(load, given, bumped):
    source = DECORATED.replace("auto_version_bump=True",
                               f"auto_version_bump=True, version={given!r}")
    assert run_decorated(load(source)).version == given
    changed = DECORATED.replace("return sum(data)", "return sum(data) + 0")
    assert run_decorated(load(changed)).version == bumped
    assert versions_of("decorated") == {given: 1, bumped: 1}


# -- a third-party bump plugin ------------------------------------------------------------------


def use_plugins(*dists: str, blocked: tuple[str, ...] = ()) -> None:
    """This test's plugin manager: pipekit's own plugins plus those of ``dists``."""
    set_plugin_manager(make_plugin_manager(dists={"pipekit", *dists}, blocked=blocked))


def test_the_example_plugin_is_installed_but_not_loaded_by_the_test_manager():
    everything = {p.name: p for p in list_plugins(make_plugin_manager())}
    assert everything[EXAMPLE].dist == EXAMPLE_DIST
    assert everything[EXAMPLE].hooks == ("pipekit_version_bump",)
    assert everything[EXAMPLE].module == pipekit_example_versioner.__name__
    assert not get_plugin_manager().has_plugin(EXAMPLE)  # conftest: pipekit's own only


def test_a_third_party_bump_plugin_takes_over_from_the_built_in(load):
    use_plugins(EXAMPLE_DIST)
    # Both implement the hook; the built-in is trylast, so the plugin is asked first.
    impls = [i.plugin_name for i in get_plugin_manager().hook.pipekit_version_bump
             .get_hookimpls()]
    assert set(impls) == {"autoversion", EXAMPLE} and impls[0] == "autoversion"

    records = [
        run(build(load(STEPS))),
        run(build(load(STEPS_CHANGED))),
        run(build(load(STEPS_CHANGED))),
        run(build(load(STEPS_CHANGED), extra=True)),
    ]

    assert [r.version for r in records] == ["1.0.0", "1.1.0", "1.1.0", "1.2.0"]
    assert versions_of("versioned") == {"1.0.0": 1, "1.1.0": 2, "1.2.0": 1}


def test_a_third_party_bump_plugin_versions_a_decorated_pipeline_too(load):
    use_plugins(EXAMPLE_DIST)
    base = run_decorated(load(DECORATED))
    changed = run_decorated(load(DECORATED.replace("def pipeline(n=3)", "def pipeline(n=4)")),
                            n=3)

    assert [base.version, changed.version] == ["1.0.0", "1.1.0"]


@pytest.mark.parametrize("how", ["blocked", "PIPEKIT_DISABLE_PLUGINS", "PIPEKIT_PLUGINS"])
def test_with_the_plugin_switched_off_the_built_in_bumps_the_patch(load, monkeypatch, how):
    if how == "blocked":
        set_plugin_manager(make_plugin_manager(blocked=[EXAMPLE]))  # every other installed one
    else:  # as a user would: the process-wide manager, built from the environment
        monkeypatch.setenv(how, EXAMPLE if how == "PIPEKIT_DISABLE_PLUGINS" else "")
        set_plugin_manager(None)
    assert get_plugin_manager().has_plugin("autoversion")
    assert not get_plugin_manager().has_plugin(EXAMPLE)

    versions = [run(build(load(STEPS))).version,
                run(build(load(STEPS_CHANGED))).version]

    assert versions == ["1.0.0", "1.0.1"]


def test_with_no_bump_plugin_a_changed_pipeline_keeps_its_version_and_says_why(load, caplog):
    set_plugin_manager(make_plugin_manager(dists={"pipekit"}, blocked=["autoversion"]))
    base = run(build(load(STEPS)))
    with caplog.at_level("WARNING", logger="pipekit.versioning"):
        changed = run(build(load(STEPS_CHANGED)))

    assert [base.version, changed.version] == ["1.0.0", "1.0.0"]
    assert "no plugin bumped its version" in caplog.text and "autoversion" in caplog.text


class Sloppy:
    """A bump plugin answering a version that is not numbers separated by dots."""

    @staticmethod
    @pipekit.hookimpl
    def pipekit_version_bump(old_version: str) -> str:
        return "2.0-beta"


def test_a_plugin_returning_a_malformed_version_fails_the_run_start(load):
    get_plugin_manager().register(Sloppy, name="sloppy")
    run(build(load(STEPS)))
    pipe = build(load(STEPS_CHANGED))

    with pytest.raises(DefinitionError, match=r"pipekit_version_bump hook.*'2.0-beta'"):
        pipe.start_locally(run_pipeline_steps_locally=True, executor="thread")
    assert versions_of("versioned") == {"1.0.0": 1}


def test_a_run_whose_version_cannot_be_chosen_leaves_nothing_behind(load):
    get_plugin_manager().register(Sloppy, name="sloppy")
    run(build(load(STEPS)))
    streams = (sys.stdout, sys.stderr)
    pipe = build(load(STEPS_CHANGED))

    with pytest.raises(DefinitionError):
        pipe.start_locally(run_pipeline_steps_locally=True, executor="thread")
    leaked = (sys.stdout, sys.stderr) != streams
    sys.stdout, sys.stderr = streams  # (so that a failure here does not spoil later tests)
    controllers = [(t.name, t.status) for t in get_store().find_tasks(type=["controller"])]
    assert controllers == [("versioned", "completed")], f"left behind: {controllers}"
    assert not leaked, "stdout/stderr are still copied into a task log"
