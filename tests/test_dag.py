"""pipekit.dag: definition errors, ordering, walks, the ready set, hashing, serialization.

Property tests draw acyclic DAGs from ``strategies.dag_edges`` (``{step: [parents]}`` whose
order is topological) and check the results against naive oracles written here.
"""

from __future__ import annotations

import graphlib
import json
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import (
    chain,
    dag_edges,
    dags,
    diamond,
    fan_out_fan_in,
    hostile_names,
    layered,
    reordered_edges,
    step_names,
)

from pipekit.dag import Dag
from pipekit.errors import (
    DefinitionError,
    DuplicateStepError,
    InvalidStepName,
    PipekitError,
    PipelineCycleError,
    UnknownParentError,
    UnknownStepError,
)
from pipekit.render import to_mermaid, view_of_dag

# -- oracles ------------------------------------------------------------------------------------


def edge_set(dag: Dag) -> set[tuple[str, str]]:
    """``(parent, child)`` for every edge."""
    return {(p, n) for n in dag for p in dag.parents(n)}


def reachable(edges: dict[str, list[str]], start: str) -> set[str]:
    """Steps downstream of ``start``, by a naive fixed point over ``{step: [parents]}``."""
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, parents in edges.items():
            if name not in found and any(p == start or p in found for p in parents):
                found.add(name)
                changed = True
    return found


def assert_topological(order: list[str], edges: dict[str, list[str]]) -> None:
    assert sorted(order) == sorted(edges)
    position = {name: i for i, name in enumerate(order)}
    for name, parents in edges.items():
        for parent in parents:
            assert position[parent] < position[name], (parent, name, order)


# -- definition errors --------------------------------------------------------------------------


def test_duplicate_step_names_the_step_and_changes_nothing():
    dag = Dag()
    dag.add("train", ["prepare"])
    with pytest.raises(DuplicateStepError) as info:
        dag.add("train", ["other"])
    err = info.value
    assert err.step == "train"
    assert "'train'" in str(err) and "unique name" in str(err)
    assert isinstance(err, DefinitionError) and isinstance(err, ValueError)
    assert isinstance(err, PipekitError)
    assert dag.parents("train") == ("prepare",)
    assert "other" not in {p for n in dag for p in dag.parents(n)}


@given(hostile_names())
def test_invalid_step_name_is_refused_at_add(name):
    dag = Dag()
    with pytest.raises(InvalidStepName) as info:
        dag.add(name)
    assert info.value.step == name and info.value.kind == "step"
    assert repr(name) in str(info.value)
    assert isinstance(info.value, DefinitionError)
    assert len(dag) == 0


@pytest.mark.parametrize("name", [None, 3, b"step", ("a",)])
def test_non_string_step_name_is_refused(name):
    with pytest.raises(InvalidStepName) as info:
        Dag().add(name)  # type: ignore[arg-type]
    assert info.value.step == name and repr(name) in str(info.value)


@given(step_names())
def test_valid_step_names_are_accepted(name):
    dag = Dag()
    dag.add(name)
    assert name in dag and dag.order() == [name]


@pytest.mark.parametrize("name", ["a.b", "pipeline", "step.1"])
def test_names_a_reference_cannot_address_are_refused(name):
    with pytest.raises(InvalidStepName, match="invalid step name"):
        Dag().add(name)


def test_unknown_parent_is_allowed_at_add_and_reported_by_validate():
    dag = Dag()
    dag.add("train", ["prepare_dta"])  # a typo: no error yet, the parent may come later
    dag.add("prepare_data")
    with pytest.raises(UnknownParentError) as info:
        dag.validate()
    err = info.value
    assert (err.step, err.parent) == ("train", "prepare_dta")
    assert str(err) == ("step 'train' has unknown parent 'prepare_dta': "
                        "did you mean 'prepare_data'?")


def test_unknown_parent_without_close_match_suggests_the_fix():
    dag = Dag()
    dag.add("train", ["zzz"])
    with pytest.raises(UnknownParentError) as info:
        dag.validate()
    assert "did you mean" not in str(info.value)
    assert "add a step named 'zzz' or remove it from the parents of 'train'" in str(info.value)


def test_parent_added_after_its_child_is_fine():
    dag = Dag()
    dag.add("train", ["prepare"])
    with pytest.raises(UnknownParentError):
        dag.validate()
    dag.add("prepare")  # the failed validate cached nothing
    dag.validate()
    assert dag.order() == ["prepare", "train"]
    assert dag.children("prepare") == ("train",)


