from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# -- the config file, and RELIABILITY 24: only ConfigError escapes its loader -----------------


def test_the_config_file_is_read_below_the_environment_and_python(tmp_path, monkeypatch):
    from pipekit.config import get_settings, lease_ttl, start_timeout
    from pipekit.definition import default_max_workers

    config = tmp_path / "config.toml"
    config.write_text(f'home = "{tmp_path / "from-file"}"\nlease_ttl = 12\n'
                      'start_timeout = 7.5\nmax_workers = 3\n')
    monkeypatch.setenv("PIPEKIT_CONFIG", str(config))
    for env in ("PIPEKIT_HOME", "PIPEKIT_LEASE_TTL", "PIPEKIT_START_TIMEOUT",
                "PIPEKIT_MAX_WORKERS"):
        monkeypatch.delenv(env, raising=False)
    assert get_settings().home == tmp_path / "from-file"
    assert (lease_ttl(), start_timeout(), default_max_workers()) == (12.0, 7.5, 3)
    monkeypatch.setenv("PIPEKIT_LEASE_TTL", "5")  # the environment wins
    assert lease_ttl() == 5.0
    pipekit.configure(lease_ttl=2)  # and Python wins over both
    assert lease_ttl() == 2.0
    config.write_text("lease_ttl = 30\n")  # a changed file is read again
    monkeypatch.delenv("PIPEKIT_LEASE_TTL")
    assert lease_ttl() == 30.0


@pytest.mark.parametrize(("text", "message"), [
    ("lease_ttl = ", "not valid TOML"),
    ("lease_tl = 5", "unknown setting 'lease_tl'"),
    ('lease_ttl = "soon"', "lease_ttl = 'soon' is not a int or float"),
    ("max_workers = 2.5", "max_workers = 2.5 is not a int"),
    ("max_workers = true", "max_workers = True is not a int"),
    ("home = 3", "home = 3 is not a str"),
])
def test_a_bad_config_file_names_the_file_and_the_setting(tmp_path, monkeypatch, text,
                                                          message):
    from pipekit.config import ConfigError, lease_ttl

    config = tmp_path / "config.toml"
    config.write_text(text)
    monkeypatch.setenv("PIPEKIT_CONFIG", str(config))
    monkeypatch.delenv("PIPEKIT_LEASE_TTL", raising=False)
    with pytest.raises(ConfigError) as raised:
        lease_ttl()
    assert str(raised.value).startswith(f"config file {config}: ")
    assert message in str(raised.value)


def test_a_bad_config_file_is_one_line_from_the_cli(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "config.toml"
    config.write_text("lease_ttl = -1\nnope = 1\n")
    proc = subprocess.run([str(Path(sys.executable).with_name("pipekit")), "agents", "ls"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PIPEKIT_CONFIG=str(config)))
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"Error: config file {config}: unknown setting 'nope' "
                                   "(known: home, db, artifacts, lease_ttl, start_timeout, "
                                   "max_workers, dask_address, dask_tls_ca, dask_tls_cert, "
                                   "dask_tls_key)")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.builds(
    lambda k, v: f"{k} = {v}\n",
    st.sampled_from(["home", "db", "lease_ttl", "start_timeout", "max_workers", "x"]),
    st.sampled_from(['"a"', "1", "-1", "0", "1.5", "nan", "inf", "true", "[1]", "{a=1}",
                     '"""x', "1979-05-27", "0x10", "1e999"])))
def test_fuzzed_config_files_raise_only_config_error(text):
    from pipekit.config import ConfigError, parse_config

    try:
        parse_config(text, "fuzz")
    except ConfigError:
        pass
