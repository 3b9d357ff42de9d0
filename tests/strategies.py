"""Hypothesis strategies shared by pipekit's tests.

Import them as ``from strategies import ...`` (pytest puts ``tests/`` on ``sys.path``).

* :func:`valid_names` — names that :func:`pipekit.models.check_name` must accept (artifact,
  model and step names that may become file names).
* :func:`hostile_names` — names it must reject: path traversal (``../x``, ``%2e%2e/x``),
  absolute paths (``/etc/passwd``), shell metacharacters (``a;b``), NUL bytes, ``.``/``..``,
  the empty string, over-long names and names with a bad first character.
* :func:`param_keys`, :func:`param_values`, :func:`param_dicts` — what ``Task.connect`` takes.
* :func:`json_values` and one strategy per built-in serializer (:func:`serializer_values`
  draws a ``(serializer name, value)`` pair); files and folders are described as data
  (:func:`file_contents`, :func:`folder_trees`) and written to disk with
  :func:`materialize_tree`, because strategies must not have side effects.
"""

from __future__ import annotations

import math
import os
import string
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

#: The allowed alphabet of a name after its first character (DESIGN §5).
NAME_FIRST = string.ascii_letters + string.digits
NAME_REST = NAME_FIRST + "._-"
NAME_MAX = 128

#: Hand-picked attacks on anything that turns a name into a path.
HOSTILE_EXAMPLES = (
    "",
    ".",
    "..",
    "../x",
    "../../etc/passwd",
    "..\\x",
    "/etc/passwd",
    "/tmp/x",
    "a/b",
    "a\\b",
    "a;b",
    "a|b",
    "a&&b",
    "$(id)",
    "`id`",
    "%2e%2e/x",
    "%2e%2e%2fx",
    "..%2fx",
    "a\x00b",
    "\x00",
    "a\nb",
    "a b",
    " a",
    "a ",
    ".hidden",
    "-rf",
    "_x",
    "~root",
    "a" * (NAME_MAX + 1),
    "x" * 4096,
    "é",
    "a\u202eb",
    "con:",
    "a:b",
    "*",
    "a?b",
)


@st.composite
def valid_names(draw: st.DrawFn, max_size: int = NAME_MAX) -> str:
    """A name ``check_name`` accepts: ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``."""
    first = draw(st.sampled_from(NAME_FIRST))
    rest = draw(st.text(alphabet=NAME_REST, max_size=max_size - 1))
    return first + rest


@st.composite
def hostile_names(draw: st.DrawFn) -> str:
    """A name that must be refused wherever a name becomes part of a path.

    Mixes the hand-picked :data:`HOSTILE_EXAMPLES` with generated ones: a valid name with a
    path separator, NUL, control, shell or non-ASCII character spliced in; a valid tail behind
    a bad first character; traversal prefixes; and names one character over the limit.
    """
    kind = draw(st.integers(min_value=0, max_value=4))
    if kind == 0:
        return draw(st.sampled_from(HOSTILE_EXAMPLES))
    if kind == 1:
        base = draw(valid_names(max_size=60))
        bad = draw(st.one_of(
            st.sampled_from("/\\\x00\n\r\t ;|&$`'\"<>*?:%~!#(){}[]"),
            st.characters(blacklist_categories=("Cs",), blacklist_characters=NAME_REST),
        ))
        at = draw(st.integers(min_value=0, max_value=len(base)))
        return base[:at] + bad + base[at:]
    if kind == 2:
        first = draw(st.sampled_from("._-/\\ ~%"))
        return first + draw(st.text(alphabet=NAME_REST, max_size=20))
    if kind == 3:
        prefix = draw(st.sampled_from(["../", "..\\", "/", "./../", "%2e%2e/", "..%2f",
                                       "%2e%2e%2f", "....//"]))
        return prefix + draw(valid_names(max_size=20))
    return draw(st.text(alphabet=NAME_REST, min_size=NAME_MAX + 1, max_size=NAME_MAX + 64)
                .map(lambda s: "a" + s))


