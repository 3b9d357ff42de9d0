"""Logger plots (ClearML's ``report_histogram``, ``report_vector``, ``report_scatter2d``,
``report_line_plot``, ``report_confusion_matrix``, ``report_image`` and
``report_matplotlib_figure``): what each stores as a plot record, images in the blob store by
digest, and ``pipekit tasks show`` listing them.

ClearML's own signatures and defaults are in its ``clearml/logger.py``; the shapes of the
stored data follow ``clearml/utilities/plotly_reporter.py`` (plotly.js figures).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipekit import Logger, Task
from pipekit.cli import cli
from pipekit.errors import PipekitError
from pipekit.hashing import digest_bytes
from pipekit.models import ReportInfo
from pipekit.plots import describe, image_info, png_from_array
from pipekit.store import get_store

COMPAT = Path(__file__).resolve().parent / "compat"


@pytest.fixture
def task() -> Task:
    return Task.create(project_name="plots", task_name="reporter")  # a draft, no script


def plots_of(task: Task) -> list[dict]:
    return [r.data for r in get_store().reports(task.id, "plot")]


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """``(width, height, color type, pixel bytes)`` of an 8-bit, unfiltered PNG, checking
    the signature and every chunk's CRC.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, color, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and b"IEND" in chunks
    channels = {0: 1, 2: 3, 6: 4}[color]
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = width * channels + 1
    assert len(raw) == height * stride
    assert all(raw[y * stride] == 0 for y in range(height))  # filter "none" on each line
    pixels = b"".join(raw[y * stride + 1:(y + 1) * stride] for y in range(height))
    return width, height, color, pixels


def stored_image(image: dict) -> bytes:
    """The bytes of an image record, read from the blob store after checking the digest."""
    path = get_store().blobs.verified_path(image["digest"], "image")
    assert path.name == image["digest"]  # named by content, never by a report's names
    return path.read_bytes()


# -- histograms ---------------------------------------------------------------------------------