@pytest.mark.parametrize("query", [
    lambda d: d.order(), lambda d: d.levels(), lambda d: d.ready(),
    lambda d: d.ancestors("b"), lambda d: d.descendants("a"), lambda d: d.subgraph(["a"]),
    lambda d: d.structure_hash(), lambda d: Dag.from_dict(d.to_dict()),
])
def test_every_ordering_query_validates_first(query):
    dag = Dag()
    dag.add("a")
    dag.add("b", ["a", "missing"])
    with pytest.raises(UnknownParentError, match="'missing'"):
        query(dag)


def test_cycle_names_the_loop_and_chains_the_graphlib_error():
    with pytest.raises(PipelineCycleError) as info:
        Dag.from_edges({"a": ["c"], "b": ["a"], "c": ["b"], "d": []})
    err = info.value
    assert err.cycle == ["a", "b", "c", "a"]
    assert err.step == "a"
    assert "a -> b -> c -> a" in str(err)
    assert isinstance(err.__cause__, graphlib.CycleError)


def test_cycle_is_named_from_its_earliest_added_step():
    # graphlib reports the loop from where its walk enters it (here y, coming from start);
    # the message starts at the loop's earliest-added step, so it does not depend on the walk.
    with pytest.raises(PipelineCycleError) as info:
        Dag.from_edges({"start": [], "x": ["z"], "y": ["x", "start"], "z": ["y"]})
    assert info.value.cycle == ["x", "y", "z", "x"]


def test_self_parent_is_a_cycle():
    dag = Dag()
    dag.add("a", ["a"])
    with pytest.raises(PipelineCycleError, match=r"a -> a "):
        dag.validate()


@given(dag_edges(min_size=2), st.data())
def test_edge_that_closes_a_loop_makes_validate_raise(edges, data):
    dag = Dag.from_edges(edges)
    downstream = [n for n in dag if dag.descendants(n)]
    assume(downstream)
    upper = data.draw(st.sampled_from(downstream))
    lower = data.draw(st.sampled_from(sorted(dag.descendants(upper))))
    dag.add_parent(upper, lower)  # lower already waits for upper: now upper waits for lower
    for _ in range(2):  # validate is idempotent: it raises again, the same way
        with pytest.raises(PipelineCycleError) as info:
            dag.validate()
        cycle = info.value.cycle
        assert cycle[0] == cycle[-1] and len(cycle) >= 2
        links = list(zip(cycle, cycle[1:], strict=False))
        assert all(parent in dag.parents(child) for parent, child in links)
        assert (lower, upper) in links  # every loop uses the new edge
        assert " -> ".join(cycle) in str(info.value)


@given(dags())
def test_validate_is_idempotent_on_a_valid_dag(dag):
    first = dag.order()
    assert dag.validate() is None and dag.validate() is None
    assert dag.order() == first


@pytest.mark.parametrize("call", [
    lambda d: d.parents("trian"), lambda d: d.children("trian"),
    lambda d: d.ancestors("trian"), lambda d: d.descendants("trian"),
    lambda d: d.add_parent("trian", "prepare"), lambda d: d.subgraph(["trian"]),
    lambda d: d.structure_hash(code_digests={"trian": "abc"}),
])
def test_unknown_step_names_it_and_suggests_close_matches(call):
    dag = Dag.from_edges({"prepare": [], "train": ["prepare"]})
    with pytest.raises(UnknownStepError) as info:
        call(dag)
    assert info.value.step == "trian"
    assert str(info.value) == "unknown step 'trian': did you mean 'train'?"
    assert isinstance(info.value, KeyError) and isinstance(info.value, DefinitionError)


def test_unencodable_default_names_the_parameter():
    dag = Dag.from_edges(diamond())
    with pytest.raises(DefinitionError, match="parameter 'when'.*object"):
        dag.structure_hash(defaults={"when": object()})


# -- ordering -----------------------------------------------------------------------------------


@given(dag_edges(), st.data())
def test_order_is_topological_deterministic_and_breaks_ties_by_insertion(edges, data):
    # Added parents-first, a DAG orders exactly as added.
    assert Dag.from_edges(edges).order() == list(edges)
    shuffled = data.draw(reordered_edges(edges))
    order = Dag.from_edges(shuffled).order()
    assert_topological(order, edges)
    assert Dag.from_edges(shuffled).order() == order
    # Each step is the earliest-added one whose parents were all placed before it.
    placed: set[str] = set()
    for name in order:
        ready = [n for n in shuffled if n not in placed and set(shuffled[n]) <= placed]
        assert name == ready[0]
        placed.add(name)