def param_keys() -> st.SearchStrategy[str]:
    """A parameter key as ``Task.connect`` stores it (no ``/``: that separates sections)."""
    return st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)


def param_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2 ** 53), max_value=2 ** 53),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30),
    )


def param_values() -> st.SearchStrategy[Any]:
    """A JSON-ish parameter value: a scalar or a short list of scalars."""
    return st.one_of(param_scalars(), st.lists(param_scalars(), max_size=4))


@st.composite
def param_dicts(draw: st.DrawFn, max_size: int = 8, nested: bool = True) -> dict[str, Any]:
    """``{key: value}`` for ``Task.connect``; with ``nested`` one level of sub-dicts
    (stored as ``key/sub``)."""
    values = param_values()
    if nested:
        values = st.one_of(values, st.dictionaries(param_keys(), param_values(), min_size=1,
                                                   max_size=3))
    return draw(st.dictionaries(param_keys(), values, max_size=max_size))


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Values that survive a JSON round trip unchanged (what the ``json`` serializer takes):
    str-keyed dicts, lists, finite floats, unicode text (which must not name an existing
    file, or it would be stored as that file)."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(2 ** 63), max_value=2 ** 63),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(alphabet=st.characters(blacklist_categories=("Cs",))).filter(
            lambda s: "\x00" in s or not os.path.exists(s)),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(st.lists(children, max_size=5),
                                   st.dictionaries(st.text(max_size=10), children, max_size=5)),
        max_leaves=max_leaves,
    )


def bytes_values(max_size: int = 4096) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=max_size)


@st.composite
def numpy_arrays(draw: st.DrawFn, max_side: int = 16) -> Any:
    """A NumPy array of a plain (non-object) dtype, as the ``numpy`` serializer takes."""
    import numpy as np
    from hypothesis.extra import numpy as hnp

    dtype = draw(st.sampled_from([np.int8, np.int64, np.uint16, np.float32, np.float64,
                                  np.bool_, np.complex128]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=max_side))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def dataframes(draw: st.DrawFn, max_rows: int = 20) -> Any:
    """A pandas DataFrame with str column names and int/float/str/bool columns (Parquet)."""
    import pandas as pd

    n = draw(st.integers(min_value=0, max_value=max_rows))
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), min_size=1,
                          max_size=4, unique=True))
    columns = {}
    for name in names:
        kind = draw(st.sampled_from(["int", "float", "str", "bool"]))
        if kind == "int":
            col = draw(st.lists(st.integers(-(2 ** 62), 2 ** 62), min_size=n, max_size=n))
        elif kind == "float":
            col = draw(st.lists(st.floats(allow_nan=False, width=64), min_size=n, max_size=n))
        elif kind == "str":
            col = draw(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)),
                                        max_size=10), min_size=n, max_size=n))
        else:
            col = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        columns[name] = col
    return pd.DataFrame(columns)


def pickle_only_values() -> st.SearchStrategy[Any]:
    """Values JSON cannot hold unchanged, so they fall back to ``pickle``: tuples, int-keyed
    dicts, sets, NaN/inf, complex numbers."""
    scalar = st.one_of(st.integers(), st.text(max_size=10))
    return st.one_of(
        st.tuples(scalar, scalar),
        st.dictionaries(st.integers(), scalar, min_size=1, max_size=5),
        st.frozensets(scalar, max_size=5),
        st.sets(st.integers(), max_size=5),
        st.sampled_from([math.inf, -math.inf]),
        st.complex_numbers(allow_nan=False),
        st.lists(st.tuples(scalar), min_size=1, max_size=3),
    )


def file_contents(max_size: int = 65536) -> st.SearchStrategy[bytes]:
    """Bytes of a file to upload as a ``file`` artifact (write it with ``Path.write_bytes``)."""
    return st.binary(max_size=max_size)


def _tree_part() -> st.SearchStrategy[str]:
    return st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,11}", fullmatch=True).filter(
        lambda s: not s.endswith("."))


