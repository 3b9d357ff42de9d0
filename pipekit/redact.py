"""Secret values this process resolved, kept out of everything pipekit writes.

A step given ``${env:NAME}`` resolves it in its own process (:mod:`pipekit.functions`) and
registers the value here. From then on, every reason, log line and traceback this process
writes through pipekit — a task's final status reason (:func:`pipekit.finish.finish_task`),
the captured output of a step (:mod:`pipekit.capture`, and the redacting pipe of a step
process), a step's traceback — has the value replaced by ``***`` (RELIABILITY 21).

Values shorter than :data:`MIN_LENGTH` are not registered: masking every ``"1"`` in a log
would hide more than it protects.
"""

from __future__ import annotations

import threading

__all__ = ["MASK", "MIN_LENGTH", "Redactor", "active", "redact", "redact_bytes", "register"]

MASK = "***"
MIN_LENGTH = 4

_values: list[str] = []  # longest first, so a secret containing another is masked whole
_encoded: list[bytes] = []
_lock = threading.Lock()


def register(value: str) -> None:
    """Mask ``value`` from now on in everything this process writes through pipekit."""
    if len(value) < MIN_LENGTH or value in _values:
        return
    with _lock:
        values = sorted({*_values, value}, key=len, reverse=True)
        _encoded[:] = [v.encode("utf-8") for v in values]
        _values[:] = values


def active() -> bool:
    """Whether any secret is registered (callers skip the work otherwise)."""
    return bool(_values)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for value in _values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact_bytes(data: bytes) -> bytes:
    """:func:`redact` for bytes (UTF-8)."""
    for value in _encoded:
        if value in data:
            data = data.replace(value, MASK.encode())
    return data


class Redactor:
    """Redact a byte stream fed in chunks: a secret split across two chunks is still masked,
    because the tail that could begin one is held back until the next chunk (or
    :meth:`flush`).
    """

    def __init__(self) -> None:
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """The redacted bytes that are safe to write now."""
        data = self._held + chunk
        if not _encoded:
            self._held = b""
            return data
        data = redact_bytes(data)
        cut = max(len(data) - (max(len(v) for v in _encoded) - 1), 0)
        # hold back only a tail that could be the start of a secret
        while cut < len(data) and not any(v.startswith(data[cut:]) for v in _encoded):
            cut += 1
        self._held = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        """Whatever is still held back (the stream ended)."""
        held, self._held = self._held, b""
        return redact_bytes(held)