@given(dag_edges(), st.data())
def test_levels_group_steps_by_depth(edges, data):
    dag = Dag.from_edges(data.draw(reordered_edges(edges)))
    levels = dag.levels()
    assert sorted(n for level in levels for n in level) == sorted(edges)
    depth = {n: k for k, level in enumerate(levels) for n in level}
    for name in dag:
        parents = dag.parents(name)
        assert all(depth[p] < depth[name] for p in parents)
        assert depth[name] == (max(depth[p] for p in parents) + 1 if parents else 0)
    insertion = list(dag)
    for level in levels:
        assert level and level == sorted(level, key=insertion.index)


def test_named_shapes():
    dag = Dag.from_edges(diamond())
    assert dag.order() == ["a", "b", "c", "d"]
    assert dag.levels() == [["a"], ["b", "c"], ["d"]]
    assert dag.roots() == ["a"] and dag.leaves() == ["d"]
    assert dag.descendants("b") == {"d"} and dag.ancestors("d") == {"a", "b", "c"}
    assert dag.children("a") == ("b", "c") and dag.parents("d") == ("b", "c")

    fan = Dag.from_edges(fan_out_fan_in(4))
    branches = [f"branch{i}" for i in range(4)]
    assert fan.levels() == [["source"], branches, ["sink"]]
    assert fan.ready(done={"source"}) == branches
    assert fan.ready(done={"source", *branches}) == ["sink"]
    assert fan.descendants("branch2") == {"sink"}

    line = Dag.from_edges(dict(reversed(chain(5).items())))  # added child-first
    assert line.order() == [f"step{i}" for i in range(5)]
    assert line.roots() == ["step0"] and line.leaves() == ["step4"]


def test_parents_given_as_one_string_or_none():
    dag = Dag()
    dag.add("a", None)
    dag.add("b", "a")
    dag.add("c", ["a", "b", "a"])
    assert dag.parents("a") == () and dag.parents("b") == ("a",)
    assert dag.parents("c") == ("a", "b")


def test_add_parent_adds_each_edge_once():
    dag = Dag.from_edges({"a": [], "b": [], "c": ["a"]})
    dag.add_parent("c", "b")
    dag.add_parent("c", "b")
    dag.add_parent("c", "a")
    assert dag.parents("c") == ("a", "b") and dag.children("b") == ("c",)
    assert dag.order() == ["a", "b", "c"]
    dag.add_parent("a", "later")  # may name a step not added yet
    with pytest.raises(UnknownParentError):
        dag.order()
    dag.add("later")
    assert dag.order() == ["b", "later", "a", "c"]


# -- walks and the ready set --------------------------------------------------------------------


@given(dag_edges())
def test_ancestors_and_descendants_agree_with_each_other_and_an_oracle(edges):
    dag = Dag.from_edges(edges)
    for a in dag:
        below = dag.descendants(a)
        assert below == reachable(edges, a)
        assert a not in below and a not in dag.ancestors(a)
        assert set(dag.parents(a)) <= dag.ancestors(a)
        assert set(dag.children(a)) <= below
        for b in dag:
            assert (b in below) == (a in dag.ancestors(b))


@given(dag_edges())
def test_roots_and_leaves(edges):
    dag = Dag.from_edges(edges)
    assert dag.roots() == [n for n, ps in edges.items() if not ps]
    used = {p for ps in edges.values() for p in ps}
    assert dag.leaves() == [n for n in edges if n not in used]


@given(dag_edges(), st.data())
def test_ready_set_drives_a_run_and_skips_descendants_of_failures(edges, data):
    dag = Dag.from_edges(data.draw(reordered_edges(edges)))
    insertion = list(dag)
    failed = data.draw(st.sets(st.sampled_from(insertion), max_size=2)) if insertion else set()
    done: set[str] = set()
    running: set[str] = set()
    blocked: set[str] = set()
    while True:
        ready = dag.ready(done, running, blocked)
        expected = [n for n in insertion if n not in done | running | blocked
                    and set(dag.parents(n)) <= done]
        assert ready == expected
        if not ready and not running:
            break
        if ready:  # start at least one ready step, then finish one running step
            running |= set(data.draw(st.lists(st.sampled_from(ready), min_size=1, unique=True)))
        finish = data.draw(st.sampled_from(sorted(running)))
        running.discard(finish)
        if finish in failed:
            blocked.add(finish)
            blocked |= dag.descendants(finish)  # what the runner marks skipped
        else:
            done.add(finish)
    downstream = set().union(*(dag.descendants(f) for f in failed)) if failed else set()
    assert done == set(insertion) - failed - downstream
    assert done | blocked == set(insertion)