def test_report_histogram_stores_one_bar_trace_per_row(task):
    logger = task.get_logger()
    logger.report_histogram("loss", "train", values=np.array([3, 1, 2]), iteration=4,
                            xaxis="bucket", yaxis="count")
    logger.report_histogram("two", "ignored", values=[[1, 2], [3, 4]], labels=["A", "B"],
                            xlabels=["lo", "hi"], mode="stack",
                            data_args={"marker": {"color": "blue"}},
                            extra_layout={"showlegend": False, "xaxis": {"type": "category"}})
    reports = get_store().reports(task.id, "plot")
    assert all(isinstance(r, ReportInfo) for r in reports)
    first, second = reports
    assert (first.kind, first.title, first.series, first.iteration) == (
        "plot", "loss", "train", 4)
    assert first.data == {
        "kind": "histogram", "title": "loss", "series": "train", "iteration": 4,
        "data": [{"type": "bar", "name": "train", "x": [0, 1, 2], "y": [3, 1, 2]}],
        "layout": {"title": "loss", "xaxis": {"title": "bucket"},
                   "yaxis": {"title": "count"}, "barmode": "group"}}
    assert second.iteration == 0  # ClearML: iteration or 0
    assert second.data["data"] == [
        {"type": "bar", "name": "A", "x": ["lo", "hi"], "y": [1, 2], "marker": {"color": "blue"}},
        {"type": "bar", "name": "B", "x": ["lo", "hi"], "y": [3, 4], "marker": {"color": "blue"}}]
    assert second.data["layout"] == {"title": "ignored", "xaxis": {"title": "", "type": "category"},
                                     "yaxis": {"title": ""}, "barmode": "stack",
                                     "showlegend": False}


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"values": "abc"}, "must be numbers"),
    ({"values": [1, "x"]}, "must hold numbers"),
    ({"values": [[1, 2], [3]]}, "same length"),
    ({"values": [[1, 2], [3, 4]], "labels": ["a", "b", "c"]}, "one per row"),
    ({"values": [1, 2], "xlabels": ["a"]}, "one per column"),
    ({"values": [1, 2], "mode": "pile"}, "'pile'"),
])
def test_a_bad_histogram_is_a_value_error_and_stores_nothing(task, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        task.get_logger().report_histogram("h", "s", **kwargs)
    assert plots_of(task) == []


def test_report_vector_is_report_histogram_and_deprecated(task):
    with pytest.warns(DeprecationWarning, match="report_histogram"):
        task.get_logger().report_vector("v", "s", values=[1, 2], labels=["only"])
    (plot,) = plots_of(task)
    assert plot["kind"] == "histogram"
    assert plot["data"] == [{"type": "bar", "name": "only", "x": [0, 1], "y": [1, 2]}]


# -- scatters and lines ---------------------------------------------------------------------------


def test_report_scatter2d_stores_the_points_as_one_series(task):
    points = np.hstack((np.atleast_2d(np.arange(0, 3)).T, np.array([[5], [6], [7]])))
    task.get_logger().report_scatter2d("example_scatter", "series_xy", iteration=2,
                                       scatter=points, xaxis="x", yaxis="y",
                                       labels=["a", "b", "c"], mode="markers",
                                       comment="under the title")
    task.get_logger().report_scatter2d("example_scatter", "nan", scatter=[(0, float("nan"))])
    first, second = plots_of(task)
    assert first == {
        "kind": "scatter2d", "title": "example_scatter", "series": "series_xy", "iteration": 2,
        "data": [{"type": "scatter", "mode": "markers", "name": "series_xy", "x": [0, 1, 2],
                  "y": [5, 6, 7], "text": ["a", "b", "c"]}],
        "layout": {"title": "example_scatter", "xaxis": {"title": "x"},
                   "yaxis": {"title": "y"}, "comment": "under the title"}}
    assert second["data"][0]["mode"] == "lines"  # ClearML's default
    assert second["data"][0]["y"] == [None]  # NaN is JSON null
    with pytest.raises(ValueError, match=r"pairs \(x, y\)"):
        task.get_logger().report_scatter2d("bad", "s", scatter=[1, 2, 3])
    with pytest.raises(ValueError, match="one label per point"):
        task.get_logger().report_scatter2d("bad", "s", scatter=[(0, 1)], labels=["a", "b"])


def test_report_line_plot_takes_series_info_and_dicts(task):
    logger = task.get_logger()
    lines = [Logger.SeriesInfo(name="a", data=[(0, 1), (1, 2)]),
             {"name": "b", "data": np.array([[0, 3], [1, 4]]), "labels": ["p", "q"]}]
    with pytest.warns(DeprecationWarning, match="report_scatter2d"):
        logger.report_line_plot("lines", lines, xaxis="x", yaxis="y", iteration=1,
                                mode="lines+markers", reverse_xaxis=True)
    (report,) = get_store().reports(task.id, "plot")
    assert (report.title, report.series, report.iteration) == ("lines", "a", 1)
    assert report.data["data"] == [
        {"type": "scatter", "mode": "lines+markers", "name": "a", "x": [0, 1], "y": [1, 2]},
        {"type": "scatter", "mode": "lines+markers", "name": "b", "x": [0, 1], "y": [3, 4],
         "text": ["p", "q"]}]
    assert report.data["layout"]["xaxis"] == {"title": "x", "autorange": "reversed"}


# -- confusion matrices ---------------------------------------------------------------------------


def test_report_confusion_matrix_is_a_heatmap_showing_its_values(task):
    logger = task.get_logger()
    logger.report_confusion_matrix("confusion", "ignored", iteration=1,
                                   matrix=np.array([[5, 1], [2, 7]]), xaxis="predicted",
                                   yaxis="actual", xlabels=["cat", "dog"],
                                   ylabels=["cat", "dog"], yaxis_reversed=True)
    logger.report_confusion_matrix("plain", "s", matrix=[[1]], extra_layout={"title": "mine"})
    first, second = plots_of(task)
    assert first["kind"] == "confusion_matrix"
    assert first["data"] == [{"type": "heatmap", "z": [[5, 1], [2, 7]], "x": ["cat", "dog"],
                              "y": ["cat", "dog"], "texttemplate": "%{z}"}]
    assert first["layout"] == {"title": "confusion", "xaxis": {"title": "predicted"},
                               "yaxis": {"title": "actual", "autorange": "reversed"},
                               "name": "ignored", "texttemplate": "%{z}"}
    # A layout of one's own replaces ClearML's default texttemplate.
    assert "texttemplate" not in second["data"][0] and second["layout"]["title"] == "mine"
    with pytest.raises(ValueError, match="xlabels: one per column"):
        logger.report_confusion_matrix("bad", "s", matrix=[[1, 2]], xlabels=["a"])


# -- images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("image", "color", "pixels"), [
    (np.eye(2, dtype=float), 0, bytes([255, 0, 0, 255])),  # floats <= 1.0 are scaled
    (np.eye(2, dtype=np.uint8) * 255, 0, bytes([255, 0, 0, 255])),
    (np.array([[3.0, 2.0]]), 0, bytes([3, 2])),  # a value > 1.0: not scaled
    (np.zeros((1, 2, 3), dtype=np.uint8) + [10, 20, 30], 2, bytes([10, 20, 30] * 2)),
    (np.full((2, 1, 4), 7, dtype=np.uint8), 6, bytes([7] * 8)),
    (np.full((1, 1, 1), 9, dtype=np.uint8), 0, bytes([9])),
])
def test_report_image_stores_an_array_as_png_by_digest(task, image, color, pixels):
    task.get_logger().report_image("image", "sample", iteration=3, image=image)
    (plot,) = plots_of(task)
    record = plot["image"]
    data = stored_image(record)
    width, height, png_color, png_pixels = decode_png(data)
    assert (width, height) == (image.shape[1], image.shape[0])
    assert (png_color, png_pixels) == (color, pixels)
    assert record == {"digest": digest_bytes(data), "size": len(data), "mime": "image/png",
                      "width": width, "height": height}
    assert (plot["kind"], plot["title"], plot["series"], plot["iteration"]) == (
        "image", "image", "sample", 3)
    assert "data" not in plot


