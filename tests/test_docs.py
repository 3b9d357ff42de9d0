"""Docs that run: every runnable code block of docs/*.md and every example in docs/examples/.

How a doc marks its code blocks (the fence's info string; renderers take only its first word
as the language, as CommonMark says, so GitHub still highlights these as Python):

- ```` ```python runnable ```` -- a complete program. It is saved as a script and run with
  this interpreter, alone: in a fresh store (its own ``PIPEKIT_HOME``, no config file),
  from an empty temporary working folder (``TMPDIR`` is inside it too), with the ``pipekit``
  command on ``PATH``. It must exit 0 without printing a traceback.
- ```` ```python file=NAME ```` -- a file a later block needs (a script it runs, a module it
  imports): saved as ``NAME`` (a relative path) in the working folder of every runnable block
  after it on the same page. ```` ```python runnable file=NAME ```` is both: saved as
  ``NAME`` and run as ``python NAME``.
- ```` ```python from=examples/NAME.py ```` -- a verbatim excerpt of an example (a path
  relative to docs/): the example must contain the block's lines, in one piece (a first line
  ``# <path>`` naming the file may precede them). The example itself is run below.
- any other block is a fragment (a signature, a line of a larger program) and is not run.

A failing block is reported with its page and line, and what it printed. Scripts are padded
with blank lines so that a traceback's line numbers are the page's line numbers.

Examples (docs/examples/*.py) run the same way, from an empty folder, with the arguments
their docstring shows (``EXAMPLES``). Those that another test already runs are listed in
``COVERED_ELSEWHERE`` with that test, which must name them; so are the two doc blocks that
other tests extract and run (with an agent, or checking what they print).

Cases run in parallel (``PIPEKIT_DOCS_JOBS`` processes at once, default 3), each in its own
store and folder; the tests then collect the results in order.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES_DIR = DOCS / "examples"

#: example -> the argument lists to run it with (one run each), as its docstring says.
EXAMPLES: dict[str, list[list[str]]] = {  # the longest first: they start first
    "failure_handling.py": [[]],
    "execution_modes.py": [[]],
    "pipeline_from_tasks.py": [[]],
    "decorators.py": [[], ["debug"]],
    "pipeline_from_functions.py": [[]],
    "task_demo.py": [[]],
    "callbacks.py": [[]],
    "train_task.py": [["--epochs", "5"]],
}

#: what another test runs already -> that test file (which must mention it).
COVERED_ELSEWHERE: dict[str, str] = {
    "examples/demo.py": "tests/test_demo.py",
    "examples/custom_random_search.py": "tests/test_agent.py",  # with agents it starts
    "examples/resume.py": "tests/test_resume.py",
    "examples/caching.py": "tests/test_caching.py",  # run twice: the second run is cached
    # Unmarked doc blocks that these tests take as the page's (first or last) ```python block:
    "agents.md": "tests/test_agent.py",  # the example needs an agent: the test starts one
    "storage.md": "tests/test_storage.py",  # the first block: the test checks its output
}

ATTRIBUTES = re.compile(r"^(runnable|file=\S+|from=\S+)$")
TIMEOUT = 240  # seconds for one block or example, however loaded the machine
JOBS = int(os.environ.get("PIPEKIT_DOCS_JOBS", "3"))


@dataclass
class Block:
    page: str  # e.g. "tasks.md"
    line: int  # 1-based line of the opening fence
    language: str
    attributes: list[str]
    text: str

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"

    def attribute(self, key: str) -> str | None:
        return next((a.split("=", 1)[1] for a in self.attributes if a.startswith(key + "=")),
                    None)

    @property
    def runnable(self) -> bool:
        return "runnable" in self.attributes

    def script(self) -> str:
        """The block as a file whose line numbers are the page's."""
        return "\n" * self.line + self.text


