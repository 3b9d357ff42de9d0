"""``Logger``: scalars, single values, text, tables and plots reported by a task.

Scalars are buffered per process and written in batches (every 250 ms or 500 points, and at
exit), so many steps reporting at once hold the write lock briefly and rarely. Reads through
the task API flush first, so a task always sees its own reports.

Plots (histograms, scatters, line plots, confusion matrices, images, matplotlib figures) are
stored at once as plot records, shaped by :mod:`pipekit.plots`; an image's bytes go to the
blob store first, named by their digest.
"""

from __future__ import annotations

import atexit
import csv as csvmod
import io
import json
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import context, plots
from .capture import open_log
from .errors import PipekitError
from .plugin_manager import has_impls, notify
from .store import get_store

log = logging.getLogger("pipekit.logger")

FLUSH_INTERVAL = 0.25
FLUSH_POINTS = 500


class _ScalarBuffer:
    """Pending ``(title, series, iteration, value, ts)`` points of every task in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flushing = threading.RLock()  # one flush at a time (RLock: a hook may report)
        self._points: dict[str, list[tuple[str, str, int, float, float]]] = {}
        self._count = 0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, task_id: str, point: tuple[str, str, int, float, float]) -> None:
        with self._lock:
            self._points.setdefault(task_id, []).append(point)
            self._count += 1
            full = self._count >= FLUSH_POINTS
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pipekit-metrics",
                                                daemon=True)
                self._thread.start()
        if full:
            self.flush()

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # keep flushing later; the next flush retries the points
                log.exception("could not write metrics; will retry")
            with self._lock:
                if not self._points:
                    self._thread = None
                    return

    def flush(self, task_id: str | None = None) -> None:
        """Write pending points (of one task, or all) in one transaction per task.

        Waits for a flush already under way in another thread (it may hold this task's
        points), so when this returns every point added before the call is stored.
        """
        with self._flushing:
            self._flush(task_id)

    def _flush(self, task_id: str | None) -> None:
        with self._lock:
            if task_id is None:
                batches, self._points = self._points, {}
            else:
                batches = {task_id: self._points.pop(task_id, [])}
            self._count = sum(len(v) for v in self._points.values())
        if not any(batches.values()):
            return  # nothing to write: do not open (or fail to open) the store
        store = get_store()
        for tid, points in batches.items():
            if not points:
                continue
            try:
                store.add_scalars(tid, points)
            except Exception:
                with self._lock:  # put them back so nothing is lost
                    self._points.setdefault(tid, [])[:0] = points
                    self._count += len(points)
                raise
            if has_impls("pipekit_metric_reported"):
                info = store.get_task(tid)
                for title, series, iteration, value, _ in points:
                    notify("pipekit_metric_reported", task=info, title=title, series=series,
                           iteration=iteration, value=value)


_buffer = _ScalarBuffer()


def flush_metrics(task_id: str | None = None) -> None:
    if _buffer._pid != os.getpid():
        return
    _buffer.flush(task_id)


def _reset_after_fork() -> None:
    global _buffer
    _buffer = _ScalarBuffer()


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(lambda: flush_metrics())


class Logger:
    """Report metrics and text for one task (ClearML's ``Logger``)."""

    def __init__(self, task_id: str) -> None:
        self._task_id = task_id

    @classmethod
    def current_logger(cls) -> Logger:
        """The logger of this process's current task (``Task.init`` or an executing step)."""
        task_id = context.current_task_id()
        if task_id is None:
            raise PipekitError("no current task: call Task.init() first")
        return cls(task_id)

    def report_scalar(self, title: str, series: str, value: float, iteration: int = 0) -> None:
        """Record ``value`` of ``title/series`` at ``iteration``."""
        _buffer.add(self._task_id, (str(title), str(series), int(iteration), float(value),
                                    time.time()))

    def report_single_value(self, name: str, value: float) -> None:
        """Record a single named number (a summary metric such as accuracy)."""
        get_store().set_single_values(self._task_id, {str(name): float(value)})

    def report_text(self, msg: str, level: int = logging.INFO, print_console: bool = True
                    ) -> None:
        """Write a line to the task's log (and the console) and keep it as a text report."""
        text = str(msg)
        if print_console and context.current_task_id() == self._task_id:
            print(text)  # the console is captured into this task's log
        else:
            if print_console:
                print(text)
            with open_log(get_store().log_path(self._task_id)) as fh:
                fh.write((text + "\n").encode())
        get_store().add_report(self._task_id, "text", text)

    def report_table(self, title: str, series: str, iteration: int | None = None,
                     table_plot: Any = None, csv: str | None = None, url: str | None = None,
                     extra_layout: Any = None) -> None:
        """Record a table: a pandas DataFrame, a list of rows, or a CSV file/URL."""
        if table_plot is None and csv is None and url is None:
            raise ValueError("report_table needs table_plot, csv or url")
        pd = sys.modules.get("pandas")
        if table_plot is not None and pd is not None and isinstance(table_plot, pd.DataFrame):
            content = table_plot.to_json(orient="split", date_format="iso")
        elif table_plot is not None:
            content = json.dumps({"data": [list(row) for row in table_plot]}, default=str)
        else:
            source = csv or url
            assert source is not None
            # lazy: storage pulls in urllib, tarfile and zipfile (~35 ms), which every step
            # process would pay at import; only a table read from a file or URL needs it
            from .storage import StorageManager

            with open(StorageManager.get_local_copy(source), newline="") as fh:
                rows = list(csvmod.reader(fh))
            content = json.dumps({"columns": rows[0] if rows else [], "data": rows[1:]})
        get_store().add_report(self._task_id, "table", content, title=str(title),
                               series=str(series), iteration=iteration)

    # -- plots (ClearML's names, keywords and defaults) ------------------------------------

    SeriesInfo = plots.SeriesInfo

    def report_histogram(self, title: str, series: str, values: Any,
                         iteration: int | None = None, labels: Sequence[str] | None = None,
                         xlabels: Sequence[str] | None = None, xaxis: str | None = None,
                         yaxis: str | None = None, mode: str | None = None,
                         data_args: Mapping[str, Any] | None = None,
                         extra_layout: Mapping[str, Any] | None = None) -> None:
        """Record bars already counted: one bar per value, one bar trace per row of a 2-D
        ``values`` (a list, or a numpy array).

        :param labels: one legend name per row (default: ``series``).
        :param xlabels: one label per bar (default: 0, 1, 2, …).
        :param mode: how rows share the axis: ``group`` (default), ``stack`` or ``relative``.
        :param data_args: merged into every bar trace (plotly.js bar attributes).
        :param extra_layout: merged into the layout (plotly.js layout attributes).
        :raises ValueError: not numbers, or labels that do not fit the values.
        """
        data, layout = plots.histogram(title, series, values, labels=labels, xlabels=xlabels,
                                       xaxis=xaxis, yaxis=yaxis, mode=mode,
                                       data_args=data_args, extra_layout=extra_layout)
        self._plot("histogram", title, series, iteration, data=data, layout=layout)

    def report_vector(self, title: str, series: str, values: Any,
                      iteration: int | None = None, labels: Sequence[str] | None = None,
                      xlabels: Sequence[str] | None = None, xaxis: str | None = None,
                      yaxis: str | None = None, mode: str | None = None,
                      extra_layout: Mapping[str, Any] | None = None) -> None:
        """Deprecated in ClearML: :meth:`report_histogram` (a ``DeprecationWarning``)."""
        warnings.warn("Logger.report_vector is deprecated; use Logger.report_histogram",
                      DeprecationWarning, stacklevel=2)
        self.report_histogram(title, series, values, iteration, labels=labels,
                              xlabels=xlabels, xaxis=xaxis, yaxis=yaxis, mode=mode,
                              extra_layout=extra_layout)

    def report_scatter2d(self, title: str, series: str, scatter: Any,
                         iteration: int | None = None, xaxis: str | None = None,
                         yaxis: str | None = None, labels: Sequence[str] | None = None,
                         mode: str = "lines", comment: str | None = None,
                         extra_layout: Mapping[str, Any] | None = None) -> None:
        """Record points ``[(x0, y0), (x1, y1), …]`` (or an N×2 array) as series ``series``
        of plot ``title``: report more series with the same title and iteration to draw them
        together.

        :param labels: one label per point.
        :param mode: ``lines`` (default), ``markers`` or ``lines+markers``.
        :param comment: a line shown under the title.
        :raises ValueError: points that are not ``(x, y)`` pairs, or a bad ``mode``.
        """
        data, layout = plots.scatter2d(title, series, scatter, xaxis=xaxis, yaxis=yaxis,
                                       labels=labels, mode=mode, comment=comment,
                                       extra_layout=extra_layout)
        self._plot("scatter2d", title, series, iteration, data=data, layout=layout)

    def report_line_plot(self, title: str, series: Sequence[Any], xaxis: str, yaxis: str,
                         mode: str = "lines", iteration: int | None = None,
                         reverse_xaxis: bool = False, comment: str | None = None,
                         extra_layout: Mapping[str, Any] | None = None) -> None:
        """Record several lines in one plot, each a :attr:`SeriesInfo` (``name``, ``data``
        as ``[(x, y), …]``, optional ``labels``) or a dict of those. Deprecated in ClearML
        for :meth:`report_scatter2d` (a ``DeprecationWarning``).
        """
        warnings.warn("Logger.report_line_plot is deprecated; use Logger.report_scatter2d",
                      DeprecationWarning, stacklevel=2)
        lines = [plots.SeriesInfo(**s) if isinstance(s, Mapping) else s for s in series]
        data, layout = plots.line_plot(title, lines, xaxis=xaxis, yaxis=yaxis, mode=mode,
                                       reverse_xaxis=reverse_xaxis, comment=comment,
                                       extra_layout=extra_layout)
        self._plot("line_plot", title, lines[0].name if lines else "", iteration, data=data,
                   layout=layout)

    def report_confusion_matrix(self, title: str, series: str, matrix: Any,
                                iteration: int | None = None, xaxis: str | None = None,
                                yaxis: str | None = None,
                                xlabels: Sequence[str] | None = None,
                                ylabels: Sequence[str] | None = None,
                                yaxis_reversed: bool = False, comment: str | None = None,
                                extra_layout: Mapping[str, Any] | None = None) -> None:
        """Record a heat-map matrix (rows along y, columns along x).

        :param yaxis_reversed: ``True`` puts row 0 at the top (default: at the bottom).
        :param extra_layout: default ``{"texttemplate": "%{z}"}`` (each cell shows its
            value), as in ClearML.
        """
        if extra_layout is None:
            extra_layout = {"texttemplate": "%{z}"}
        data, layout = plots.matrix(title, series, matrix, xaxis=xaxis, yaxis=yaxis,
                                    xlabels=xlabels, ylabels=ylabels,
                                    yaxis_reversed=yaxis_reversed, comment=comment,
                                    extra_layout=extra_layout)
        self._plot("confusion_matrix", title, series, iteration, data=data, layout=layout)

    def report_image(self, title: str, series: str, iteration: int | None = None,
                     local_path: str | os.PathLike[str] | None = None, image: Any = None,
                     matrix: Any = None, max_image_history: int | None = None,
                     delete_after_upload: bool = False, url: str | None = None) -> None:
        """Record an image: exactly one of an image file (``local_path``), a numpy array or
        PIL image (``image``; ``matrix`` is ClearML's deprecated name for it), or a ``url``
        kept as given. A file or array is stored in the blob store by its digest (an array as
        PNG). pipekit keeps every image: ``max_image_history`` is accepted and ignored.

        :param delete_after_upload: remove ``local_path`` once stored.
        :raises ValueError: not exactly one source, an image of the wrong shape or type, or
            an empty file.
        """
        given = [name for name, value in (("local_path", local_path or None),
                                          ("url", url or None), ("image", image),
                                          ("matrix", matrix)) if value is not None]
        if len(given) != 1:
            raise ValueError("report_image takes exactly one of local_path, url, image or "
                             "matrix" + (f", not {' and '.join(given)}" if given else ""))
        if matrix is not None:
            warnings.warn("report_image(matrix=) is deprecated; use image=",
                          DeprecationWarning, stacklevel=2)
            image = matrix
        if url:
            info: dict[str, Any] = {"url": str(url)}
        elif local_path:
            path = Path(local_path)
            with open(path, "rb") as fh:
                info = self._store_image(iter(lambda: fh.read(1 << 20), b""))
            if delete_after_upload:
                path.unlink(missing_ok=True)
        else:
            info = self._store_image([_png_of(image)])
        self._plot("image", title, series, iteration, image=info)

    def report_matplotlib_figure(self, title: str, series: str, figure: Any,
                                 iteration: int | None = None, report_image: bool = False,
                                 report_interactive: bool = True) -> None:
        """Record a matplotlib figure (a ``Figure``, or ``matplotlib.pyplot`` for the current
        one) as a PNG image. ``report_image=True`` files it as an image (kind ``image``, as
        ClearML's debug samples) instead of a plot (kind ``matplotlib``). pipekit always
        stores a picture: ``report_interactive`` is accepted and ignored.

        :raises PipekitError: matplotlib is not installed.
        :raises ValueError: ``figure`` cannot be saved (it has no ``savefig``).
        """
        try:
            # lazy: matplotlib is optional and slow to import; only this report needs it
            import matplotlib  # noqa: F401
        except ImportError:
            raise PipekitError("report_matplotlib_figure needs matplotlib, which is not "
                               "installed: pip install matplotlib") from None
        savefig = getattr(figure, "savefig", None)
        if not callable(savefig):
            raise ValueError("figure must be a matplotlib Figure or matplotlib.pyplot, not "
                             f"{type(figure).__name__}")
        buffer = io.BytesIO()
        savefig(buffer, format="png")
        info = self._store_image([buffer.getvalue()])
        self._plot("image" if report_image else "matplotlib", title, series, iteration,
                   image=info)

    def _store_image(self, chunks: Iterable[bytes]) -> dict[str, Any]:
        """Put an image's bytes in the blob store; returns its record (digest, size, kind)."""
        sink = get_store().blobs.sink(inline_limit=-1)  # always a file, named by digest
        head = b""
        try:
            for chunk in chunks:
                if len(head) < 32:
                    head += chunk[:32 - len(head)]
                sink.write(chunk)
            if not sink.tell():
                raise ValueError("the image is empty")
            written = sink.commit()
        except BaseException:
            sink.abort()
            raise
        return {"digest": written.digest, "size": written.size, **plots.image_info(head)}

    def _plot(self, kind: str, title: str, series: str, iteration: int | None,
              **fields: Any) -> None:
        """Store one plot record (ClearML counts a missing iteration as 0)."""
        step = int(iteration or 0)
        get_store().add_report(self._task_id, "plot",
                               plots.record(kind, title, series, step, **fields),
                               title=str(title), series=str(series), iteration=step)

    def flush(self, wait: bool = True) -> bool:
        flush_metrics(self._task_id)
        return True


def _png_of(image: Any) -> bytes:
    """PNG bytes of a PIL image (saved by PIL itself) or a numpy array."""
    if hasattr(image, "save") and hasattr(image, "mode") and not hasattr(image, "dtype"):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if not hasattr(image, "dtype"):
        raise ValueError("report_image: image must be a numpy.ndarray or a PIL.Image, not "
                         f"{type(image).__name__}")
    return plots.png_from_array(image)
