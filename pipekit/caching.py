"""Step cache keys: when two executions of a step are interchangeable.

A key is blake3 over the canonical JSON of everything that decides a step's outputs:

* its **code**: a function step's source and helper functions (their digest) and entry
  point, or a task step's script digest and entry point;
* its **resolved parameters** (references already replaced by their values);
* the **digests of its input artifacts** — never the ids of the tasks holding them, so a
  re-run upstream step that returns the same bytes keeps its children cached;
* its **configuration** and task overrides;
* its declared ``cache_version`` (``add_function_step``, ``add_step``, ``component``), bumped
  by hand when something the key cannot see changed;
* the parts every ``pipekit_cache_key`` plugin adds (a data version, a model registry tag…).

What is *not* in the key: the step's name, the run, the time, and ``${env:…}`` secrets
(resolved only inside the step, so never seen here). Equal inputs give equal keys across
processes, ``PYTHONHASHSEED`` values and dict orders (:func:`pipekit.hashing.canonical_json`).

Pure: the runner gathers the parts; the ``cache`` plugin finds a task with the key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import CacheKeyError
from .hashing import canonical_json, digest_bytes

__all__ = ["CacheKeyError", "cache_key", "hook_parts"]

#: bumped when the key's layout changes, so old keys can never match new ones
KEY_FORMAT = "pipekit-cache/1"


def cache_key(*, code: str, entry_point: str, parameters: Mapping[str, Any],
              inputs: Mapping[str, str], configuration: Mapping[str, Any] | None = None,
              returns: Iterable[str] = (), extra: Iterable[str] = (),
              version: str | None = None) -> str:
    """The hex blake3 cache key of one step execution.

    :param code: the digest of the step's code.
    :param entry_point: the function's qualified name, or the script's entry point.
    :param parameters: resolved parameter values by name (JSON-encodable).
    :param inputs: input name -> digest of the artifact it receives.
    :param configuration: configuration objects and task overrides by name.
    :param returns: the names the step's return values are stored under.
    :param extra: parts from ``pipekit_cache_key`` plugins (order does not matter).
    :param version: the step's declared ``cache_version``, if any.
    :raises CacheKeyError: a value has no canonical JSON form (the error names it).
    """
    document = {"format": KEY_FORMAT, "code": code, "entry_point": entry_point,
                "parameters": dict(parameters), "inputs": dict(inputs),
                "configuration": dict(configuration or {}), "returns": list(returns),
                "extra": sorted(extra)}
    if version is not None:  # (absent, not null: keys made before it existed still match)
        document["version"] = str(version)
    try:
        text = canonical_json(document)
    except (TypeError, ValueError) as exc:
        raise CacheKeyError(f"cannot be hashed for the cache: {exc}") from exc
    return digest_bytes(text.encode())


def hook_parts(results: Iterable[Any]) -> list[str]:
    """Flatten ``pipekit_cache_key`` results (``None``, a string, or a list of strings)."""
    parts: list[str] = []
    for result in results:
        if result is None:
            continue
        if isinstance(result, str):
            parts.append(result)
        else:
            parts.extend(str(part) for part in result)
    return parts