def blocks(page: Path) -> list[Block]:
    """Every fenced code block of a Markdown page, with its fence's line."""
    found = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^(`{3,}|~{3,})\s*(.*)$", lines[i])
        if opening:
            fence, info = opening.groups()
            end = next((j for j in range(i + 1, len(lines))
                        if re.match(rf"^{fence[0]}{{{len(fence)},}}\s*$", lines[j])), None)
            assert end is not None, f"docs/{page.name}:{i + 1}: code block never closed"
            words = info.split()
            found.append(Block(page.name, i + 1, words[0] if words else "", words[1:],
                               "\n".join(lines[i + 1:end]) + "\n"))
            i = end
        i += 1
    return found


PAGES = sorted(DOCS.glob("*.md"))
BLOCKS = [b for page in PAGES for b in blocks(page)]
RUNNABLE = [b for b in BLOCKS if b.runnable]
EXCERPTS = [b for b in BLOCKS if b.attribute("from")]


# -- running a case -----------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    where: str  # what a failure names: page and line, or the example
    argv: list[str]  # relative to the working folder, or absolute
    files: dict[str, str] = field(default_factory=dict)  # written into the folder first


@dataclass
class Result:
    returncode: int | None  # None: it timed out
    output: str
    seconds: float


def block_case(block: Block) -> Case:
    files = {}
    for other in BLOCKS:  # the page's file= blocks before this one, the later one winning
        if other.page == block.page and other.line < block.line and other.attribute("file"):
            files[other.attribute("file")] = other.script()
    name = block.attribute("file") or f"{Path(block.page).stem.replace('-', '_')}_md.py"
    files[name] = block.script()
    return Case(block.where, block.where, [sys.executable, name], files)


def example_cases() -> list[Case]:
    return [Case(f"{name} {' '.join(args)}".strip(), f"docs/examples/{name} {shlex.join(args)}",
                 [sys.executable, str(EXAMPLES_DIR / name), *args])
            for name, arg_lists in EXAMPLES.items() for args in arg_lists]


def run_case(case: Case) -> Result:
    with tempfile.TemporaryDirectory(prefix="pipekit-docs-") as tmp:
        work, home, scratch = (Path(tmp) / d for d in ("work", "home", "tmp"))
        work.mkdir()
        scratch.mkdir()
        for name, text in case.files.items():
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKIT_")}
        env.update(PIPEKIT_HOME=str(home), PIPEKIT_CONFIG=str(Path(tmp) / "no-config.toml"),
                   TMPDIR=str(scratch), PYTHONUNBUFFERED="1",
                   PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
        began = time.monotonic()
        proc = subprocess.Popen(case.argv, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=TIMEOUT)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            code = None
        finally:  # whatever it left running in its process group (an agent, a pool)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return Result(code, output, time.monotonic() - began)


def check(case: Case, result: Result) -> None:
    tail = result.output[-6000:]
    if result.returncode is None:
        pytest.fail(f"{case.where}: still running after {TIMEOUT} s; it printed:\n{tail}")
    if result.returncode != 0:
        pytest.fail(f"{case.where}: exit status {result.returncode}; it printed:\n{tail}")
    if "Traceback (most recent call last)" in result.output:
        pytest.fail(f"{case.where}: exit status 0, but it printed a traceback:\n{tail}")


def runs_pipelines(block: Block) -> bool:
    return any(word in block.text for word in ("start_locally", "run_locally", "subprocess"))


# The examples, then the blocks that run pipelines, then the rest: long cases start first.
CASES = {c.id: c for c in example_cases()} | {
    b.where: block_case(b) for b in sorted(RUNNABLE, key=lambda b: not runs_pipelines(b))}


@pytest.fixture(scope="module")
def launched(request: pytest.FixtureRequest, cpu_share):
    """Start every selected case at once (``JOBS`` at a time), in the order the tests run.

    Under pytest-xdist the cases are one group (``xdist_group``), run by one worker, which
    holds the CPU shared (``cpu_share``, tests/conftest.py) until the last case has ended:
    they run in the background across several tests.
    """
    wanted = [item.callspec.params["case_id"] for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec")
              and "case_id" in item.callspec.params]
    with contextlib.nullcontext() if cpu_share is None else cpu_share.shared():
        pool = ThreadPoolExecutor(max_workers=JOBS, thread_name_prefix="docs")
        futures: dict[str, Future[Result]] = {cid: pool.submit(run_case, CASES[cid])
                                              for cid in dict.fromkeys(wanted)}
        yield futures
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.timeout(2 * TIMEOUT)
@pytest.mark.xdist_group("docs")
@pytest.mark.parametrize("case_id", list(CASES))
def test_it_runs(case_id: str, launched: dict[str, Future[Result]]) -> None:
    case = CASES[case_id]
    check(case, launched[case_id].result())


# -- what is not run here -----------------------------------------------------------------------


@pytest.mark.parametrize("block", EXCERPTS, ids=[b.where for b in EXCERPTS])
def test_an_excerpt_is_in_its_example(block: Block) -> None:
    source = (DOCS / block.attribute("from")).resolve()
    assert source.is_file(), f"{block.where}: from={block.attribute('from')} is not a file"
    lines = block.text.splitlines()
    if lines and lines[0].startswith("# ") and lines[0][2:].strip().endswith(source.name):
        lines = lines[1:]
    text = "\n".join(lines) + "\n"
    assert text in source.read_text(), (
        f"{block.where}: the block is not a verbatim part of {source.relative_to(ROOT)}; "
        "copy it from the file again")
    if source.parent == EXAMPLES_DIR:  # (steps/*.py are run by pipeline_from_tasks.py)
        example = f"examples/{source.name}"
        assert source.name in EXAMPLES or example in COVERED_ELSEWHERE, (
            f"{block.where}: {example} is run by no test")


def test_every_example_is_run_here_or_elsewhere() -> None:
    examples = {p.name for p in EXAMPLES_DIR.glob("*.py")}
    elsewhere = {Path(k).name for k in COVERED_ELSEWHERE if k.startswith("examples/")}
    assert examples == set(EXAMPLES) | elsewhere, (
        "run each example in docs/examples/ here (EXAMPLES, with the arguments its docstring "
        "shows) or list the test that runs it in COVERED_ELSEWHERE")
    assert not set(EXAMPLES) & elsewhere


@pytest.mark.parametrize("what", list(COVERED_ELSEWHERE))
def test_what_is_covered_elsewhere_is_named_there(what: str) -> None:
    assert (DOCS / what).is_file(), what
    test = (ROOT / COVERED_ELSEWHERE[what]).read_text()
    assert Path(what).name in test, f"{COVERED_ELSEWHERE[what]} does not mention {what}"


def test_every_marking_is_known() -> None:
    """A mistyped attribute (``runable``, ``file:x.py``) would silently leave a block unrun."""
    for block in BLOCKS:
        for attribute in block.attributes:
            assert ATTRIBUTES.match(attribute), (
                f"{block.where}: unknown attribute {attribute!r} in the fence's info string "
                "(known: runnable, file=NAME, from=PATH; see tests/test_docs.py)")
        if block.attributes:
            assert block.language == "python", f"{block.where}: only python blocks are marked"
        name = block.attribute("file")
        if name is not None:
            assert not Path(name).is_absolute() and ".." not in Path(name).parts, block.where
        assert not (block.runnable and block.attribute("from")), (
            f"{block.where}: an excerpt is checked against its example, not run")
    assert len(RUNNABLE) >= 35, "fewer runnable blocks than the docs had"


# -- the shell lines of the docs ----------------------------------------------------------------


def shout(word):
    print(word.upper())
    return word


def test_a_reader_that_stops_early_is_not_an_error(pipekit_home: Path) -> None:
    """``pipekit export RUN | head -1`` (docs/runs.md): when the reader has gone, the command
    ends quietly with 141, as one killed by SIGPIPE would: no ``Error: BrokenPipeError``."""
    from pipekit import PipelineController

    pipe = PipelineController(name="piped", project="examples")
    pipe.add_function_step("one", shout, {"word": "hello"}, ["word"])
    pipe.start_locally(run_pipeline_steps_locally=True, executor="inline")
    step = pipe.get_pipeline_dag()["one"].executed
    cli = str(Path(sys.executable).parent / "pipekit")
    commands = [["export", pipe.id], ["export", pipe.id, "--format", "dot"], ["runs", "ls"],
                ["runs", "show", pipe.id], ["tasks", "ls", "--json"], ["logs", step]]
    procs = []
    for command in commands:
        read, write = os.pipe()
        os.close(read)  # the reader has gone before anything is written
        procs.append(subprocess.Popen([cli, *command], stdout=write, stderr=subprocess.PIPE,
                                      text=True))
        os.close(write)
    for command, proc in zip(commands, procs, strict=True):
        _, err = proc.communicate(timeout=120)
        assert (proc.returncode, err) == (141, ""), f"pipekit {' '.join(command)}: {err}"
