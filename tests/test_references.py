"""``pipekit.references``: the ``${...}`` grammar, find, resolve, check, and the fuzz of
RELIABILITY 24 (only ``BadReference`` may escape the parser)."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import (
    reference_free_text,
    reference_fuzz_text,
    reference_fuzz_values,
    references,
    texts_with_references,
)

from pipekit.errors import BadReference, DefinitionError, PipekitError, UnknownReference
from pipekit.references import (
    PIPELINE,
    Kind,
    Ref,
    check,
    find,
    is_secret,
    parse,
    resolve,
    step_dependencies,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- the grammar, form by form ----------------------------------------------------------------

#: (source, kind, step, name, index, attr) — every form, as ClearML users write them.
FORMS = [
    ("${pipeline.url}", Kind.PIPELINE, None, "url", None, None),
    ("${pipeline.a.b}", Kind.PIPELINE, None, "a.b", None, None),
    ("${stage_data.id}", Kind.ID, "stage_data", None, None, None),
    ("${step.parameters.General/x}", Kind.PARAMETER, "step", "General/x", None, None),
    ("${stage3.parameters.Args/input_file}", Kind.PARAMETER, "stage3", "Args/input_file",
     None, None),
    ("${s.parameters.a.b/c d}", Kind.PARAMETER, "s", "a.b/c d", None, None),
    ("${stage_data.artifacts.dataset.url}", Kind.ARTIFACT_URL, "stage_data", "dataset",
     None, None),
    ("${s.artifacts.data.v2.url}", Kind.ARTIFACT_URL, "s", "data.v2", None, None),
    ("${s.artifacts.dataset}", Kind.ARTIFACT, "s", "dataset", None, None),
    ("${s.artifacts.data.v2}", Kind.ARTIFACT, "s", "data.v2", None, None),
    ("${s.artifacts.url}", Kind.ARTIFACT, "s", "url", None, None),
    ("${step1.models.output.-1.id}", Kind.MODEL, "step1", "output", -1, "id"),
    ("${stage1.models.output.-1.url}", Kind.MODEL, "stage1", "output", -1, "url"),
    ("${step1.models.output.0.url}", Kind.MODEL, "step1", "output", 0, "url"),
    ("${step1.models.input.2.id}", Kind.MODEL, "step1", "input", 2, "id"),
    ("${step_one.data}", Kind.RETURN, "step_one", "data", None, None),
    ("${step-2.processed_data}", Kind.RETURN, "step-2", "processed_data", None, None),
    ("${env:TOKEN}", Kind.ENV, None, "TOKEN", None, None),
    ("${env:_aws_KEY_2}", Kind.ENV, None, "_aws_KEY_2", None, None),
    ("${env.x}", Kind.RETURN, "env", "x", None, None),
]


@pytest.mark.parametrize(("source", "kind", "step", "name", "index", "attr"), FORMS,
                         ids=[f[0] for f in FORMS])
def test_parse_every_form(source, kind, step, name, index, attr):
    expected = Ref(kind=kind, step=step, name=name, index=index, attr=attr, text=source)
    assert parse(source) == expected
    assert parse(source[2:-1]) == expected  # the body alone
    assert find(f"pre {source} post") == [expected]
    # the text built from the fields is the canonical spelling
    assert Ref(kind=kind, step=step, name=name, index=index, attr=attr).text == source
    assert str(expected) == source


def test_kind_values_are_their_names():
    assert {k.value for k in Kind} == {"pipeline", "id", "parameter", "artifact",
                                       "artifact_url", "model", "return", "env"}
    assert Ref(kind="id", step="a") == Ref(kind=Kind.ID, step="a", text="${a.id}")
    assert PIPELINE == "pipeline"


def test_model_index_keeps_sign_and_leading_zeros_in_text():
    ref = parse("${a.models.output.-007.id}")
    assert (ref.index, ref.text) == (-7, "${a.models.output.-007.id}")


# -- malformed references ---------------------------------------------------------------------

#: (text, the reference quoted in the message, a phrase of the reason).
BAD = [
    ("${", "${", "unterminated"),
    ("x ${a.id", "${a.id", "unterminated"),
    ("${a.id} and ${b.id", "${b.id", "unterminated"),
    ("${}", "${}", "empty reference"),
    ("${.id}", "${.id}", "empty step name"),
    ("${HOME}", "${HOME}", "unknown reference kind"),
    ("${a.b.c}", "${a.b.c}", "unknown reference kind 'b'"),
    ("${a.script.branch}", "${a.script.branch}", "unknown reference kind 'script'"),
    ("${pipeline}", "${pipeline}", "needs a parameter name"),
    ("${a.id.x}", "${a.id.x}", "nothing may follow '.id'"),
    ("${a.parameters}", "${a.parameters}", "needs a parameter name"),
    ("${a.artifacts}", "${a.artifacts}", "needs an artifact name"),
    ("${a.models.output.x.id}", "${a.models.output.x.id}", "model index must be an integer"),
    ("${a.models.output.1.5.id}", "${a.models.output.1.5.id}", "${<step>.models.output"),
    ("${a.models.output.+1.id}", "${a.models.output.+1.id}", "model index must be an integer"),
    ("${a.models.output.١.id}", "${a.models.output.١.id}", "model index must be an integer"),
    ("${a.models.output.9999999999.id}", "${a.models.output.9999999999.id}", "out of range"),
    ("${a.models.output}", "${a.models.output}", "${<step>.models.output"),
    ("${a.models.weights.0.id}", "${a.models.weights.0.id}", "'output' or 'input'"),
    ("${a.models.output.0.name}", "${a.models.output.0.name}", "'.id' or '.url'"),
    ("${a..id}", "${a..id}", "empty name between dots"),
    ("${a.id.}", "${a.id.}", "empty name between dots"),
    ("${a.}", "${a.}", "empty name between dots"),
    ("${a.id ${b.id}}", "${a.id ${b.id}", "cannot be nested"),
    ("${a.{b}}", "${a.{b}", "cannot be nested"),
    ("${ a.id}", "${ a.id}", "spaces"),
    ("${a.id }", "${a.id }", "spaces"),
    ("${a\n.id}", "${a\n.id}", "control"),
    ("${a.\x00}", "${a.\x00}", "control"),
    ("${env:}", "${env:}", "empty environment variable name"),
    ("${env:1X}", "${env:1X}", "must match"),
    ("${env:A-B}", "${env:A-B}", "must match"),
]


@pytest.mark.parametrize(("text", "quoted", "reason"), BAD, ids=[b[0] for b in BAD])
def test_malformed_references_raise_bad_reference(text, quoted, reason):
    with pytest.raises(BadReference) as info:
        find(text)
    exc = info.value
    assert isinstance(exc, DefinitionError) and isinstance(exc, PipekitError)
    assert isinstance(exc, ValueError)
    assert exc.value == quoted
    assert reason in exc.reason
    assert str(exc) == f"bad reference {quoted!r}: {exc.reason}"
    assert exc.step is None


@pytest.mark.parametrize("text", [
    "", "plain", "${a.id} ", " ${a.id}", "${a.id}${b.id}", "${a.id}}", "$${a.id}", "{a.id}",
])
def test_parse_wants_exactly_one_reference(text):
    with pytest.raises(BadReference):
        parse(text)


def test_parse_refuses_non_text():
    with pytest.raises(TypeError):
        parse(3)  # type: ignore[arg-type]


def test_long_bad_reference_is_shortened_in_the_message():
    text = "${" + "x" * 500
    with pytest.raises(BadReference) as info:
        find(text)
    assert info.value.value == text
    assert len(str(info.value)) < 200


# -- find / step_dependencies / is_secret ---------------------------------------------------


def test_find_walks_containers_in_order():
    value = {
        "${k.id}": ["${a.id}", ("x ${b.out} y", {"deep": "${c.parameters.General/p}"})],
        "n": 3, "none": None, "bytes": b"${nope.id}", "set": {"${nope.id}"},
        "plain": "$ { } . no refs",
    }
    assert [r.text for r in find(value)] == ["${k.id}", "${a.id}", "${b.out}",
                                             "${c.parameters.General/p}"]
    assert step_dependencies(value) == {"k", "a", "b", "c"}


def test_find_keeps_repeats_and_lone_special_characters():
    text = "cost $5 {x} } { ${a.id}$ ${a.id} $}"
    assert [r.text for r in find(text)] == ["${a.id}", "${a.id}"]


def test_dollar_before_a_reference_is_text():
    assert [r.text for r in find("$${a.id}")] == ["${a.id}"]
    assert resolve("$${a.id}", lambda ref: "X") == "$X"


def test_step_dependencies_ignore_pipeline_and_env():
    value = ["${pipeline.url}", "${env:TOKEN}", "${prep.artifacts.data.url}",
             "${train.models.output.-1.id}"]
    assert step_dependencies(value) == {"prep", "train"}
    assert step_dependencies("no references") == set()


def test_is_secret():
    assert is_secret({"auth": "Bearer ${env:TOKEN}"})
    assert is_secret(["x", ("${env:A}",)])
    assert not is_secret({"a": "${prep.id}", "env:X": "$env:X", "b": 1})


# -- resolve ---------------------------------------------------------------------------------


class Lookup:
    """A recording lookup: ``table[text]`` for each reference, by its source text."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table, self.calls = table, []

    def __call__(self, ref: Ref) -> Any:
        self.calls.append(ref)
        return self.table[ref.text]


