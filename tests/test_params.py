"""``pipekit.params``: stored strings come back as the values they were, and ``Section/key``
names are parsed strictly. Properties over generated values, plus the edge cases by name.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import param_dicts, param_keys, param_scalars, param_values

from pipekit import params as P
from pipekit.errors import ParameterError

#: A value ``connect`` may meet that is not None (``cast(..., like=None)`` has no type to
#: follow; the stored type name covers it, see below).
typed_values = st.one_of(
    param_values().filter(lambda v: v is not None),
    param_dicts(),
    st.tuples(param_scalars(), param_scalars()),
    st.sets(st.integers(), max_size=4),
    st.floats(allow_nan=False),  # infinities too: str(inf) == "inf" reads back
)


def _same(actual: object, expected: object) -> bool:
    """Equal, and of the same type all the way down (``1 == 1.0 == True`` is not enough)."""
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(  # type: ignore[union-attr]
            _same(actual[k], expected[k]) for k in expected)  # type: ignore[index]
    if isinstance(expected, (list, tuple)):
        return len(actual) == len(expected) and all(  # type: ignore[arg-type]
            _same(a, e) for a, e in zip(actual, expected, strict=True))  # type: ignore[call-overload]
    return actual == expected


@given(typed_values)
@example(True)
@example(False)
@example(0)
@example(-0.0)
@example(1e16)
@example(float("inf"))
@example("")
@example("None")
@example("True")
@example("[1, 2]")
@example([])
@example({})
@example({"a": {"b": [1, "x", None]}})
def test_cast_reads_back_what_to_text_wrote(value):
    text = P.to_text(value)
    assert isinstance(text, str)
    assert _same(P.cast(text, like=value), value)


@given(param_values())
def test_cast_by_stored_type_name_reads_back_every_value_including_none(value):
    assert _same(P.cast(P.to_text(value), stored_type=P.type_name(value)), value)


@given(param_dicts())
def test_connected_dicts_read_back_through_their_stored_parameters(mapping):
    params = P.to_params("Section", mapping)
    assert all(p.section == "Section" for p in params)
    assert len({p.key for p in params}) == len(params)
    read_back = {p.name: P.cast_param(p) for p in params}
    assert _same(read_back, dict(P.flatten(mapping)))


def _segment() -> st.SearchStrategy[str]:
    return st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                          blacklist_characters="/"), min_size=1, max_size=12)


@given(_segment(), st.lists(_segment(), min_size=1, max_size=3))
def test_split_name_accepts_section_slash_key(section, key_parts):
    key = "/".join(key_parts)
    assert P.split_name(f"{section}/{key}") == (section, key)


@given(param_keys())
def test_split_name_puts_a_bare_key_in_general(key):
    assert P.split_name(key) == ("General", key)
    assert P.split_name(key, default_section="Args") == ("Args", key)


@st.composite
def malformed_names(draw: st.DrawFn) -> str:
    section, key, other = draw(_segment()), draw(_segment()), draw(_segment())
    return draw(st.sampled_from([
        f"/{key}",                  # no section
        f"{section}/",              # no key
        f"{section}//{key}",        # empty first key part
        f"{section}/{key}/",        # trailing slash
        f"{section}/{key}//{other}",  # empty inner key part
        "/",
        "",
        " " * len(key),             # blank
    ]))


@given(malformed_names())
@example("a//b")
@example("/x")
@example("a/")
def test_split_name_rejects_malformed_names_naming_them(name):
    with pytest.raises(ParameterError) as info:
        P.split_name(name)
    assert repr(name) in str(info.value)
    assert info.value.parameter == name


@pytest.mark.parametrize("name", [None, 3, b"a/b"])
def test_split_name_rejects_non_strings(name):
    with pytest.raises(ParameterError, match="Section/key"):
        P.split_name(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    ("true", True), ("Yes", True), ("1", True), ("on", True),
    ("False", False), ("no", False), ("0", False), ("", False),
])
def test_bool_spellings(text, expected):
    assert P.cast(text, like=False) is expected


def test_an_int_may_be_written_as_a_whole_float():
    assert P.cast("3.0", like=1) == 3 and type(P.cast("3.0", like=1)) is int


@pytest.mark.parametrize(("text", "like", "kind"), [
    ("abc", 1, "int"),
    ("3.5", 1, "int"),
    ("x", 0.5, "float"),
    ("maybe", True, "bool"),
    ("[1", [0], "list"),
    ("[1]", {"a": 1}, "dict"),
    ("{'a': 1}", [1], "list"),
])
def test_cast_errors_name_the_parameter_value_and_type(text, like, kind):
    with pytest.raises(ParameterError) as info:
        P.cast(text, like=like, name="Args/x")
    message = str(info.value)
    assert "'Args/x'" in message and repr(text) in message and kind in message
    assert info.value.parameter == "Args/x"


def test_flatten_nests_with_slashes_and_keeps_empty_dicts_as_values():
    assert dict(P.flatten({"a": {"b": {"c": 1}, "d": {}}, "e": 2})) == {
        "a/b/c": 1, "a/d": {}, "e": 2}
