"""``pipekit/hookspecs.py`` is the plugin author's reference: every spec is documented."""

from __future__ import annotations

import inspect

import pytest

from pipekit import hookspecs
from pipekit.plugin_manager import get_plugin_manager

SPECS = sorted(name for name, obj in vars(hookspecs).items()
               if inspect.isfunction(obj) and name.startswith("pipekit_"))


def _spec_options(name: str) -> dict:
    options = getattr(getattr(hookspecs, name), f"{hookspecs.PROJECT}_spec", None)
    assert options is not None, f"{name} is named like a hook but is not marked @hookspec"
    return options


def test_there_are_hookspecs():
    assert {"pipekit_serializers", "pipekit_executors", "pipekit_register_commands"} <= \
        set(SPECS)


@pytest.mark.parametrize("name", SPECS)
def test_every_spec_is_marked_and_registered(name):
    _spec_options(name)
    assert getattr(get_plugin_manager().hook, name).spec is not None


@pytest.mark.parametrize("name", SPECS)
def test_every_spec_documents_each_argument(name):
    fn = getattr(hookspecs, name)
    doc = inspect.getdoc(fn) or ""
    assert doc.strip(), f"{name} has no docstring"
    for param in inspect.signature(fn).parameters:
        assert f":param {param}:" in doc, f"{name} does not document {param!r}"
    documented = {line.split(":param ", 1)[1].split(":", 1)[0]
                  for line in doc.splitlines() if ":param " in line}
    assert documented <= set(inspect.signature(fn).parameters), \
        f"{name} documents arguments it does not take"


@pytest.mark.parametrize("name", [n for n in SPECS if _spec_options(n).get("firstresult")])
def test_firstresult_specs_say_so(name):
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert "Stops at first non-None result" in doc
    assert ":returns:" in doc