@pytest.mark.parametrize("obj", [42, 1.5, None, True, [1, 2], {"k": "v"}, b"raw", object()])
def test_exact_reference_receives_the_object_itself(obj):
    assert resolve("${a.out}", Lookup({"${a.out}": obj})) is obj


def test_embedded_reference_receives_its_text():
    lookup = Lookup({"${a.out}": 42, "${b.id}": None, "${pipeline.p}": [1]})
    assert resolve("n=${a.out}", lookup) == "n=42"
    assert resolve("${a.out}${b.id}", lookup) == "42None"
    assert resolve(" ${pipeline.p}", lookup) == " [1]"
    assert resolve("${a.out}/${b.id}/${a.out}", lookup) == "42/None/42"


def test_text_without_references_is_returned_untouched():
    text = "".join(["$ { } . ", "x" * 10])
    lookup = Lookup({})
    assert resolve(text, lookup) is text
    assert lookup.calls == []


def test_resolve_walks_and_copies_containers():
    Pair = namedtuple("Pair", "left right")
    lookup = Lookup({"${a.out}": [1, 2], "${b.id}": "task-b", "${pipeline.n}": 7})
    value = {
        "list": ["${a.out}", "id ${b.id}", 3],
        "tuple": ("${pipeline.n}",),
        "pair": Pair("${b.id}", "${a.out}"),
        "key ${b.id}": "${b.id}",
        "${pipeline.n}": "exact key becomes text",
        5: None,
    }
    snapshot = repr(value)
    out = resolve(value, lookup)
    assert out == {
        "list": [[1, 2], "id task-b", 3],
        "tuple": (7,),
        "pair": Pair("task-b", [1, 2]),
        "key task-b": "task-b",
        "7": "exact key becomes text",
        5: None,
    }
    assert type(out["pair"]) is Pair and type(out["tuple"]) is tuple
    assert out["list"] is not value["list"]
    assert repr(value) == snapshot  # the input is not modified