def test_report_image_from_a_file_keeps_its_bytes_under_their_digest(task, tmp_path):
    jpeg = b"\xff\xd8\xff\xe0" + b"fake jpeg body" * 100
    path = tmp_path / "evil name.jpg"
    path.write_bytes(jpeg)
    logger = task.get_logger()
    logger.report_image("photos", "../../etc/passwd", local_path=str(path),
                        max_image_history=2)
    logger.report_image("photos", "moved", local_path=path, delete_after_upload=True)
    first, second = plots_of(task)
    assert first["image"] == second["image"] == {
        "digest": digest_bytes(jpeg), "size": len(jpeg), "mime": "image/jpeg"}
    assert stored_image(first["image"]) == jpeg
    assert not path.exists()  # delete_after_upload
    folder = get_store().blobs.root
    assert [p.name for p in folder.rglob("*") if p.is_file()] == [digest_bytes(jpeg)]


def test_report_image_by_url_and_its_errors(task, tmp_path):
    logger = task.get_logger()
    logger.report_image("links", "remote", url="https://example.invalid/a.png")
    (plot,) = plots_of(task)
    assert plot["image"] == {"url": "https://example.invalid/a.png"}
    with pytest.raises(ValueError, match="exactly one of local_path, url, image or matrix$"):
        logger.report_image("bad", "none")
    with pytest.raises(ValueError, match="not url and image"):
        logger.report_image("bad", "two", url="x", image=np.eye(2))
    with pytest.raises(ValueError, match="numpy.ndarray or a PIL.Image, not list"):
        logger.report_image("bad", "list", image=[[0, 1]])
    with pytest.raises(ValueError, match="HxWx3"):
        logger.report_image("bad", "shape", image=np.zeros((2, 2, 2)))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        logger.report_image("bad", "empty", local_path=str(empty))
    with pytest.warns(DeprecationWarning, match="matrix"):
        logger.report_image("old", "matrix", matrix=np.eye(2))
    assert [p["series"] for p in plots_of(task)] == ["remote", "matrix"]


def test_report_image_of_a_pil_image_lets_pil_write_the_png(task):
    class FakePIL:  # what report_image uses of a PIL.Image.Image
        mode = "RGB"

        def save(self, fh, format):
            assert format == "PNG"
            fh.write(png_from_array(np.zeros((1, 3, 3), dtype=np.uint8)))

    task.get_logger().report_image("pil", "s", image=FakePIL())
    (plot,) = plots_of(task)
    assert decode_png(stored_image(plot["image"]))[:2] == (3, 1)


# -- matplotlib -----------------------------------------------------------------------------------


class Figure:
    """Stands in for a matplotlib ``Figure`` (or ``matplotlib.pyplot``): ``savefig``."""

    def __init__(self) -> None:
        self.saved: list[str] = []

    def savefig(self, fh, format):
        self.saved.append(format)
        fh.write(png_from_array(np.full((4, 5), 128, dtype=np.uint8)))


