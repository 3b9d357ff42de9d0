from __future__ import annotations

import pytest

import pipekit
from pipekit.config import get_settings
from pipekit.errors import ConfigError


def test_configure_sets_home_and_default_db(tmp_path):
    settings = pipekit.configure(home=tmp_path / "h")
    assert settings.home == (tmp_path / "h").resolve()
    assert settings.db_url == f"sqlite:///{(tmp_path / 'h' / 'pipekit.db').resolve()}"
    assert get_settings() == settings
    assert not (tmp_path / "h").exists()  # nothing is created until first use


def test_a_relative_home_follows_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("PIPEKIT_HOME", "store")
    monkeypatch.chdir(tmp_path / "a")
    assert get_settings().home == (tmp_path / "a" / "store").resolve()
    monkeypatch.chdir(tmp_path / "b")
    assert get_settings().home == (tmp_path / "b" / "store").resolve()


def test_db_url_override_and_bad_url(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPEKIT_DB", f"sqlite:///{tmp_path / 'other.db'}")
    assert get_settings().sqlite_path == tmp_path / "other.db"
    monkeypatch.setenv("PIPEKIT_DB", "mysql://nope")
    with pytest.raises(ConfigError, match="PIPEKIT_DB='mysql://nope'"):
        get_settings()