def test_env_references_are_left_alone_unless_asked():
    lookup = Lookup({"${env:TOKEN}": "s3cr3t", "${a.id}": "t1"})
    assert resolve("${env:TOKEN}", lookup) == "${env:TOKEN}"
    assert resolve("Bearer ${env:TOKEN} for ${a.id}", lookup) == "Bearer ${env:TOKEN} for t1"
    assert [r.kind for r in lookup.calls] == [Kind.ID]
    assert resolve("Bearer ${env:TOKEN}", lookup, env=True) == "Bearer s3cr3t"
    assert resolve({"t": "${env:TOKEN}"}, lookup, env=True) == {"t": "s3cr3t"}
    assert lookup.calls[-1] == Ref(kind=Kind.ENV, name="TOKEN")


def test_lookup_errors_propagate_unchanged():
    boom = KeyError("no such artifact")

    def lookup(ref: Ref) -> Any:
        raise boom

    for value in (["ok", "x ${a.out}"], "${a.out}", {"k": ("${a.out}",)}):
        with pytest.raises(KeyError) as info:
            resolve(value, lookup)
        assert info.value is boom


def test_malformed_string_is_rejected_before_any_lookup():
    lookup = Lookup({"${a.id}": "t"})
    with pytest.raises(BadReference):
        resolve("${a.id} then ${b.nope.x}", lookup)
    assert lookup.calls == []


# -- check -------------------------------------------------------------------------------------

STEPS = ["prepare", "train", "evaluate"]
PARAMS = ["url", "epochs"]


def test_check_accepts_known_names():
    value = {"a": "${prepare.artifacts.data.url}", "b": "${pipeline.url} ${env:ANY}",
             "c": ["${evaluate.models.output.-1.id}"]}
    assert check(value, STEPS, PARAMS, "train") is None


def test_check_unknown_step_suggests_close_match():
    with pytest.raises(UnknownReference) as info:
        check({"x": "data from ${prep.artifacts.data.url}"}, STEPS, PARAMS, "train")
    exc = info.value
    assert isinstance(exc, DefinitionError)
    assert (exc.step, exc.ref, exc.missing, exc.what) == (
        "train", "${prep.artifacts.data.url}", "prep", "step")
    assert str(exc) == ("step 'train' refers to unknown step 'prep' in "
                        "'${prep.artifacts.data.url}': did you mean 'prepare'?")


