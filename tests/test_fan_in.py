"""Fan-in from collections (issue 12, item 8): a component called with a list, tuple or dict
of lazy results — "train three models, pick the best" — gets an edge from every producer and
receives their values, in every mode.
"""

from __future__ import annotations

import pytest

from pipekit import PipelineDecorator
from pipekit.store import get_store


@PipelineDecorator.component(return_values=["score"])
def train(seed):
    return seed * 10


@PipelineDecorator.component(return_values=["best"])
def pick(scores, pair, named):
    return {"best": max(scores), "pair": list(pair), "named": named}


@PipelineDecorator.pipeline(name="fan-in", project="fan-in-tests", version="1.0.0")
def fan_in():
    scores = [train(seed) for seed in (1, 2, 3)]
    chosen = pick(scores, (scores[0], 7), {"first": scores[0], "plain": 1})
    return chosen


@pytest.mark.parametrize("mode", ["debug", "thread", "subprocess"])
def test_a_component_given_a_collection_of_lazy_results_waits_for_every_producer(mode):
    if mode == "debug":
        PipelineDecorator.debug_pipeline()
    else:
        PipelineDecorator.run_locally(executor=mode)
    result = fan_in()
    assert result == {"best": 30, "pair": [10, 7], "named": {"first": 10, "plain": 1}}
    (run,) = get_store().list_runs()
    nodes = {n.name: n for n in get_store().list_nodes(run.id)}
    assert sorted(nodes["pick"].parents) == ["train", "train_1", "train_2"]
    assert all(nodes[name].parents == [] for name in ("train", "train_1", "train_2"))
    assert {n.status for n in nodes.values()} == {"completed"}
    picked = get_store().get_task(nodes["pick"].task)
    trains = [get_store().get_task(nodes[name].task) for name in ("train", "train_1",
                                                                  "train_2")]
    assert picked.started >= max(t.ended for t in trains)
    params = {k: p.value for k, p in get_store().get_parameters(picked.id).items()}
    assert params["kwargs/scores"] == "[10, 20, 30]"