def test_report_matplotlib_figure_needs_matplotlib(task, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(PipekitError, match="needs matplotlib.*pip install matplotlib"):
        task.get_logger().report_matplotlib_figure("fig", "s", figure=Figure())
    assert plots_of(task) == []


def test_report_matplotlib_figure_stores_the_figure_as_png(task, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", types.ModuleType("matplotlib"))
    figure = Figure()
    logger = task.get_logger()
    logger.report_matplotlib_figure(title="Manual Reporting", series="Just a plot",
                                    iteration=0, figure=figure)
    logger.report_matplotlib_figure("Manual Reporting", "Plot as an image", figure,
                                    report_image=True, report_interactive=False)
    plot, image = plots_of(task)
    assert figure.saved == ["png", "png"]
    assert (plot["kind"], image["kind"]) == ("matplotlib", "image")
    assert plot["image"] == image["image"]
    assert decode_png(stored_image(plot["image"]))[:2] == (5, 4)
    with pytest.raises(ValueError, match="Figure or matplotlib.pyplot, not str"):
        logger.report_matplotlib_figure("bad", "s", figure="plt")


def test_report_matplotlib_figure_with_real_matplotlib(task):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.figure()
    plt.plot([0, 1], [1, 0])
    task.get_logger().report_matplotlib_figure("real", "pyplot", figure=plt)
    (plot,) = plots_of(task)
    assert plot["image"]["mime"] == "image/png" and plot["image"]["width"] > 0


# -- listing, records, a ClearML example ---------------------------------------------------------


def test_tasks_show_lists_the_plots(task):
    logger = task.get_logger()
    logger.report_histogram("hist", "s", values=[1, 2, 3], iteration=1)
    logger.report_confusion_matrix("conf", "m", matrix=[[1, 2], [3, 4]])
    logger.report_image("img", "pic", image=np.eye(3))
    result = CliRunner().invoke(cli, ["tasks", "show", task.id])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "plots" in text
    for fragment in ("histogram", "hist", "1 trace, 3 points", "confusion_matrix",
                     "2x2 matrix", "image", "image/png 3x3"):
        assert fragment in text, fragment
    result = CliRunner().invoke(cli, ["tasks", "show", task.id, "--json"])
    details = json.loads(result.stdout)
    assert details["plots"] == plots_of(task)
    assert [p["kind"] for p in details["plots"]] == ["histogram", "confusion_matrix", "image"]


def test_describe_and_image_info():
    assert describe({"kind": "histogram", "data": [{"y": [1, 2]}, {"y": [3]}]}) == \
        "2 traces, 3 points"
    assert describe({"kind": "image", "image": {"url": "u"}}) == "url u"
    assert image_info(b"GIF89a\x02\x00\x03\x00") == {"mime": "image/gif", "width": 2,
                                                     "height": 3}
    assert image_info(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == {"mime": "image/webp"}
    assert image_info(b"<svg xmlns=") == {"mime": "image/svg+xml"}
    assert image_info(b"text") == {"mime": "application/octet-stream"}


def test_clearmls_reporting_example_runs_with_its_import_changed(tmp_path):
    """ClearML's examples/reporting/scatter_hist_confusion_mat_reporting.py (and the numpy
    images of image_reporting.py), only the import line changed.
    """
    proc = subprocess.run([sys.executable, str(COMPAT / "plots_reporting.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    task_id = next(line.split()[1] for line in proc.stdout.splitlines()
                   if line.startswith("TASK_ID "))
    assert Task(task_id).get_status() == "completed"
    reports = get_store().reports(task_id, "plot")
    assert [(r.title, r.series, r.data["kind"]) for r in reports] == [
        ("single_histogram", "random histogram", "histogram"),
        ("two_histogram", "series 1", "histogram"),
        ("two_histogram", "series 2", "histogram"),
        ("example_confusion", "ignored", "confusion_matrix"),
        ("example_confusion_0_0_at_top", "ignored", "confusion_matrix"),
        ("example_scatter", "series_xy", "scatter2d"),
        ("example_scatter", "series_markers", "scatter2d"),
        ("example_scatter", "series_lines+markers", "scatter2d"),
        ("image", "image float", "image"),
        ("image", "image uint8", "image"),
        ("image", "image color red", "image"),
    ]
    float_image, uint8_image, red = (r.data["image"] for r in reports[-3:])
    assert float_image == uint8_image  # ClearML scales a float image by 255
    width, height, color, pixels = decode_png(stored_image(red))
    assert (width, height, color) == (256, 256, 2) and pixels[:6] == bytes([255, 0, 0, 0, 0, 0])
