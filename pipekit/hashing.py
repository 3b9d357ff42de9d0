"""Canonical encodings and blake3 digests: the one place content is turned into a name.

Cache keys, artifact addresses and code digests all come from here, so they agree across
processes, ``PYTHONHASHSEED`` values and dict orders.
"""

from __future__ import annotations

import inspect
import json
import os
import textwrap
from collections.abc import Callable, Iterable
from typing import Any

import blake3

#: Files larger than this are hashed through ``update_mmap`` (multithreaded).
_MMAP_THRESHOLD = 8 * 1024 * 1024


def digest_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hex blake3 digest of ``data``."""
    return blake3.blake3(data).hexdigest()


def digest_file(path: str | os.PathLike[str]) -> str:
    """Hex blake3 digest of a file's content, memory-mapped and multithreaded when large."""
    size = os.path.getsize(path)
    if size >= _MMAP_THRESHOLD:
        return blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(path).hexdigest()
    with open(path, "rb") as fh:
        return blake3.blake3(fh.read()).hexdigest()


def hasher() -> Any:
    """A fresh incremental blake3 hasher."""
    return blake3.blake3()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not canonically encodable")


def digest_params(params: dict[str, Any]) -> str:
    """Digest of a parameter mapping in canonical form."""
    return digest_bytes(canonical_json(params).encode())


def function_source(fn: Callable[..., Any]) -> str:
    """The dedented source of ``fn`` (its decorators included)."""
    return textwrap.dedent(inspect.getsource(fn))


def digest_code(fn: Callable[..., Any], helpers: Iterable[Callable[..., Any]] = ()) -> str:
    """Digest of a function's source and its helper functions' sources, in a stable order."""
    parts = [function_source(fn)] + sorted(function_source(h) for h in helpers)
    h = blake3.blake3()
    for part in parts:
        encoded = part.encode()
        h.update(len(encoded).to_bytes(8, "big"))
        h.update(encoded)
    return h.hexdigest()