@st.composite
def folder_trees(draw: st.DrawFn, max_files: int = 8) -> dict[str, bytes]:
    """``{"relative/posix/path": bytes}`` describing a folder (no path is a prefix of
    another, so every key can be a file)."""
    paths = draw(st.lists(st.lists(_tree_part(), min_size=1, max_size=3).map("/".join),
                          min_size=1, max_size=max_files, unique_by=str.lower))
    chosen: list[str] = []
    for p in sorted(paths, key=len):
        lowered = p.lower()
        if any(lowered.startswith(c.lower() + "/") or c.lower().startswith(lowered + "/")
               for c in chosen):
            continue
        chosen.append(p)
    return {p: draw(st.binary(max_size=2048)) for p in chosen}


def materialize_tree(root: Path, tree: dict[str, bytes]) -> Path:
    """Write a :func:`folder_trees` value under ``root`` (created); returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    """The files under ``root`` as ``{"relative/posix/path": bytes}``."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


@st.composite
def serializer_values(draw: st.DrawFn) -> tuple[str, Any]:
    """``(serializer name, value)`` for a value that serializer (and no earlier one) takes:
    ``json``, ``bytes``, ``numpy``, ``pandas.parquet`` or ``pickle``."""
    kind = draw(st.sampled_from(["json", "bytes", "numpy", "pandas.parquet", "pickle"]))
    strategy = {
        "json": json_values(),
        "bytes": bytes_values(),
        "numpy": numpy_arrays(),
        "pandas.parquet": dataframes(),
        "pickle": pickle_only_values(),
    }[kind]
    return kind, draw(strategy)


# -- pipeline DAGs ----------------------------------------------------------------------------
#
# A DAG is described as data, ``{step: [parents]}``, in the order the steps are added; the
# strategies build acyclic ones by construction (a step's parents are drawn from the steps
# before it), so that mapping's order is always a topological order. :func:`dags` builds the
# :class:`pipekit.dag.Dag`; the named shapes (kedro's ``fan_out_fan_in`` and friends) are plain
# functions for example-based tests.


def step_names() -> st.SearchStrategy[str]:
    """A name ``Dag.add`` accepts: ``[A-Za-z0-9][A-Za-z0-9_-]*`` (no dots), not ``pipeline``."""
    return st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,11}", fullmatch=True).filter(
        lambda s: s != "pipeline")


@st.composite
def dag_edges(draw: st.DrawFn, min_size: int = 0, max_size: int = 12,
              max_parents: int = 3) -> dict[str, list[str]]:
    """``{step: [parents]}`` of an acyclic DAG; each step's parents come from earlier steps."""
    names = draw(st.lists(step_names(), min_size=min_size, max_size=max_size, unique=True))
    edges: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        edges[name] = draw(st.lists(st.sampled_from(names[:i]), max_size=max_parents,
                                    unique=True)) if i else []
    return edges


def dags(min_size: int = 0, max_size: int = 12, max_parents: int = 3) -> st.SearchStrategy[Any]:
    """A :class:`pipekit.dag.Dag` built from :func:`dag_edges`, steps added parents-first."""
    from pipekit.dag import Dag

    return dag_edges(min_size, max_size, max_parents).map(Dag.from_edges)


@st.composite
def reordered_edges(draw: st.DrawFn, edges: dict[str, list[str]]) -> dict[str, list[str]]:
    """The same DAG as ``edges`` with its steps, and each step's parents, in another order."""
    names = draw(st.permutations(list(edges)))
    return {name: draw(st.permutations(edges[name])) for name in names}


def chain(n: int, prefix: str = "step") -> dict[str, list[str]]:
    """``step0 -> step1 -> … -> step{n-1}``."""
    return {f"{prefix}{i}": [f"{prefix}{i - 1}"] if i else [] for i in range(n)}


def fan_out_fan_in(width: int = 3) -> dict[str, list[str]]:
    """``source`` feeding ``width`` independent branches that all feed ``sink``."""
    branches = [f"branch{i}" for i in range(width)]
    return {"source": [], **{b: ["source"] for b in branches}, "sink": branches}


