"""``pipekit ui`` end to end in a real browser: Debian's Chromium driven by Playwright for
Python, against the real server (``pipekit ui --port 0``, a subprocess) on a store filled by
real pipeline runs (``pipekit run`` / ``pipekit rerun`` on the scripts in
``tests/ui_scripts/``).

The tests use the selectors of docs/ui-api.md's page contract (and a runs-list row's
checkbox, to pick runs to compare). Every page a test opens
fails the test on any console error or uncaught page error (a CSP violation is a console
error), on a visible error banner (``#error``), and on a traceback the server printed.

One server, one browser and one store serve the whole module (a new browser context, so a new
page, per test); the runs the read-only tests look at are made once. Nothing waits by
sleeping: Playwright's ``expect`` and ``wait_for_*`` with timeouts, and polls with deadlines.

Without Chromium (or Playwright) the tests are skipped, saying why; with
``PIPEKIT_REQUIRE_BROWSER=1`` (CI, .ci/run) they fail instead. ``PIPEKIT_UPDATE_SCREENSHOTS=1``
saves the screenshots of docs/ui.md (docs/img/ui-*.png, 1280×800) from these renders.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner
from conftest import _check_cascade_invariant
from ui_helpers import (
    PIPEKIT,
    REQUIRE_BROWSER,
    SCREENSHOTS,
    SCRIPTS,
    UPDATE_SCREENSHOTS,
    VIEWPORT,
    Background,
    UIServer,
    browser_missing,
    descendants,
    launch_chromium,
    poll,
    process_gone,
)

import pipekit
from pipekit.cli import cli
from pipekit.store import reset_store

TRAIN = str(SCRIPTS / "train.py")
GATED = str(SCRIPTS / "gated.py")
TIMEOUT_MS = 15_000  # an element the page shows at once (polling a loaded machine)
RUN_MS = 120_000  # a pipeline run to its end, on a loaded machine


# -- the store, the server, the browser ---------------------------------------------------------


# one worker under pytest-xdist: the module shares one server, browser and store
pytestmark = pytest.mark.xdist_group("ui_browser")

@pytest.fixture(scope="module")
def ui_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's store: the server and every process of these tests use it."""
    return tmp_path_factory.mktemp("ui") / "pipekit-home"


@pytest.fixture(scope="module")
def gates(ui_home: Path) -> Path:
    """Where gated.py's ``gate`` step leaves ``NAME.started`` and waits for ``NAME``."""
    folder = ui_home.parent / "gates"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def env(ui_home: Path, gates: Path) -> dict[str, str]:
    """The environment of every process the tests start: the module's store."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKIT_")}
    out.update(PIPEKIT_HOME=str(ui_home), PIPEKIT_CONFIG=str(ui_home.parent / "no-config.toml"),
               PIPEKIT_UI_GATES=str(gates), PYTHONUNBUFFERED="1")
    return out


@pytest.fixture(autouse=True)
def use_ui_home(pipekit_home: Path, ui_home: Path, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[Path]:
    """This process reads the module's store too (``runs show --json`` in-process); the
    cascade check (RELIABILITY 12) runs on it after every test, as conftest's does on its own."""
    monkeypatch.setenv("PIPEKIT_HOME", str(ui_home))
    pipekit.configure(home=ui_home)
    reset_store()
    yield ui_home
    _check_cascade_invariant(ui_home)
    reset_store()


@pytest.fixture(scope="module")
def background(env: dict[str, str], ui_home: Path) -> Iterator[dict[str, Background]]:
    """The slow builds of the performance tests, started first so that they overlap the other
    tests: a 500-step run (wide.py) and a task with 100,000 scalar points (scalars.py)."""
    logs = ui_home.parent
    started = {
        "wide": Background([sys.executable, str(SCRIPTS / "wide.py"), "500", "20"], env,
                           logs / "wide.err"),
        "scalars": Background([sys.executable, str(SCRIPTS / "scalars.py"), "100000"], env,
                              logs / "scalars.err"),
    }
    yield started
    for proc in started.values():
        proc.stop()


