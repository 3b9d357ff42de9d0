"""Plugins: discovery through entry points, switching them off, registries that refuse
conflicts, and observers that cannot break the core. That the core never imports a plugin
is checked with the other import rules, in test_architecture.py.

The third-party plugin used here is a real distribution, ``tests/plugins/
pipekit-example-serializer`` (installed editable by ``make test``): it stores ``Point(x, y)``
as ``"x,y"`` text through a serializer named ``example.point``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pluggy
import pytest

import pipekit
from pipekit import Task, plugin_manager
from pipekit.artifacts import Serializer, serializers
from pipekit.errors import PluginError, SerializationError
from pipekit.plugin_manager import (
    get_plugin_manager,
    list_plugins,
    make_plugin_manager,
    notify,
    set_plugin_manager,
)

try:
    from pipekit_example_serializer import Point
except ImportError:  # pragma: no cover - an environment problem, reported as such
    pytest.fail("the example plugin is not installed: run `make test`, or `pip install -e "
                "tests/plugins/pipekit-example-serializer`", pytrace=False)

ROOT = Path(__file__).resolve().parent.parent
PIPEKIT = str(Path(sys.executable).with_name("pipekit"))
EXAMPLE = "example_serializer"  # its entry-point name
EXAMPLE_DIST = "pipekit-example-serializer"


def pk(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([PIPEKIT, *args], capture_output=True, text=True, env=full_env,
                          timeout=60)


@pytest.fixture
def draft(tmp_path: Path) -> Task:
    script = tmp_path / "script.py"
    script.write_text("print('hi')\n")
    return Task.create(project_name="proj", task_name="draft", script=str(script))


@pytest.fixture
def with_installed_plugins() -> pluggy.PluginManager:
    """Use a manager built as an end user's would be: every installed distribution."""
    pm = make_plugin_manager()
    set_plugin_manager(pm)
    return pm


# -- discovery ------------------------------------------------------------------------------------


def test_a_default_manager_loads_the_installed_third_party_plugin():
    pm = make_plugin_manager()
    assert pm.has_plugin("serializers") and pm.has_plugin(EXAMPLE)
    info = {p.name: p for p in list_plugins(pm)}
    example = info[EXAMPLE]
    assert example.dist == EXAMPLE_DIST
    assert example.version == metadata.version(EXAMPLE_DIST) == "0.3.1"
    assert example.module == "pipekit_example_serializer"
    assert example.hooks == ("pipekit_serializers",)
    assert info["serializers"].dist == "pipekit"
    dists = [p.dist for p in list_plugins(pm)]
    assert dists == sorted(dists, key=lambda d: d != "pipekit")  # the core is listed first


def test_the_test_manager_is_isolated_from_installed_plugins():
    pm = get_plugin_manager()  # built by the autouse fixture with dists={"pipekit"}
    assert pm.has_plugin("serializers") and not pm.has_plugin(EXAMPLE)
    assert "example.point" not in [s.name for s in serializers()]