def diamond() -> dict[str, list[str]]:
    """``a`` feeds ``b`` and ``c``, which both feed ``d``."""
    return {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def layered(depth: int, width: int, fan_in: int = 2) -> dict[str, list[str]]:
    """``depth`` layers of ``width`` steps; each step below the first has ``fan_in`` parents
    in the layer above (``L{k}_{j}`` waits for ``L{k-1}_{j}``, ``L{k-1}_{j+1}`` … mod width)."""
    edges: dict[str, list[str]] = {}
    for k in range(depth):
        for j in range(width):
            parents = {f"L{k - 1}_{(j + d) % width}" for d in range(fan_in)} if k else set()
            edges[f"L{k}_{j}"] = sorted(parents)
    return edges


# -- ${...} references ------------------------------------------------------------------------
#
# :func:`references` draws a :class:`pipekit.references.Ref` whose ``text`` is written here from
# the grammar (not by pipekit), so ``parse(ref.text) == ref`` checks the parser against an
# independent spelling. :func:`texts_with_references` embeds some in filler text;
# :func:`reference_fuzz_text` is arbitrary text rich in the parser's special characters.

#: Words that a return value of a function step cannot be called (they mean something else).
REFERENCE_KEYWORDS = ("id", "parameters", "artifacts", "models")
#: Pieces of reference syntax that fuzzed text is built from, next to arbitrary characters.
REFERENCE_FRAGMENTS = ("${", "$", "{", "}", "$$", "}}", ".", "..", ":", "env:", "pipeline",
                       "pipeline.", ".id", ".parameters.", "General/x", ".artifacts.", ".url",
                       ".models.", "output", "input", ".-1", ".0", "-", "/", " ", "\n", "\x00",
                       "step", "é", "\u202e", "9" * 30)


def _printable_chars(exclude: str) -> st.SearchStrategy[str]:
    """One printable character (``str.isprintable``) not in ``exclude``; space included."""
    return st.one_of(st.characters(blacklist_categories=("C", "Z"), blacklist_characters=exclude),
                     st.just(" "))


def reference_steps() -> st.SearchStrategy[str]:
    """A step name a reference can address: a valid step name without ``.`` (the separator),
    or any printable text without ``. : { }`` and without spaces at its ends; never
    ``pipeline``."""
    plain = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}", fullmatch=True)
    odd = st.text(_printable_chars(".:{}"), min_size=1, max_size=12).filter(
        lambda s: s == s.strip())
    return st.one_of(plain, odd).filter(lambda s: s != "pipeline")


@st.composite
def reference_names(draw: st.DrawFn, dots: bool = True) -> str:
    """A name inside a reference (parameter, artifact, return value …): printable text without
    ``{`` ``}`` or spaces at its ends; with ``dots``, one to three such parts joined by ``.``."""
    part = st.text(_printable_chars(".{}"), min_size=1, max_size=10).filter(
        lambda s: s == s.strip())
    parts = draw(st.lists(part, min_size=1, max_size=3 if dots else 1))
    return ".".join(parts)


