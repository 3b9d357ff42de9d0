"""A sample third-party pipekit plugin, used by pipekit's own tests.

It registers one serializer through the ``pipekit`` entry-point group, exactly as any
third-party distribution would: :class:`Point` values are stored as ``"x,y"`` text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

import pipekit
from pipekit.artifacts import Serializer


@dataclass(frozen=True)
class Point:
    """A point in the plane."""

    x: float
    y: float


class PointSerializer(Serializer):
    """``Point(x, y)`` <-> ``b"x,y"``."""

    name = "example.point"
    priority = 10
    extension = ".txt"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, Point)

    def dump(self, value: Point, fp: IO[bytes]) -> None:
        fp.write(f"{value.x!r},{value.y!r}".encode())

    def load(self, fp: IO[bytes]) -> Point:
        x, y = fp.read().decode().split(",")
        return Point(float(x), float(y))

    def preview(self, value: Point) -> str:
        return f"Point({value.x}, {value.y})"


@pipekit.hookimpl
def pipekit_serializers(register: Any) -> None:
    """Register :class:`PointSerializer`."""
    register(PointSerializer())