def test_check_unknown_step_lists_known_when_nothing_is_close():
    with pytest.raises(UnknownReference, match="known steps: 'evaluate', 'prepare'$"):
        check("${zzz.id}", STEPS, PARAMS, "train")


def test_check_unknown_pipeline_parameter():
    with pytest.raises(UnknownReference) as info:
        check(["${pipeline.urls}"], STEPS, PARAMS, "train")
    assert info.value.what == "pipeline parameter"
    assert str(info.value) == ("step 'train' refers to unknown pipeline parameter 'urls' in "
                               "'${pipeline.urls}': did you mean 'url'?")
    with pytest.raises(UnknownReference, match="no pipeline parameters are defined"):
        check("${pipeline.url}", STEPS, [], "train")


def test_check_refuses_a_reference_to_the_step_itself():
    with pytest.raises(BadReference, match="^step 'train': .*cannot refer to itself"):
        check("${train.id}", STEPS, PARAMS, "train")


def test_check_names_the_step_of_a_malformed_reference():
    with pytest.raises(BadReference) as info:
        check({"p": "${prepare.models.output.last.id}"}, STEPS, PARAMS, "train")
    assert info.value.step == "train"
    assert str(info.value).startswith("step 'train': bad reference '${prepare.models")
    assert "model index must be an integer" in str(info.value)


# -- properties (RELIABILITY 24) ------------------------------------------------------------


def _identity(ref: Ref) -> Any:
    return ref


@FUZZ
@given(reference_fuzz_text())
@example("${")
@example("${${}}")
@example("${a.models.output." + "9" * 5000 + ".id}")
@example("${\ud7ff.\U0010ffff}")
def test_fuzz_text_raises_only_bad_reference(text):
    for call in (find, parse, step_dependencies, is_secret,
                 lambda v: resolve(v, _identity), lambda v: resolve(v, _identity, env=True)):
        try:
            call(text)
        except BadReference:
            pass
    try:
        check(text, ["a"], ["p"], "s")
    except (BadReference, UnknownReference):
        pass


@FUZZ
@given(reference_fuzz_values())
def test_fuzz_values_raise_only_bad_reference(value):
    try:
        found = find(value)
    except BadReference:
        with pytest.raises(BadReference):
            resolve(value, _identity, env=True)
        return
    resolve(value, _identity)
    assert step_dependencies(value) == {r.step for r in found if r.step is not None}


@FUZZ
@given(reference_fuzz_text())
def test_substituting_each_reference_by_its_text_gives_the_text_back(text):
    try:
        found = find(text)
    except BadReference:
        return
    assert len(found) == text.count("${")
    assert resolve(text, lambda ref: ref.text, env=True) == text
    assert resolve(text, lambda ref: ref.text) == text


@given(references())
def test_round_trip(ref):
    assert parse(ref.text) == ref
    assert parse(ref.text[2:-1]) == ref
    assert find(ref.text) == [ref]
    canonical = Ref(kind=ref.kind, step=ref.step, name=ref.name, index=ref.index, attr=ref.attr)
    assert canonical.text == ref.text


@given(reference_free_text(max_size=60))
def test_text_without_a_reference_resolves_to_itself(text):
    def lookup(ref: Ref) -> Any:
        raise AssertionError(f"lookup called for {ref}")

    assert find(text) == []
    assert resolve(text, lookup, env=True) is text
    assert resolve([text, (text,), {text: text}], lookup) == [text, (text,), {text: text}]


@given(texts_with_references())
def test_references_embedded_in_text_are_all_found(case):
    text, refs = case
    assert find(text) == refs
    assert step_dependencies(text) == {r.step for r in refs if r.step is not None}
    assert step_dependencies({"k": [text]}) == step_dependencies(text)
    assert is_secret(text) == any(r.kind is Kind.ENV for r in refs)


@given(texts_with_references(), st.data())
def test_resolve_replaces_exactly_the_references(case, data):
    text, refs = case
    values = {r.text: data.draw(st.integers()) for r in refs}
    out = resolve(text, lambda ref: values[ref.text], env=True)
    if len(refs) == 1 and text == refs[0].text:
        assert out == values[text]  # the object, not its text
        return
    expected = text
    for ref in refs:  # refs hold no '${' in their filler, so replacing in order is exact
        expected = expected.replace(ref.text, str(values[ref.text]), 1)
    assert out == expected