@st.composite
def references(draw: st.DrawFn) -> Any:
    """A well-formed :class:`pipekit.references.Ref` of any kind, with its source text."""
    from pipekit.references import Kind, Ref

    kind = draw(st.sampled_from(list(Kind)))
    if kind is Kind.PIPELINE:
        name = draw(reference_names())
        return Ref(kind=kind, name=name, text=f"${{pipeline.{name}}}")
    if kind is Kind.ENV:
        name = draw(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True))
        return Ref(kind=kind, name=name, text=f"${{env:{name}}}")
    step = draw(reference_steps())
    if kind is Kind.ID:
        return Ref(kind=kind, step=step, text=f"${{{step}.id}}")
    if kind is Kind.PARAMETER:
        section = draw(st.sampled_from(["", "General/", "Args/", "kwargs/"]))
        name = section + draw(reference_names())
        return Ref(kind=kind, step=step, name=name, text=f"${{{step}.parameters.{name}}}")
    if kind is Kind.ARTIFACT:
        name = draw(reference_names().filter(lambda n: "." not in n or not n.endswith(".url")))
        return Ref(kind=kind, step=step, name=name, text=f"${{{step}.artifacts.{name}}}")
    if kind is Kind.ARTIFACT_URL:
        name = draw(reference_names())
        return Ref(kind=kind, step=step, name=name, text=f"${{{step}.artifacts.{name}.url}}")
    if kind is Kind.MODEL:
        which = draw(st.sampled_from(["output", "input"]))
        index = draw(st.integers(min_value=-999_999, max_value=999_999))
        attr = draw(st.sampled_from(["id", "url"]))
        return Ref(kind=kind, step=step, name=which, index=index, attr=attr,
                   text=f"${{{step}.models.{which}.{index}.{attr}}}")
    name = draw(reference_names(dots=False).filter(lambda n: n not in REFERENCE_KEYWORDS))
    return Ref(kind=kind, step=step, name=name, text=f"${{{step}.{name}}}")


def reference_free_text(max_size: int = 20) -> st.SearchStrategy[str]:
    """Text without ``${`` but with plenty of ``$``, ``{``, ``}`` and ``.``."""
    alphabet = st.one_of(st.sampled_from("${}.: -/"), st.characters(blacklist_categories=("Cs",)))
    return st.text(alphabet, max_size=max_size).filter(lambda s: "${" not in s)


@st.composite
def texts_with_references(draw: st.DrawFn, max_refs: int = 4) -> tuple[str, list[Any]]:
    """``(text, refs)``: the references in ``refs`` embedded, in order, in filler text that
    holds no ``${`` (a filler's last ``$`` meets a reference's own ``${``: ``$${`` forms no
    extra reference)."""
    refs = draw(st.lists(references(), max_size=max_refs))
    fillers = draw(st.lists(reference_free_text(), min_size=len(refs) + 1,
                            max_size=len(refs) + 1))
    pairs = zip(refs, fillers[1:], strict=True)
    text = fillers[0] + "".join(ref.text + filler for ref, filler in pairs)
    return text, refs


def reference_fuzz_text(max_pieces: int = 12) -> st.SearchStrategy[str]:
    """Arbitrary text made of reference syntax fragments, special and arbitrary characters
    (unicode, controls, NUL): most of it malformed, some of it well formed."""
    junk = st.one_of(st.sampled_from(REFERENCE_FRAGMENTS),
                     st.text(st.characters(blacklist_categories=("Cs",)), max_size=6))
    piece = st.one_of(
        junk,
        references().map(lambda ref: ref.text),
        _mutated_references(),
        st.lists(junk, max_size=5).map(lambda parts: "${" + "".join(parts) + "}"),
    )
    return st.lists(piece, max_size=max_pieces).map("".join)


@st.composite
def _mutated_references(draw: st.DrawFn) -> str:
    """A well-formed reference with one slice of it replaced by a fragment or a character."""
    text = draw(references()).text
    start = draw(st.integers(min_value=0, max_value=len(text)))
    stop = draw(st.integers(min_value=start, max_value=min(len(text), start + 3)))
    new = draw(st.one_of(st.sampled_from(REFERENCE_FRAGMENTS), st.characters(
        blacklist_categories=("Cs",)), st.just("")))
    return text[:start] + new + text[stop:]


def reference_fuzz_values() -> st.SearchStrategy[Any]:
    """Fuzzed text nested in lists, tuples and dicts (text keys), with a few non-text leaves."""
    leaves = st.one_of(reference_fuzz_text(), st.none(), st.integers(), st.binary(max_size=4))
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.lists(children, max_size=4).map(tuple),
            st.dictionaries(st.one_of(reference_fuzz_text(max_pieces=4), st.integers()),
                            children, max_size=4),
        ),
        max_leaves=12,
    )