# -- subgraphs, serialization, hashing, drawing ---------------------------------------------------


@given(dag_edges(), st.data())
def test_subgraph_keeps_the_chosen_steps_and_the_edges_between_them(edges, data):
    dag = Dag.from_edges(edges)
    keep = data.draw(st.sets(st.sampled_from(list(edges)))) if edges else set()
    sub = dag.subgraph(keep)
    assert list(sub) == [n for n in dag if n in keep]
    assert edge_set(sub) == {(p, n) for p, n in edge_set(dag) if p in keep and n in keep}


@given(dag_edges(), st.data())
def test_to_dict_from_dict_round_trip(edges, data):
    dag = Dag.from_edges(data.draw(reordered_edges(edges)))
    stored = json.loads(json.dumps(dag.to_dict()))
    back = Dag.from_dict(stored)
    assert back.to_dict() == dag.to_dict()
    assert list(back) == list(dag) and back.order() == dag.order()
    assert back.structure_hash() == dag.structure_hash()


@pytest.mark.parametrize("data", [
    None, [], {}, {"nodes": None}, {"nodes": [1]}, {"nodes": [{"parents": []}]},
    {"nodes": [{"name": "a", "parents": "b"}]},
])
def test_from_dict_refuses_malformed_data(data):
    with pytest.raises(DefinitionError, match="malformed DAG"):
        Dag.from_dict(data)  # type: ignore[arg-type]


def test_from_dict_reports_definition_errors():
    with pytest.raises(DuplicateStepError):
        Dag.from_dict({"nodes": [{"name": "a", "parents": []}, {"name": "a", "parents": []}]})
    with pytest.raises(PipelineCycleError):
        Dag.from_dict({"nodes": [{"name": "a", "parents": ["b"]}, {"name": "b", "parents": ["a"]}]})
    assert list(Dag.from_dict({"nodes": [{"name": "a", "kind": "function"}]})) == ["a"]


digests = st.text(alphabet="0123456789abcdef", min_size=4, max_size=8)
defaults_st = st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True),
                              st.one_of(st.integers(), st.text(max_size=5), st.none()),
                              max_size=4)


@given(dag_edges(), st.data())
def test_structure_hash_ignores_insertion_and_dict_order(edges, data):
    code = {n: data.draw(digests) for n in edges if data.draw(st.booleans())}
    defaults = data.draw(defaults_st)
    shuffled = data.draw(reordered_edges(edges))
    code2 = {n: code[n] for n in data.draw(st.permutations(list(code)))}
    defaults2 = {k: defaults[k] for k in data.draw(st.permutations(list(defaults)))}
    assert (Dag.from_edges(edges).structure_hash(code, defaults)
            == Dag.from_edges(shuffled).structure_hash(code2, defaults2))


@given(dag_edges(min_size=2), st.data())
def test_structure_hash_changes_with_an_added_edge(edges, data):
    names = list(edges)
    pairs = [(p, c) for i, c in enumerate(names) for p in names[:i] if p not in edges[c]]
    assume(pairs)
    parent, child = data.draw(st.sampled_from(pairs))
    changed = {n: ps + [parent] if n == child else ps for n, ps in edges.items()}
    assert Dag.from_edges(changed).structure_hash() != Dag.from_edges(edges).structure_hash()


@given(dag_edges(min_size=2), st.data())
def test_structure_hash_changes_with_a_removed_edge(edges, data):
    pairs = [(p, c) for c, ps in edges.items() for p in ps]
    assume(pairs)
    parent, child = data.draw(st.sampled_from(pairs))
    changed = {n: [p for p in ps if (p, n) != (parent, child)] for n, ps in edges.items()}
    assert Dag.from_edges(changed).structure_hash() != Dag.from_edges(edges).structure_hash()


@given(dag_edges(min_size=1), st.data())
def test_structure_hash_changes_with_a_renamed_step(edges, data):
    old = data.draw(st.sampled_from(list(edges)))
    new = data.draw(step_names().filter(lambda n: n not in edges))

    def rename(n: str) -> str:
        return new if n == old else n

    changed = {rename(n): [rename(p) for p in ps] for n, ps in edges.items()}
    assert Dag.from_edges(changed).structure_hash() != Dag.from_edges(edges).structure_hash()