@pytest.fixture(scope="module")
def server(env: dict[str, str], ui_home: Path, background: dict[str, Background]
           ) -> Iterator[UIServer]:
    """``pipekit ui --port 0`` on the module's store; its first line is its URL."""
    ui = UIServer(env, ui_home.parent / "ui.err")
    yield ui
    ui.proc.terminate()
    code = ui.wait(timeout=30)
    ui.stop()
    assert code in (0, -15), f"pipekit ui exited {code} when terminated: {ui.describe()}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    why = browser_missing()
    if why is not None:
        if REQUIRE_BROWSER:
            pytest.fail(f"PIPEKIT_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


_WATCH_CSP = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
});
"""


@pytest.fixture
def dialogs() -> list[str]:
    """The messages of the dialogs (``confirm``) the page showed; each was accepted. A test
    that does not ask for this fixture fails on any dialog."""
    return []


@pytest.fixture
def expected_errors() -> list[str]:
    """Patterns of console errors a test provokes on purpose (a refused request); any other
    console error fails the test."""
    return []


class Pages:
    """Opens pages, each in a browser context of its own (1280×800), and collects what would
    fail a test: console errors (but ``expected``), page errors, dialogs (each accepted)."""

    def __init__(self, browser: Any, expected: list[str], dialogs: list[str]) -> None:
        self.browser, self.expected, self.dialogs = browser, expected, dialogs
        self.problems: list[str] = []
        self.opened: list[Any] = []

    def new(self) -> Any:
        context = self.browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        tab = context.new_page()
        tab.add_init_script(_WATCH_CSP)
        tab.on("console", self._console)
        tab.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        tab.on("dialog", self._dialog)
        self.opened.append(tab)
        return tab

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and not any(re.search(p, msg.text) for p in self.expected):
            self.problems.append(f"console {msg.type}: {msg.text} "
                                 f"({msg.location.get('url', '')})")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.accept()

    def close(self) -> list[str]:
        """Close every page; what went wrong (a visible ``#error`` banner too)."""
        for tab in self.opened:
            banner = tab.locator("#error")
            if banner.count() and banner.first.is_visible() and banner.first.inner_text().strip():
                self.problems.append(f"error banner: {banner.first.inner_text().strip()}")
            tab.context.close()
        return self.problems


@pytest.fixture
def pages(browser: Any, server: UIServer, dialogs: list[str], expected_errors: list[str],
          request: pytest.FixtureRequest) -> Iterator[Pages]:
    """Pages for a test, which fails on any console error, page error, visible ``#error``
    banner, unexpected dialog, or traceback the server printed meanwhile."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    tracebacks_before = len(server.tracebacks())
    opener = Pages(browser, expected_errors, dialogs)
    yield opener
    problems = opener.close()
    if dialogs and "dialogs" not in request.fixturenames:
        problems.append(f"unexpected dialogs: {dialogs}")
    problems += [f"server traceback: {t}" for t in server.tracebacks()[tracebacks_before:]]
    assert not problems, "the page or the server reported errors:\n" + "\n".join(problems)


@pytest.fixture
def page(pages: Pages) -> Any:
    """A new page, watched (see :func:`pages`)."""
    return pages.new()


def timed(pages: Pages, url: str, shown: Any, limit: float, tries: int = 3) -> list[float]:
    """Seconds from navigating a fresh page (a new context: nothing cached) to ``url`` until
    ``shown(page)`` returns; up to ``tries`` times, stopping at the first under ``limit``
    (a loaded machine's hiccup is not the page's). The last page stays open."""
    times = []
    for _ in range(tries):
        tab = pages.new()
        began = time.monotonic()
        tab.goto(url)
        shown(tab)
        times.append(round(time.monotonic() - began, 3))
        if times[-1] < limit:
            break
    return times


def screenshot(page: Any, name: str) -> None:
    """docs/img/NAME, only with PIPEKIT_UPDATE_SCREENSHOTS=1 (a normal run leaves the tree)."""
    if UPDATE_SCREENSHOTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / name))


def test_the_watch_catches_csp_violations_and_page_errors(pages: Pages, server: UIServer
                                                         ) -> None:
    """What the other tests rely on: an inline script (refused by the server's
    Content-Security-Policy) and an uncaught exception are each reported."""
    tab = pages.new()
    tab.goto(server.url("/runs"))
    tab.wait_for_selector("#main")
    tab.evaluate("""() => {
      const s = document.createElement("script");
      s.textContent = "window.__ran = true";
      document.body.append(s);
      setTimeout(() => { throw new Error("boom from a test"); }, 0);
    }""")

    def reported() -> bool:
        tab.evaluate("0")  # (Playwright delivers the page's events while it is called)
        return (any("CSP violation: script-src" in p for p in pages.problems)
                and any("page error: boom from a test" in p for p in pages.problems))

    poll(reported, timeout=10, what=f"both problems to be reported, got {pages.problems}")
    assert tab.evaluate("window.__ran") is None, "an inline script ran despite the CSP"
    pages.problems.clear()


# -- the runs ---------------------------------------------------------------------------------


def pk(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    """``pipekit ARGS`` to its end (a real process); its stdout."""
    import subprocess

    proc = subprocess.run([PIPEKIT, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def run_id_of(stdout: str) -> str:
    found = re.search(r"^run ([0-9a-f]{32})$", stdout, re.M)
    assert found, stdout
    return found.group(1)


def show(run_id: str) -> dict[str, Any]:
    """``pipekit runs show RUN --json``: the store's view of the run."""
    result = CliRunner().invoke(cli, ["runs", "show", run_id, "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout)


def statuses(view: dict[str, Any]) -> dict[str, str]:
    return {n["name"]: n["status"] for n in view["nodes"]}


@pytest.fixture(scope="module")
def runs(env: dict[str, str], server: UIServer) -> dict[str, str]:
    """Two completed runs of train.py: ``first`` with the defaults, ``second`` its rerun with
    ``lr=0.5`` (``prepare`` cached: its input did not change)."""
    first = run_id_of(pk(env, "run", TRAIN))
    second = run_id_of(pk(env, "rerun", first, "--param", "lr=0.5"))
    return {"first": first, "second": second}


def open_route(page: Any, server: UIServer, route: str) -> None:
    page.goto(server.url(route))


def node(page: Any, name: str) -> Any:
    return page.locator(f'[data-node="{name}"]')


# -- the tests --------------------------------------------------------------------------------


def test_the_runs_list_shows_each_run_with_its_status(page: Any, server: UIServer,
                                                      runs: dict[str, str]) -> None:
    from playwright.sync_api import expect

    open_route(page, server, "/runs")
    for run_id in runs.values():
        expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_attribute(
            "data-status", "completed")
    expect(page.locator(f'tr[data-run="{runs["second"]}"]')).to_contain_text("ui-train")


@pytest.mark.parametrize("which", ["first", "second"])
def test_the_run_page_shows_every_node_with_its_status_in_the_store(
        page: Any, server: UIServer, runs: dict[str, str], which: str) -> None:
    from playwright.sync_api import expect

    run_id = runs[which]
    view = show(run_id)
    expected = statuses(view)
    assert expected == {"prepare": "cached" if which == "second" else "completed",
                        "train": "completed", "evaluate": "completed", "report": "completed"}
    open_route(page, server, f"/run/{run_id}")
    expect(page.locator("#run-status")).to_have_text(view["status"])
    for name, status in expected.items():
        expect(node(page, name)).to_have_attribute("data-status", status)
    expect(page.locator("[data-node]")).to_have_count(len(expected))
    if which == "second":
        screenshot(page, "ui-run.png")


def test_a_step_shows_its_log_parameters_and_scalar_chart(page: Any, server: UIServer,
                                                          runs: dict[str, str]) -> None:
    from playwright.sync_api import expect

    open_route(page, server, f"/run/{runs['first']}")
    panel = page.locator("#step-panel")
    # prepare: its parameter and the lines it printed
    node(page, "prepare").click()
    panel.locator('[data-tab="parameters"]').click()
    expect(panel.locator('table.params tr[data-param="kwargs/rows"]')).to_contain_text("4")
    panel.locator('[data-tab="log"]').click()
    log = page.locator("pre#log")
    expect(log).to_contain_text("prepare: row 0 of 4")
    expect(log).to_contain_text("prepare: row 3 of 4")
    expect(log).to_contain_text("prepare: done")
    # train: its parameters and the loss it reported over 5 epochs, one chart per title
    node(page, "train").click()
    panel.locator('[data-tab="parameters"]').click()
    expect(panel.locator('table.params tr[data-param="kwargs/lr"]')).to_contain_text("0.1")
    expect(panel.locator('table.params tr[data-param="kwargs/epochs"]')).to_contain_text("5")
    panel.locator('[data-tab="scalars"]').click()
    chart = panel.locator('.chart[data-title="loss"]')
    expect(chart.locator("canvas").first).to_be_visible()
    expect(chart).to_contain_text("train")  # a series per series name (uPlot's legend)
    expect(chart).to_contain_text("validation")
    screenshot(page, "ui-step.png")
    panel.locator('[data-tab="log"]').click()
    expect(log).to_contain_text("train: epoch 4 loss=")


def test_compare_highlights_the_changed_parameter(page: Any, server: UIServer,
                                                  runs: dict[str, str]) -> None:
    from playwright.sync_api import expect

    # pick the two runs in the runs list, then Compare
    open_route(page, server, "/runs")
    expect(page.locator("#compare-runs")).to_be_disabled()
    for run_id in (runs["first"], runs["second"]):
        page.locator(f'tr[data-run="{run_id}"] input[type="checkbox"]').check()
    page.locator("#compare-runs").click()
    page.wait_for_url(re.compile(r"#/compare\?runs="))
    assert set(page.url.split("runs=")[1].split(",")) == {runs["first"], runs["second"]}
    table = page.locator("table#compare-params")
    expect(table.locator('tr[data-param="lr"]')).to_have_class(re.compile(r"\bdiffers\b"))
    expect(table.locator('tr[data-param="lr"]')).to_contain_text("0.5")
    for same in ("rows", "epochs", "note"):
        row = table.locator(f'tr[data-param="{same}"]')
        expect(row).to_be_visible()
        expect(row).not_to_have_class(re.compile(r"\bdiffers\b"))
    # the steps' parameters too: train's lr changed, prepare's rows did not
    expect(table.locator('tr[data-param="train/kwargs/lr"]')).to_have_class(
        re.compile(r"\bdiffers\b"))
    expect(table.locator('tr[data-param="prepare/kwargs/rows"]')).not_to_have_class(
        re.compile(r"\bdiffers\b"))
    expect(page.locator('.chart[data-title="train: loss"] canvas').first).to_be_visible()
    screenshot(page, "ui-compare.png")


def test_new_run_starts_a_run_with_the_changed_parameter(page: Any, server: UIServer,
                                                         runs: dict[str, str]) -> None:
    from playwright.sync_api import expect

    first = runs["first"]
    open_route(page, server, f"/run/{first}")
    page.locator("#new-run").click()
    form = page.locator("form#new-run-form")
    expect(form).to_be_visible()
    rows = form.locator('input[name="rows"]')
    expect(rows).to_have_value("4")  # the run's value, as its type shows it
    expect(form.locator('input[name="lr"]')).to_have_value("0.1")
    rows.fill("6")
    form.locator('input[name="note"]').fill("from the page")
    screenshot(page, "ui-new-run.png")
    form.locator('button[type="submit"]').click()
    # the page goes to the new run, which runs to its end
    page.wait_for_url(re.compile(rf"#/run/(?!{first})[0-9a-f]{{32}}$"))
    new = re.search(r"#/run/([0-9a-f]{32})$", page.url).group(1)
    expect(page.locator("#run-status")).to_have_text("completed", timeout=RUN_MS)
    view = show(new)
    assert view["status"] == "completed"
    assert view["origin"] == first
    assert view["parameters"] == {"rows": "6", "lr": "0.1", "epochs": "5",
                                  "note": "from the page"}
    assert statuses(view) == {"prepare": "completed", "train": "completed",
                              "evaluate": "completed", "report": "completed"}
    for name, status in statuses(view).items():
        expect(node(page, name)).to_have_attribute("data-status", status)
    node(page, "prepare").click()
    page.locator('#step-panel [data-tab="log"]').click()
    expect(page.locator("pre#log")).to_contain_text("prepare: row 5 of 6")
    # the server started the run as a process of its own, which has ended (and was reaped)
    poll(lambda: not [p for p in psutil.Process(server.pid).children(recursive=True)
                      if p.status() != psutil.STATUS_ZOMBIE and new in " ".join(p.cmdline())],
         timeout=30, what=f"the process that ran {new} to end")


def start_gated(env: dict[str, str], gates: Path, gate: str) -> tuple[Background, str, int]:
    """gated.py in the background until its ``gate`` step waits: (process, run id, step pid)."""
    proc = Background([PIPEKIT, "run", GATED, "--param", f"gate={gate}", "--param",
                       "timeout=300"], env, gates / f"{gate}.err")
    run_id = proc.wait_line(r"^run ([0-9a-f]{32})$", timeout=60).group(1)
    started = gates / f"{gate}.started"
    poll(lambda: started.exists() and started.read_text(), timeout=60,
         what=f"gated.py's gate step to start ({proc.describe()})")
    return proc, run_id, int(started.read_text())


def test_a_node_goes_from_running_to_completed_without_a_reload(
        page: Any, server: UIServer, env: dict[str, str], gates: Path) -> None:
    from playwright.sync_api import expect

    proc, run_id, _ = start_gated(env, gates, "live")
    try:
        open_route(page, server, f"/run/{run_id}")
        expect(node(page, "first")).to_have_attribute("data-status", "completed")
        expect(node(page, "gate")).to_have_attribute("data-status", "in_progress")
        expect(node(page, "last")).to_have_attribute("data-status", "pending")
        expect(page.locator("#run-status")).to_have_text("in_progress")
        page.evaluate("window.__sameDocument = true")
        (gates / "live").touch()
        expect(node(page, "gate")).to_have_attribute("data-status", "completed",
                                                     timeout=RUN_MS)
        expect(node(page, "last")).to_have_attribute("data-status", "completed",
                                                     timeout=RUN_MS)
        expect(page.locator("#run-status")).to_have_text("completed", timeout=RUN_MS)
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
        assert proc.wait(timeout=60) == 0, proc.describe()
        assert statuses(show(run_id)) == {"first": "completed", "gate": "completed",
                                          "last": "completed"}
    finally:
        proc.stop()


def test_abort_stops_a_running_run_and_leaves_no_process(
        page: Any, server: UIServer, env: dict[str, str], gates: Path, dialogs: list[str],
        expected_errors: list[str]) -> None:
    from playwright.sync_api import expect

    proc, run_id, step_pid = start_gated(env, gates, "abort")
    try:
        processes = [proc.pid, *descendants(proc.pid)]
        assert step_pid in processes, (step_pid, processes)
        # a page opened without the token is read-only: the abort is refused, the run goes on
        expected_errors.append(r"status of 403")
        page.goto(server.url(f"/run/{run_id}", token=False))
        expect(node(page, "gate")).to_have_attribute("data-status", "in_progress")
        page.locator("#abort-run").click()  # a confirm dialog, if any, is accepted
        expect(page.locator("#error")).to_contain_text("token")
        assert show(run_id)["status"] == "in_progress"
        assert proc.proc.poll() is None and not process_gone(step_pid)
        # with the token, as the printed URL carries it
        open_route(page, server, f"/run/{run_id}")
        expect(node(page, "gate")).to_have_attribute("data-status", "in_progress")
        expect(page.locator("#run-status")).to_have_text("in_progress")
        page.locator("#abort-run").click()
        expect(page.locator("#run-status")).to_have_text("stopped")
        expect(node(page, "gate")).to_have_attribute("data-status", "stopped")
        expect(page.locator("#abort-run")).to_be_hidden()
        view = show(run_id)
        assert view["status"] == "stopped"
        assert statuses(view)["gate"] == "stopped"
        assert statuses(view)["last"] in {"stopped", "skipped"}, statuses(view)
        # pipekit run reports the stop and exits; the step's process was killed
        assert proc.wait(timeout=60) == 1, proc.describe()
        assert "stopped" in proc.stderr(), proc.describe()
        poll(lambda: all(process_gone(pid) for pid in processes), timeout=30,
             what=f"the run's processes {processes} to end")
        assert not (gates / "abort").exists()
    finally:
        proc.stop()


# -- performance ------------------------------------------------------------------------------


@pytest.mark.exclusive
def test_a_500_node_run_page_renders_in_under_3_s(pages: Pages, server: UIServer,
                                                   background: dict[str, Background]) -> None:
    from playwright.sync_api import expect

    from pipekit.store import get_store

    wide = background["wide"]
    assert wide.wait(timeout=300) == 0, wide.describe()
    (run,) = get_store().list_runs(name="ui-wide")

    def every_node(tab: Any) -> None:
        tab.wait_for_function("n => document.querySelectorAll('[data-node]').length >= n",
                              arg=500, timeout=30_000)

    times = timed(pages, server.url(f"/run/{run.id}"), every_node, 3.0)
    print(f"500 nodes: every node drawn {times} s after navigating")
    assert min(times) < 3.0, f"the 500-node run page took {times} s to draw every node"
    tab = pages.opened[-1]
    expect(tab.locator("[data-node]")).to_have_count(500)
    expect(tab.locator('[data-node][data-status="completed"]')).to_have_count(500)
    expect(tab.locator("#run-status")).to_have_text("completed")


@pytest.mark.exclusive
def test_100000_scalar_points_plot_in_under_2_s(pages: Pages, server: UIServer,
                                                background: dict[str, Background]) -> None:
    from playwright.sync_api import expect

    scalars = background["scalars"]
    assert scalars.wait(timeout=300) == 0, scalars.describe()
    task_id = scalars.lines[-1].strip()

    def chart(tab: Any) -> None:
        tab.locator('#step-panel [data-tab="scalars"]').click()
        tab.wait_for_selector('.chart[data-title="big"] canvas', timeout=30_000)

    times = timed(pages, server.url(f"/task/{task_id}"), chart, 2.0)
    print(f"100,000 points: the chart drawn {times} s after navigating")
    assert min(times) < 2.0, f"the chart of 100,000 points took {times} s to draw"
    legend = pages.opened[-1].locator('.chart[data-title="big"]')
    expect(legend).to_contain_text("a")
    expect(legend).to_contain_text("b")


# -- at the end: every run so far -------------------------------------------------------------


def test_the_runs_list_shows_every_run_as_the_store_has_it(page: Any, server: UIServer,
                                                          runs: dict[str, str]) -> None:
    """After the tests above: completed, cached, stopped runs, a New run and a 500-step one."""
    from playwright.sync_api import expect

    listed = json.loads(CliRunner().invoke(cli, ["runs", "ls", "--json"]).stdout)
    assert {r["status"] for r in listed} >= {"completed", "stopped"}, listed
    open_route(page, server, "/runs")
    for run in listed:
        expect(page.locator(f'tr[data-run="{run["id"]}"]')).to_have_attribute(
            "data-status", run["status"])
    expect(page.locator("tr[data-run]")).to_have_count(len(listed))
    screenshot(page, "ui-runs.png")


# -- the docs' screenshots --------------------------------------------------------------------


def test_the_docs_screenshots_are_these_tests_renders() -> None:
    """docs/ui.md shows exactly the screenshots the tests above save, each a 1280×800 PNG
    (PIPEKIT_UPDATE_SCREENSHOTS=1 makes them again)."""
    import struct

    saved = set(re.findall(r'screenshot\(page, "([^"]+)"\)', Path(__file__).read_text()))
    shown = set(re.findall(r"\]\(img/([^)]+)\)", (SCREENSHOTS.parent / "ui.md").read_text()))
    assert shown == saved, (shown, saved)
    for name in sorted(saved):
        head = (SCREENSHOTS / name).read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n", name
        assert struct.unpack(">II", head[16:24]) == (VIEWPORT["width"], VIEWPORT["height"]), name
