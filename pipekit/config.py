"""Where the store lives and how pipekit behaves: settings from Python, the environment and
a config file, in that order of precedence.

* Python: :func:`configure` (it writes the environment, which is how step subprocesses and
  agents inherit it);
* the environment: ``PIPEKIT_HOME``, ``PIPEKIT_DB``, ``PIPEKIT_ARTIFACTS``,
  ``PIPEKIT_LEASE_TTL``, ``PIPEKIT_START_TIMEOUT``, ``PIPEKIT_MAX_WORKERS``, and the dask
  executor's ``PIPEKIT_DASK_ADDRESS``, ``PIPEKIT_DASK_TLS_CA``, ``PIPEKIT_DASK_TLS_CERT``,
  ``PIPEKIT_DASK_TLS_KEY``;
* a TOML file, ``PIPEKIT_CONFIG`` or else ``config.toml`` in the user's config folder
  (``~/.config/pipekit/`` on Linux), with the same settings as keys: ``home``, ``db``,
  ``artifacts``, ``lease_ttl``, ``start_timeout``, ``max_workers``, ``dask_address``,
  ``dask_tls_ca``, ``dask_tls_cert``, ``dask_tls_key``. A bad file is a
  :class:`ConfigError` naming the file and the key; an unknown key too (a typo must not
  pass silently).

Settings are read when asked for, never at import, so a test or a subprocess that changes
the environment sees its own store; the file is read again only when it changes.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import tomllib

from .errors import ConfigError

HOME_ENV = "PIPEKIT_HOME"
DB_ENV = "PIPEKIT_DB"
#: where artifact objects live: a folder (default ``PIPEKIT_HOME/artifacts``) or an fsspec URL
ARTIFACTS_ENV = "PIPEKIT_ARTIFACTS"
TASK_ENV = "PIPEKIT_TASK_ID"
DEFAULT_HOME = "~/.pipekit"
#: ``1``: every cached step of the runs this process starts runs again (``--no-cache``)
NO_CACHE_ENV = "PIPEKIT_NO_CACHE"
#: ``debug`` or ``local``: how ``pipekit run`` asks a script's pipelines to execute
MODE_ENV = "PIPEKIT_MODE"
#: seconds a claimed task's lease lasts without a heartbeat (the holder beats every ttl/3)
LEASE_TTL_ENV = "PIPEKIT_LEASE_TTL"
#: seconds a queued step waits for a live agent on its queue before it fails
START_TIMEOUT_ENV = "PIPEKIT_START_TIMEOUT"
#: ``<worker>#<attempt>``: the lease under which this process executes ``PIPEKIT_TASK_ID``
LEASE_ENV = "PIPEKIT_LEASE"
#: the owner a controller heartbeats its run as, when ``pipekit resume`` took the run for it
OWNER_ENV = "PIPEKIT_RUN_OWNER"
#: tests only: the point at which a run's controller is SIGKILLed (:mod:`pipekit.crash`)
CRASH_ENV = "PIPEKIT_TEST_CRASH_AT"
#: set for a local step's process: the pid of the controller that started it
CONTROLLER_PID_ENV = "PIPEKIT_CONTROLLER_PID"
#: the config file's path (default: ``config.toml`` in the user's config folder)
CONFIG_ENV = "PIPEKIT_CONFIG"
MAX_WORKERS_ENV = "PIPEKIT_MAX_WORKERS"
#: set for a script task's process: the file its uncaught exception is described in, for the
#: worker (:mod:`pipekit.script_main`)
CAUSE_ENV = "PIPEKIT_CAUSE_FILE"
#: the dask executor's scheduler (``tls://host:8786``); unset: a loopback LocalCluster
DASK_ADDRESS_ENV = "PIPEKIT_DASK_ADDRESS"
#: the dask executor's TLS files: the CA that signed the cluster's certificates, and the
#: client's own certificate and key
DASK_TLS_CA_ENV = "PIPEKIT_DASK_TLS_CA"
DASK_TLS_CERT_ENV = "PIPEKIT_DASK_TLS_CERT"
DASK_TLS_KEY_ENV = "PIPEKIT_DASK_TLS_KEY"
DEFAULT_LEASE_TTL = 60.0
DEFAULT_START_TIMEOUT = 300.0

#: the config file's keys: the environment variable each stands for, and its TOML types
FILE_KEYS: dict[str, tuple[str, tuple[type, ...]]] = {
    "home": (HOME_ENV, (str,)),
    "db": (DB_ENV, (str,)),
    "artifacts": (ARTIFACTS_ENV, (str,)),
    "lease_ttl": (LEASE_TTL_ENV, (int, float)),
    "start_timeout": (START_TIMEOUT_ENV, (int, float)),
    "max_workers": (MAX_WORKERS_ENV, (int,)),
    "dask_address": (DASK_ADDRESS_ENV, (str,)),
    "dask_tls_ca": (DASK_TLS_CA_ENV, (str,)),
    "dask_tls_cert": (DASK_TLS_CERT_ENV, (str,)),
    "dask_tls_key": (DASK_TLS_KEY_ENV, (str,)),
}


def config_path() -> Path:
    """The config file: ``PIPEKIT_CONFIG``, else ``config.toml`` in the user config folder."""
    env = os.environ
    return _config_path(env.get(CONFIG_ENV), env.get("XDG_CONFIG_HOME"), env.get("HOME"))


@functools.lru_cache(maxsize=8)
def _config_path(raw: str | None, xdg: str | None, home: str | None) -> Path:
    # Cached by what it depends on: platformdirs costs ~10 µs, and every store access asks.
    if raw:
        return Path(raw).expanduser()
    # lazy: platformdirs is needed only when no PIPEKIT_CONFIG says where the file is
    import platformdirs

    return platformdirs.user_config_path("pipekit") / "config.toml"


def parse_config(text: str, source: str = "config") -> dict[str, Any]:
    """The settings a config file's ``text`` holds, checked.

    :raises ConfigError: not TOML, an unknown key, or a value of the wrong type (naming
        ``source`` and the key).
    """
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeError, ValueError) as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    for key, value in data.items():
        if key not in FILE_KEYS:
            raise ConfigError(f"{source}: unknown setting {key!r} (known: "
                              f"{', '.join(FILE_KEYS)})")
        types = FILE_KEYS[key][1]
        if not isinstance(value, types) or isinstance(value, bool):
            wanted = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{source}: {key} = {value!r} is not a {wanted}")
    return data


def file_settings() -> dict[str, Any]:
    """The config file's settings (none when there is no file)."""
    path = config_path()
    try:
        stat = path.stat()
    except OSError:
        return {}
    return _read_config(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read_config(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    # Cached by the file's identity: a changed file is read again.
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"config file {path}: cannot be read: {exc}") from None
    return parse_config(text, f"config file {path}")


def setting(env: str) -> str | None:
    """The raw text of a setting: its environment variable, else its config file key."""
    raw = os.environ.get(env)
    if raw:
        return raw
    for key, (name, _) in FILE_KEYS.items():
        if name == env:
            value = file_settings().get(key)
            return None if value is None else str(value)
    return None


@attrs.frozen
class Settings:
    """Resolved locations of one store."""

    home: Path
    db_url: str
    #: the fsspec URL objects live under (``s3://…``), or ``None``: they are files in
    #: :attr:`artifacts_dir`
    artifacts_url: str | None = None
    #: the objects' folder when they are local files (default ``PIPEKIT_HOME/artifacts``)
    artifacts_path: Path | None = None

    @property
    def artifacts_dir(self) -> Path:
        """The folder of object files: the objects themselves, or with an
        :attr:`artifacts_url` the local cache of verified copies.
        """
        if self.artifacts_url is not None:
            return self.home / "cache" / "artifacts"
        return self.artifacts_path or self.home / "artifacts"

    @property
    def artifacts_setting(self) -> str | None:
        """``PIPEKIT_ARTIFACTS`` as it was given, resolved (``None``: the default folder)."""
        if self.artifacts_url is not None:
            return self.artifacts_url
        return None if self.artifacts_path is None else str(self.artifacts_path)

    @property
    def shared(self) -> bool:
        """Machines share this store through a database server: logs are copied into it
        (:meth:`pipekit.store.Store.ship_log`) so that every machine can read them.
        """
        return self.sqlite_path is None

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def quarantine_dir(self) -> Path:
        """Where ``pipekit db check --repair`` moves objects that fail verification."""
        return self.home / "quarantine"

    @property
    def sqlite_path(self) -> Path | None:
        """The database file when the store is SQLite, else ``None``."""
        if self.db_url.startswith("sqlite:///"):
            return Path(self.db_url[len("sqlite:///"):])
        return None


def redact_url(url: str) -> str:
    """A database URL as it may be shown: its password, if any, replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def get_settings() -> Settings:
    """Where the store is (``PIPEKIT_HOME``, ``PIPEKIT_DB``, ``PIPEKIT_ARTIFACTS``, or the
    config file's).
    """
    # Every store access asks: the environment first, the config file (one stat) only for
    # what the environment leaves unset.
    env = os.environ
    raw_home, raw_db, raw_artifacts = env.get(HOME_ENV), env.get(DB_ENV), env.get(ARTIFACTS_ENV)
    if not (raw_home and raw_db and raw_artifacts):
        file = file_settings()
        raw_home = raw_home or _text(file.get("home"))
        raw_db = raw_db or _text(file.get("db"))
        raw_artifacts = raw_artifacts or _text(file.get("artifacts"))
    raw_home = raw_home or DEFAULT_HOME
    relative = not _absolute(raw_home) or (
        raw_artifacts is not None and "://" not in raw_artifacts
        and not _absolute(raw_artifacts))
    return _settings_for(raw_home, raw_db, raw_artifacts, os.getcwd() if relative else None)


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


@functools.lru_cache(maxsize=32)
def _absolute(raw: str) -> bool:
    return os.path.isabs(os.path.expanduser(raw))


@functools.lru_cache(maxsize=16)
def _settings_for(raw_home: str, raw_db: str | None, raw_artifacts: str | None,
                  relative_to: str | None) -> Settings:
    # Cached by the raw values: resolving a path costs system calls on every store access.
    home = (Path(relative_to or "/") / Path(raw_home).expanduser()).resolve()
    db_url = raw_db or f"sqlite:///{home / 'pipekit.db'}"
    if not db_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(
            f"{DB_ENV}={db_url!r} is not a supported database URL: "
            "use sqlite:///path or postgresql://user@host/db"
        )
    url, path = _artifacts(raw_artifacts, relative_to)
    return Settings(home=home, db_url=db_url, artifacts_url=url, artifacts_path=path)


#: URL schemes that cannot hold objects (read-only, or not a filesystem)
_NOT_STORES = ("http", "https", "ftp", "sqlite", "postgresql", "postgres")


def _artifacts(raw: str | None, relative_to: str | None) -> tuple[str | None, Path | None]:
    """``PIPEKIT_ARTIFACTS`` as ``(fsspec URL, None)``, ``(None, folder)`` or ``(None, None)``
    (the default folder). A ``file://`` URL is a folder: local renames are atomic, uploads
    are not.
    """
    if not raw:
        return None, None
    parts = urlsplit(raw)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{ARTIFACTS_ENV}={raw!r}: a file:// URL names a local folder "
                              "(file:///path); mount a remote folder and give its path")
        return None, Path(parts.path).resolve()
    if "://" in raw:
        if not parts.scheme or parts.scheme in _NOT_STORES or not (parts.netloc or parts.path):
            raise ConfigError(f"{ARTIFACTS_ENV}={raw!r} cannot hold objects: give a folder "
                              "or an fsspec URL such as s3://bucket/prefix")
        return raw.rstrip("/"), None
    return None, (Path(relative_to or "/") / Path(raw).expanduser()).resolve()


def _seconds(env: str, default: float) -> float:
    raw = setting(env)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{env}={raw!r} is not a positive number of seconds")
    return value


def lease_ttl() -> float:
    """``PIPEKIT_LEASE_TTL``: how long a claim lives without a heartbeat (default 60 s)."""
    return _seconds(LEASE_TTL_ENV, DEFAULT_LEASE_TTL)


def start_timeout() -> float:
    """``PIPEKIT_START_TIMEOUT``: how long a queued step waits for a live agent on its queue
    before it fails (default 300 s).
    """
    return _seconds(START_TIMEOUT_ENV, DEFAULT_START_TIMEOUT)


def configure(home: str | os.PathLike[str] | None = None, db: str | None = None, *,
              artifacts: str | os.PathLike[str] | None = None,
              lease_ttl: float | None = None, start_timeout: float | None = None) -> Settings:
    """Point this process, and the processes it starts, at a store.

    :param home: folder for ``pipekit.db``, ``artifacts/`` and ``logs/`` (``PIPEKIT_HOME``).
    :param db: database URL (``PIPEKIT_DB``); defaults to ``sqlite:///<home>/pipekit.db``.
    :param artifacts: where artifact objects live (``PIPEKIT_ARTIFACTS``): a folder, or an
        fsspec URL such as ``s3://bucket/prefix`` that every machine reaches (the ``s3``
        extra); defaults to ``<home>/artifacts``.
    :param lease_ttl: seconds a claimed task's lease lasts (``PIPEKIT_LEASE_TTL``).
    :param start_timeout: seconds a queued step waits for an agent (``PIPEKIT_START_TIMEOUT``).
    :returns: the settings now in force. Nothing is created until the store is first used.
    """
    for env, value in ((LEASE_TTL_ENV, lease_ttl), (START_TIMEOUT_ENV, start_timeout)):
        if value is not None:
            if not float(value) > 0:
                raise ConfigError(f"{env.lower().removeprefix('pipekit_')}={value!r} is not a "
                                  "positive number of seconds")
            os.environ[env] = str(float(value))
    if home is not None:
        os.environ[HOME_ENV] = str(Path(home).expanduser().resolve())
    if db is not None:
        os.environ[DB_ENV] = db
    elif home is not None:
        os.environ.pop(DB_ENV, None)
    if artifacts is not None:
        raw = os.fspath(artifacts)
        os.environ[ARTIFACTS_ENV] = raw if "://" in raw else str(Path(raw).expanduser().resolve())
    elif home is not None:
        os.environ.pop(ARTIFACTS_ENV, None)
    return get_settings()