def test_pipekit_plugins_lists_it_with_dist_version_and_hooks():
    proc = pk("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = {p["name"]: p for p in json.loads(proc.stdout)}
    assert listed[EXAMPLE] == {"name": EXAMPLE, "dist": EXAMPLE_DIST, "version": "0.3.1",
                               "module": "pipekit_example_serializer",
                               "hooks": ["pipekit_serializers"]}
    assert listed["serializers"]["dist"] == "pipekit"


def test_its_serializer_stores_and_loads_a_point(draft, with_installed_plugins):
    assert draft.upload_artifact("pt", Point(1.5, -2))
    art = draft.artifacts["pt"]
    assert art.type == "example.point"
    assert art.value_type == "pipekit_example_serializer.Point"
    assert art.preview == "Point(1.5, -2)"
    assert art.get() == Point(1.5, -2.0)
    local = Path(art.get_local_copy())
    assert local.name == "pt.txt" and local.read_text() == "1.5,-2"
    # Plain values still go to the built-ins.
    draft.upload_artifact("plain", {"a": 1})
    assert draft.artifacts["plain"].type == "json"


def test_without_the_plugin_a_point_is_pickled_and_its_objects_cannot_be_read(draft):
    draft.upload_artifact("pickled", Point(1, 2))
    assert draft.artifacts["pickled"].type == "pickle"
    assert draft.artifacts["pickled"].get() == Point(1, 2)
    set_plugin_manager(make_plugin_manager())
    draft.upload_artifact("pt", Point(3, 4))
    set_plugin_manager(make_plugin_manager(dists={"pipekit"}))
    with pytest.raises(SerializationError, match="'example.point'.*install the plugin"):
        draft.artifacts["pt"].get()


# -- switching plugins off ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [EXAMPLE, f" other , {EXAMPLE} ,"])
def test_pipekit_disable_plugins_excludes_it(monkeypatch, value):
    monkeypatch.setenv("PIPEKIT_DISABLE_PLUGINS", value)
    set_plugin_manager(None)
    pm = get_plugin_manager()
    assert pm.has_plugin("serializers")
    assert not pm.has_plugin(EXAMPLE) and pm.is_blocked(EXAMPLE)


def test_pipekit_disable_plugins_in_the_cli():
    proc = pk("plugins", "--json", env={"PIPEKIT_DISABLE_PLUGINS": EXAMPLE})
    assert proc.returncode == 0, proc.stderr
    names = [p["name"] for p in json.loads(proc.stdout)]
    assert "serializers" in names and EXAMPLE not in names


@pytest.mark.parametrize(("only", "loaded"), [(EXAMPLE, True), ("something_else", False),
                                               ("", False)])
def test_pipekit_plugins_allows_only_the_named_third_party_plugins(monkeypatch, only, loaded):
    monkeypatch.setenv("PIPEKIT_PLUGINS", only)
    set_plugin_manager(None)
    pm = get_plugin_manager()
    assert pm.has_plugin("serializers")  # the core always loads
    assert pm.has_plugin(EXAMPLE) is loaded


def test_disabling_a_core_plugin_is_an_error():
    with pytest.raises(PluginError, match="core") as info:
        make_plugin_manager(blocked=["serializers", EXAMPLE])
    assert info.value.plugin == "serializers"


def test_disabling_a_core_plugin_is_a_one_line_cli_error():
    proc = pk("plugins", env={"PIPEKIT_DISABLE_PLUGINS": "serializers"})
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("Error: plugin 'serializers' is part of pipekit's core")
    assert "PIPEKIT_DISABLE_PLUGINS" in proc.stderr and "Traceback" not in proc.stderr


# -- registries refuse conflicts and bad registrations --------------------------------------------


class _Copycat(Serializer):
    name = "example.point"

    def accepts(self, value: object) -> bool:
        return False


class _CopycatPlugin:
    @pipekit.hookimpl
    def pipekit_serializers(self, register):
        register(_Copycat())


def test_two_plugins_registering_one_serializer_name_is_an_error_naming_both(
        draft, with_installed_plugins):
    with_installed_plugins.register(_CopycatPlugin(), name="copycat")
    set_plugin_manager(with_installed_plugins)  # registries rebuild
    with pytest.raises(PluginError) as info:
        serializers()
    message = str(info.value)
    assert "'example.point'" in message and EXAMPLE in message and "copycat" in message
    with pytest.raises(PluginError, match="copycat"):
        draft.upload_artifact("pt", Point(0, 0))


def test_registering_something_that_is_not_a_serializer_names_the_plugin():
    class Sloppy:
        @pipekit.hookimpl
        def pipekit_serializers(self, register):
            register(object())

    pm = make_plugin_manager(dists={"pipekit"})
    pm.register(Sloppy(), name="sloppy")
    set_plugin_manager(pm)
    with pytest.raises(PluginError, match="'sloppy'.*not a named"):
        serializers()


def _fake_entry_point(monkeypatch, tmp_path: Path, name: str, source: str) -> None:
    """Make ``make_plugin_manager`` see one more entry point: module ``name`` with
    ``source``, as an installed distribution would provide it."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    extra = metadata.EntryPoint(name=name, value=name, group=plugin_manager.GROUP)
    real = metadata.entry_points

    def entry_points(**kwargs):
        return [*real(**kwargs), extra]

    monkeypatch.setattr(plugin_manager, "metadata",
                        SimpleNamespace(entry_points=entry_points))


MISSPELLED = """
    import pipekit

    @pipekit.hookimpl
    def pipekit_serialisers(register):
        pass
"""


def test_a_misspelled_hookimpl_fails_loudly(monkeypatch, tmp_path):
    _fake_entry_point(monkeypatch, tmp_path, "pk_misspelled", MISSPELLED)
    with pytest.raises(PluginError, match="unknown hook 'pipekit_serialisers'") as info:
        make_plugin_manager()
    assert isinstance(info.value.__cause__, pluggy.PluginValidationError)
    assert "pk_misspelled" in str(info.value)


def test_a_misspelled_hookimpl_is_a_one_line_cli_error(monkeypatch, tmp_path, capsys):
    from pipekit.cli import main

    _fake_entry_point(monkeypatch, tmp_path, "pk_misspelled", MISSPELLED)
    set_plugin_manager(None)  # the CLI builds the manager from the environment
    with pytest.raises(SystemExit) as info:
        main(["plugins"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1
    assert "pipekit_serialisers" in err


def test_a_hookimpl_with_an_unknown_argument_is_a_plugin_error(monkeypatch, tmp_path):
    _fake_entry_point(monkeypatch, tmp_path, "pk_bad_argument", """
        import pipekit

        @pipekit.hookimpl
        def pipekit_serializers(registr):
            pass
    """)
    with pytest.raises(PluginError) as info:
        make_plugin_manager()
    message = str(info.value)
    assert "'pk_bad_argument'" in message and "registr" in message and "\n" not in message
    assert info.value.plugin == "pk_bad_argument"


def test_a_plugin_that_fails_to_import_is_a_plugin_error(monkeypatch, tmp_path):
    _fake_entry_point(monkeypatch, tmp_path, "pk_broken", "raise ImportError('no numpy')\n")
    with pytest.raises(PluginError, match="'pk_broken'.*failed to import.*no numpy"):
        make_plugin_manager()


# -- observers cannot break the core --------------------------------------------------------------


class _Raiser:
    @pipekit.hookimpl
    def pipekit_artifact_uploaded(self, task, artifact):
        raise RuntimeError("observer bug")

    @pipekit.hookimpl
    def pipekit_model_uploaded(self, model):
        raise RuntimeError("observer bug")


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    @pipekit.hookimpl
    def pipekit_artifact_uploaded(self, artifact):
        self.calls.append(("artifact", artifact.name))

    @pipekit.hookimpl
    def pipekit_model_uploaded(self, task, model):
        self.calls.append(("model", model.name))


def test_observer_exceptions_are_logged_not_raised(draft, caplog):
    pm = make_plugin_manager(dists={"pipekit"})
    recorder = _Recorder()
    pm.register(_Raiser(), name="raiser")
    pm.register(recorder, name="recorder")
    set_plugin_manager(pm)
    with caplog.at_level(logging.ERROR, logger="pipekit.plugins"):
        assert draft.upload_artifact("data", [1, 2]) is True
        draft.upload_model("net", {"w": 1})
    assert draft.artifacts["data"].get() == [1, 2]
    assert recorder.calls == [("artifact", "data"), ("model", "net")]  # the rest carry on
    failures = [r for r in caplog.records if r.name == "pipekit.plugins"]
    assert [r.getMessage() for r in failures] == [
        "plugin 'raiser' failed in pipekit_artifact_uploaded; continuing",
        "plugin 'raiser' failed in pipekit_model_uploaded; continuing",
    ]
    assert all(r.exc_info and "observer bug" in str(r.exc_info[1]) for r in failures)


def test_notify_passes_each_plugin_only_the_arguments_it_names():
    pm = make_plugin_manager(dists={"pipekit"})
    recorder = _Recorder()
    pm.register(recorder, name="recorder")
    set_plugin_manager(pm)
    notify("pipekit_artifact_uploaded", task=None, artifact=SimpleNamespace(name="x"))
    assert recorder.calls == [("artifact", "x")]


# -- built-ins are entry points -------------------------------------------------------------------


def test_every_builtin_plugin_module_is_an_entry_point():
    """Built-ins are registered exactly like third-party plugins: one entry point each."""
    declared = {ep.value for ep in metadata.entry_points(group="pipekit")
                if ep.dist is not None and ep.dist.name == "pipekit"}
    modules = {"pipekit_plugins." + ".".join(p.relative_to(ROOT / "plugins").with_suffix("").parts)
               for p in (ROOT / "plugins").rglob("*.py") if p.stem != "__init__"}
    assert modules and modules == declared


def test_a_serializer_plugin_that_raises_is_named(monkeypatch):
    class Broken:
        @pipekit.hookimpl
        def pipekit_serializers(self, register):
            raise RuntimeError("cannot import my backend")

    pm = make_plugin_manager(dists={"pipekit"})
    pm.register(Broken(), name="broken")
    set_plugin_manager(pm)
    with pytest.raises(PluginError, match="'broken' failed in pipekit_serializers.*backend"):
        serializers()


def test_a_command_plugin_that_raises_is_a_one_line_cli_error(monkeypatch, tmp_path, capsys):
    from pipekit.cli import main

    _fake_entry_point(monkeypatch, tmp_path, "pk_bad_commands", """
        import pipekit

        @pipekit.hookimpl
        def pipekit_register_commands(cli):
            raise RuntimeError("boom in commands")
    """)
    set_plugin_manager(None)
    with pytest.raises(SystemExit) as info:
        main(["plugins"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1
    assert "'pk_bad_commands'" in err and "boom in commands" in err


def test_no_builtin_plugin_adds_a_command_so_help_imports_none():
    """What lets `pipekit --help` skip importing pipekit's own plugins."""
    pm = make_plugin_manager(dists={"pipekit"})
    assert pm.hook.pipekit_register_commands.get_hookimpls() == []
    code = textwrap.dedent("""
        import sys
        from importlib import metadata
        import pipekit.plugin_manager as pm
        real = metadata.entry_points
        pm.metadata.entry_points = lambda **kw: [  # as with no third-party plugin installed
            ep for ep in real(**kw) if ep.dist is not None and ep.dist.name == "pipekit"]
        from pipekit.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        print(sorted(m for m in sys.modules if m.startswith("pipekit_plugins.")))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Commands:" in proc.stdout and proc.stdout.strip().endswith("[]"), proc.stdout


# -- wrappers and registries ------------------------------------------------------------------


class _Wrapper:
    @pipekit.hookimpl(wrapper=True)
    def pipekit_pipeline_started(self, run):
        return (yield)


class _OldWrapper:
    @pipekit.hookimpl(hookwrapper=True)
    def pipekit_step_created(self, node, task, run):
        yield


@pytest.mark.parametrize("plugin", [_Wrapper(), _OldWrapper()], ids=["wrapper", "hookwrapper"])
def test_a_wrapper_implementation_is_refused_naming_the_plugin(plugin):
    pm = make_plugin_manager(dists={"pipekit"})
    with pytest.raises(PluginError, match=r"plugin 'wrapping' implements pipekit_\w+ as a "
                                          r"wrapper, which pipekit does not support") as info:
        pm.register(plugin, name="wrapping")
    assert info.value.plugin == "wrapping"
    assert "\n" not in str(info.value)
    assert not pm.has_plugin("wrapping")  # nothing half-registered is left behind


class _Third(Serializer):
    name = "test.third"
    priority = 50

    def accepts(self, value):
        return isinstance(value, complex)

    def dump(self, value, fp):
        fp.write(repr(value).encode())

    def load(self, fp):
        return complex(fp.read().decode())


class _ThirdPlugin:
    @pipekit.hookimpl
    def pipekit_serializers(self, register):
        register(_Third())


def test_registering_or_unregistering_a_plugin_refreshes_the_registries(draft):
    assert "test.third" not in [s.name for s in serializers()]  # gathered once, here
    plugin = _ThirdPlugin()
    get_plugin_manager().register(plugin, name="third")
    assert [s.name for s in serializers()][0] == "test.third"
    draft.upload_artifact("z", 1 + 2j)
    assert draft.artifacts["z"].get() == 1 + 2j
    get_plugin_manager().unregister(plugin)
    assert "test.third" not in [s.name for s in serializers()]