@given(dag_edges(min_size=1), st.data())
def test_structure_hash_changes_with_a_code_digest(edges, data):
    dag = Dag.from_edges(edges)
    code = {n: data.draw(digests) for n in edges}
    step = data.draw(st.sampled_from(list(edges)))
    other = data.draw(st.one_of(digests, st.none()).filter(lambda d: d != code[step]))
    changed = {**code, step: other} if other is not None else {
        n: d for n, d in code.items() if n != step}
    assert dag.structure_hash(changed) != dag.structure_hash(code)


@given(dag_edges(), defaults_st, st.data())
def test_structure_hash_changes_with_a_default(edges, defaults, data):
    dag = Dag.from_edges(edges)
    key = data.draw(st.from_regex(r"[a-z]{1,6}", fullmatch=True))
    value = data.draw(st.one_of(st.integers(), st.text(max_size=5), st.none()))
    assume(key not in defaults or defaults[key] != value)
    assert dag.structure_hash(defaults={**defaults, key: value}) != dag.structure_hash(
        defaults=defaults)


def test_structure_hash_is_a_blake3_hex_digest():
    h = Dag.from_edges(diamond()).structure_hash({"a": "00"}, {"lr": 0.1})
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert Dag().structure_hash() != Dag.from_edges({"a": []}).structure_hash()


@given(dags())
def test_mermaid_has_a_line_per_step_and_per_edge(dag):
    lines = to_mermaid(view_of_dag(dag)).splitlines()
    assert lines[0] == "flowchart TD"
    nodes = [line for line in lines[1:] if "]:::" in line]
    edges = [line for line in lines[1:] if "-->" in line]
    assert len(nodes) == len(dag) and len(edges) == len(edge_set(dag))
    ids = {}
    for line, name in zip(nodes, dag, strict=True):
        m = re.fullmatch(r'  (n[0-9]+)\["([^"]*)<br/>pending"\]:::pending', line)
        assert m and m.group(2) == name
        ids[name] = m.group(1)
    assert len(set(ids.values())) == len(ids)
    drawn = {tuple(line.split()[::2]) for line in edges}
    assert drawn == {(ids[p], ids[n]) for p, n in edge_set(dag)}


def test_mermaid_ids_are_generated_and_unique():
    dag = Dag.from_edges({"a-b": [], "a_b": ["a-b"], "end": ["a_b"], "x-1": []})
    assert to_mermaid(view_of_dag(dag)) == (
        'flowchart TD\n'
        '  n0["a-b<br/>pending"]:::pending\n'
        '  n1["a_b<br/>pending"]:::pending\n'
        '  n2["end<br/>pending"]:::pending\n'
        '  n3["x-1<br/>pending"]:::pending\n'
        '  n0 --> n1\n'
        '  n1 --> n2\n'
        '  classDef completed fill:#2e7d32,stroke:#1b5e20,color:#ffffff\n'
        '  classDef cached fill:#00897b,stroke:#00695c,color:#ffffff\n'
        '  classDef failed fill:#c62828,stroke:#8e0000,color:#ffffff\n'
        '  classDef stopped fill:#ffb300,stroke:#c68400,color:#000000\n'
        '  classDef skipped fill:#9e9e9e,stroke:#707070,color:#000000\n'
        '  classDef in_progress fill:#1565c0,stroke:#003c8f,color:#ffffff\n'
        '  classDef pending fill:#e0e0e0,stroke:#aeaeae,color:#000000\n'
        '  classDef unknown fill:#ffffff,stroke:#555555,color:#000000\n'
    )


# -- size ---------------------------------------------------------------------------------------


def test_ten_thousand_step_layered_dag():
    edges = layered(100, 100)
    dag = Dag.from_edges(dict(reversed(edges.items())))  # children added before parents
    order = dag.order()
    assert_topological(order, edges)
    assert len(dag.levels()) == 100
    assert dag.ready() == [f"L0_{j}" for j in reversed(range(100))]
    assert len(dag.descendants("L0_0")) > 100
    assert dag.subgraph(order[:500]).order() == order[:500]
    assert Dag.from_dict(dag.to_dict()).structure_hash() == dag.structure_hash()


def test_ten_thousand_step_chain_needs_no_recursion():
    edges = chain(10_000)
    dag = Dag.from_edges(dict(reversed(edges.items())))
    assert dag.order() == list(edges)
    assert len(dag.levels()) == 10_000
    assert len(dag.ancestors("step9999")) == 9_999
    assert len(dag.descendants("step0")) == 9_999
    assert to_mermaid(view_of_dag(dag)).count("-->") == 9_999
