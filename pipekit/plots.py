"""Plot records: what ``Logger.report_histogram`` and its kin store, as data to draw.

A plot is stored as a task report of kind ``plot`` whose content is one JSON object::

    {"kind": "histogram", "title": "loss", "series": "train", "iteration": 0,
     "data": [{"type": "bar", "name": "train", "x": [0, 1, 2], "y": [4, 1, 3]}],
     "layout": {"title": "loss", "xaxis": {"title": "bucket"}, "yaxis": {"title": "count"},
                "barmode": "group"}}

``data`` and ``layout`` are plotly.js's figure shape, which ClearML's web UI draws too
(``clearml/utilities/plotly_reporter.py`` builds the same traces), so a viewer can hand them to
plotly.js or draw them itself. An image plot (``kind`` ``image`` or ``matplotlib``) has no
``data``: its ``image`` names the picture in the blob store by content digest
(``{"digest", "size", "mime", "width", "height"}``), or holds the ``url`` it was reported
with. Numbers that are not finite (NaN, infinity) are stored as ``null``.

This module is pure: it shapes values and encodes PNG bytes (stdlib ``zlib``), and never
touches the store or a file. :class:`pipekit.logger.Logger` stores what it returns.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

__all__ = ["HISTOGRAM_MODES", "LINE_MODES", "SeriesInfo", "describe", "histogram",
           "image_info", "line_plot", "matrix", "png_from_array", "record", "scatter2d"]

HISTOGRAM_MODES = ("group", "stack", "relative")
LINE_MODES = ("lines", "markers", "lines+markers")


def _number(value: Any, what: str) -> float | int | None:
    """A JSON-able number; NaN and infinities become ``None`` (JSON ``null``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must hold numbers, not {value!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _plain(value: Any) -> Any:
    """``value`` as plain Python: a numpy array (or scalar) through its ``tolist()``."""
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else value


def _rows(values: Any, what: str) -> list[list[float | int | None]]:
    """One or more rows of numbers: a scalar is one row of one, a sequence one row, a
    sequence of sequences many (as ``numpy.atleast_2d``).
    """
    values = _plain(values)
    if isinstance(values, (str, bytes, Mapping)):
        raise ValueError(f"{what} must be numbers (a list, or a list of rows), not "
                         f"{type(values).__name__}")
    if not isinstance(values, Iterable):
        return [[_number(values, what)]]
    items = [_plain(v) for v in values]
    if items and all(isinstance(v, Iterable) and not isinstance(v, (str, bytes))
                     for v in items):
        rows = [[_number(x, what) for x in row] for row in items]
        if len({len(row) for row in rows}) > 1:
            raise ValueError(f"{what}: every row must have the same length")
        return rows
    return [[_number(x, what) for x in items]]


def _labels(labels: Any, what: str) -> list[str] | None:
    if labels is None:
        return None
    return [str(label) for label in _plain(labels)]


def _merged(base: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` updated by ``extra``, dicts merged key by key (ClearML's ``merge_dicts``)."""
    out = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _layout(title: str, xaxis: str | None, yaxis: str | None, comment: str | None = None,
            **more: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {"title": title, "xaxis": {"title": xaxis or ""},
                              "yaxis": {"title": yaxis or ""}}
    if comment:
        layout["comment"] = str(comment)
    layout.update(more)
    return layout


# -- shapes -------------------------------------------------------------------------------------


def histogram(title: str, series: str, values: Any, *, labels: Any = None,
              xlabels: Any = None, xaxis: str | None = None, yaxis: str | None = None,
              mode: str | None = None, data_args: Mapping[str, Any] | None = None,
              extra_layout: Mapping[str, Any] | None = None) -> tuple[list, dict]:
    """Bars already counted: each row of ``values`` one bar trace (ClearML's
    ``create_2d_histogram_plot``); returns ``(data, layout)``.

    :param labels: one name per row (the legend); default: ``series`` for every row.
    :param xlabels: one label per column; default: the column numbers.
    :raises ValueError: not numbers, rows of unequal length, labels that do not fit, or a
        ``mode`` other than ``group``, ``stack`` or ``relative``.
    """
    mode = mode or "group"
    if mode not in HISTOGRAM_MODES:
        raise ValueError(f"histogram mode must be one of {', '.join(HISTOGRAM_MODES)}, not "
                         f"{mode!r}")
    rows = _rows(values, "histogram values")
    names = _labels(labels, "labels")
    if names and len(names) == 1:
        names = names * len(rows)
    if names and len(names) != len(rows):
        raise ValueError(f"labels: one per row of values ({len(rows)}), not {len(names)}")
    xs: list[Any] = list(range(len(rows[0]))) if xlabels is None else _plain(xlabels)
    if len(xs) != len(rows[0]):
        raise ValueError(f"xlabels: one per column of values ({len(rows[0])}), not {len(xs)}")
    data = [_merged({"type": "bar", "name": names[i] if names else str(series),
                     "x": list(xs), "y": row}, data_args) for i, row in enumerate(rows)]
    layout = _layout(str(series) if names else str(title), xaxis, yaxis, barmode=mode)
    return data, _merged(layout, extra_layout)


@attrs.frozen
class SeriesInfo:
    """One line of ``Logger.report_line_plot`` (ClearML's ``Logger.SeriesInfo``).

    :param name: the line's name.
    :param data: ``[(x, y), …]`` (or an N×2 numpy array).
    :param labels: one label per point, optional.
    """

    name: str
    data: Any
    labels: Any = None


def _xy(points: Any, what: str) -> tuple[list, list]:
    """``(xs, ys)`` of ``[(x0, y0), (x1, y1), …]`` (or an N×2 array)."""
    points = _plain(points)
    pairs = [_plain(p) for p in points] if isinstance(points, Iterable) else [points]
    if any(isinstance(p, (str, bytes)) or not isinstance(p, Iterable) or len(list(p)) != 2
           for p in pairs):
        raise ValueError(f"{what} must be pairs (x, y): [(x0, y0), (x1, y1), …]")
    xs = [_number(list(p)[0], what) for p in pairs]
    return xs, [_number(list(p)[1], what) for p in pairs]


def line_plot(title: str, series: Sequence[SeriesInfo | Mapping[str, Any]], *,
              xaxis: str | None = None, yaxis: str | None = None, mode: str = "lines",
              reverse_xaxis: bool = False, comment: str | None = None,
              extra_layout: Mapping[str, Any] | None = None) -> tuple[list, dict]:
    """One scatter trace per :class:`SeriesInfo` (a dict of its fields works too); returns
    ``(data, layout)``.

    :raises ValueError: points that are not ``(x, y)`` pairs, labels that do not fit, or a
        ``mode`` other than ``lines``, ``markers`` or ``lines+markers``.
    """
    if mode not in LINE_MODES:
        raise ValueError(f"mode must be one of {', '.join(LINE_MODES)}, not {mode!r}")
    data = []
    for item in series:
        line = SeriesInfo(**item) if isinstance(item, Mapping) else item
        xs, ys = _xy(line.data, f"series {line.name!r}")
        trace: dict[str, Any] = {"type": "scatter", "mode": mode, "name": str(line.name),
                                 "x": xs, "y": ys}
        labels = _labels(line.labels, "labels")
        if labels is not None:
            if len(labels) != len(xs):
                raise ValueError(f"series {line.name!r}: one label per point ({len(xs)}), "
                                 f"not {len(labels)}")
            trace["text"] = labels
        data.append(trace)
    layout = _layout(str(title), xaxis, yaxis, comment)
    if reverse_xaxis:
        layout["xaxis"]["autorange"] = "reversed"
    return data, _merged(layout, extra_layout)


def scatter2d(title: str, series: str, scatter: Any, *, xaxis: str | None = None,
              yaxis: str | None = None, labels: Any = None, mode: str = "lines",
              comment: str | None = None,
              extra_layout: Mapping[str, Any] | None = None) -> tuple[list, dict]:
    """``scatter`` (``[(x, y), …]``) as one line named ``series`` (ClearML draws a 2-D
    scatter as a line plot of one series); returns ``(data, layout)``.
    """
    return line_plot(title, [SeriesInfo(str(series), scatter, labels)], xaxis=xaxis,
                     yaxis=yaxis, mode=mode, comment=comment, extra_layout=extra_layout)


def matrix(title: str, series: str, values: Any, *, xaxis: str | None = None,
           yaxis: str | None = None, xlabels: Any = None, ylabels: Any = None,
           yaxis_reversed: bool = False, comment: str | None = None,
           extra_layout: Mapping[str, Any] | None = None) -> tuple[list, dict]:
    """A heat-map of ``values`` (a confusion matrix: rows are y, columns x); returns
    ``(data, layout)``. As ClearML's ``create_value_matrix``, ``extra_layout`` is merged into
    the trace as well as the layout.
    """
    rows = _rows(values, "matrix")
    xs, ys = _labels(xlabels, "xlabels"), _labels(ylabels, "ylabels")
    if xs is not None and len(xs) != len(rows[0]):
        raise ValueError(f"xlabels: one per column of the matrix ({len(rows[0])}), not "
                         f"{len(xs)}")
    if ys is not None and len(ys) != len(rows):
        raise ValueError(f"ylabels: one per row of the matrix ({len(rows)}), not {len(ys)}")
    trace = _merged({"type": "heatmap", "z": rows, "x": xs, "y": ys}, extra_layout)
    layout = _layout(str(title), xaxis, yaxis, comment, name=str(series))
    if yaxis_reversed:
        layout["yaxis"]["autorange"] = "reversed"
    return [trace], _merged(layout, extra_layout)


def record(kind: str, title: str, series: str, iteration: int, **fields: Any) -> str:
    """The JSON a plot report stores: ``kind``, ``title``, ``series``, ``iteration`` and the
    ``fields`` (``data`` and ``layout``, or ``image``).
    """
    body = {"kind": kind, "title": str(title), "series": str(series),
            "iteration": int(iteration), **fields}
    return json.dumps(body, allow_nan=False, separators=(",", ":"))


def describe(plot: Mapping[str, Any]) -> str:
    """A one-line summary of a plot record, for listings (``pipekit tasks show``)."""
    image = plot.get("image")
    if isinstance(image, Mapping):
        if image.get("url"):
            return f"url {image['url']}"
        size = f" {image['width']}x{image['height']}" if image.get("width") else ""
        return f"{image.get('mime', '')}{size}, {image.get('size', 0)} bytes, " \
               f"{str(image.get('digest', ''))[:12]}"
    traces = [t for t in plot.get("data") or [] if isinstance(t, Mapping)]
    if len(traces) == 1 and traces[0].get("z") is not None:
        z = traces[0]["z"]
        return f"{len(z)}x{len(z[0]) if z else 0} matrix"
    points = sum(len(t.get("y") or []) for t in traces)
    return f"{len(traces)} {'trace' if len(traces) == 1 else 'traces'}, {points} points"


# -- images -------------------------------------------------------------------------------------

_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
               (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"), (b"BM", "image/bmp"))


def image_info(head: bytes) -> dict[str, Any]:
    """What the first bytes of an image file say: ``mime`` and, for PNG and GIF, ``width``
    and ``height`` (``image/...`` guessed from the content, never from a file name).
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return {"mime": "image/webp"}
    if head.lstrip()[:5] in (b"<?xml", b"<svg ") or head.lstrip()[:4] == b"<svg":
        return {"mime": "image/svg+xml"}
    for magic, mime in _SIGNATURES:
        if head.startswith(magic):
            info: dict[str, Any] = {"mime": mime}
            if mime == "image/png" and len(head) >= 24:
                info["width"], info["height"] = struct.unpack(">II", head[16:24])
            elif mime == "image/gif" and len(head) >= 10:
                info["width"], info["height"] = struct.unpack("<HH", head[6:10])
            return info
    return {"mime": "application/octet-stream"}


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + \
        struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_from_array(image: Any) -> bytes:
    """PNG bytes of a numpy image: ``H×W`` (grey), ``H×W×1``, ``H×W×3`` (RGB) or ``H×W×4``
    (RGBA). As ClearML (``backend_interface/metrics/events.py``): a float image whose values
    are all at most 1.0 is scaled by 255, and values become ``uint8``.

    :raises ValueError: not an array of that shape.
    """
    shape = tuple(getattr(image, "shape", ()))
    if not hasattr(image, "astype") or len(shape) not in (2, 3) or \
            (len(shape) == 3 and shape[2] not in (1, 3, 4)) or 0 in shape:
        raise ValueError("an image must be a numpy array of shape HxW, HxWx1, HxWx3 (RGB) or "
                         f"HxWx4 (RGBA), not {shape or type(image).__name__}")
    if image.dtype.kind == "f" and image.size and image.max() <= 1.0:
        image = image * 255
    pixels = image.astype("uint8")
    height, width = shape[0], shape[1]
    channels = shape[2] if len(shape) == 3 else 1
    color = {1: 0, 3: 2, 4: 6}[channels]  # greyscale, truecolour, truecolour with alpha
    raw = pixels.tobytes()
    stride = width * channels
    scanlines = b"".join(b"\x00" + raw[y * stride:(y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return b"".join([b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header),
                     _png_chunk(b"IDAT", zlib.compress(scanlines, 6)),
                     _png_chunk(b"IEND", b"")])
