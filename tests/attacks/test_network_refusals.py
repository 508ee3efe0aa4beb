"""Generic refusals as the researcher's client receives them, through a real network.

One TRE (default policy) behind a real coordinator; the researcher's Client is all the
attacker has. The target is the only diabetic-or-not person with postcode "ZZ9" and
unique (age, sex, region).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from fedtre.disclosure import release
from fedtre.testing import LocalNetwork

from .conftest import everyone_but, make_frame, qi_filter, unique_targets

S = {"col": "diabetic", "op": "==", "value": 1}


@pytest.fixture(scope="module")
def network() -> Iterator[tuple[LocalNetwork, pd.DataFrame, int]]:
    frame = make_frame(n=400, seed=5).drop(columns=["pid"])
    target = next(t for t in unique_targets(frame) if frame.loc[t, "diabetic"] == 1)
    frame.loc[target, "postcode"] = "ZZ9"
    with LocalNetwork({"tre-a": {"cohort": frame}}) as net:
        yield net, frame, target


def run(net: LocalNetwork, analysis: str, **params: Any) -> Any:
    with net.client() as client:
        return client.submit(analysis, dataset="cohort", params=params).result(timeout=60)


def received_text(result: Any) -> str:
    """Everything the client holds of a job: combined result and each node's output."""
    nodes = {
        name: {
            "outcome": node.outcome,
            "payload": node.payload,
            "rules": [[r.rule, r.passed, r.detail] for r in node.rules],
            "error": node.error,
        }
        for name, node in result.nodes.items()
    }
    return json.dumps({"combined": result.combined, "nodes": nodes}, default=str)


def assert_generic(node: Any) -> None:
    assert node.outcome == "blocked"
    assert node.payload == {}
    assert node.error == release.GENERIC_BLOCKED
    assert node.rules and all(not r.passed for r in node.rules)
    assert all(r.detail in release.PLAIN_WORDS.values() for r in node.rules)


def test_refusals_reach_the_researcher_generic(network: Any) -> None:
    """Through the network: count(S) then count(S minus the target) (differencing), the
    target alone (cohort size), and a linear regression with C(postcode) (the rare
    level ZZ9 held by the target).

    Nothing learned: each refusal the client receives is "blocked" with the failed rule
    families in fixed words, the generic error, no payload, no digit in the node's
    rules or error, and "ZZ9" nowhere in the job's result.
    """
    net, frame, target = network
    first = run(net, "count", filter=S)
    assert first.nodes["tre-a"].outcome == "released"
    jobs = [
        run(net, "count", filter=everyone_but(S, qi_filter(frame, target))),
        run(net, "count", filter=qi_filter(frame, target)),
        run(net, "linear_regression", outcome="sbp", covariates=["age", "C(postcode)"]),
    ]
    for job in jobs:
        node = job.nodes["tre-a"]
        assert_generic(node)
        words = json.dumps([[r.rule, r.detail] for r in node.rules]) + node.error
        assert not re.search(r"\d", words), words
        assert "ZZ9" not in received_text(job)
    assert {r.rule for r in jobs[0].nodes["tre-a"].rules} == {"differencing"}


def test_the_same_question_twice_in_two_projects_gets_one_answer_or_a_refusal(
    network: Any,
) -> None:
    """The pair (S, S minus the target) split over two projects, then S asked again.

    Nothing learned: the second project's question is refused (the memory is the
    dataset's), and S asked again returns the identical released count (no averaging).
    """
    net, frame, target = network
    net.add_project("other")
    with net.client() as client:
        a = client.submit("count", dataset="cohort", params={"filter": S}).result(timeout=60)
        b = client.submit(
            "count",
            dataset="cohort",
            project="other",
            params={"filter": everyone_but(S, qi_filter(frame, target))},
        ).result(timeout=60)
        again = client.submit("count", dataset="cohort", params={"filter": S}).result(timeout=60)
    assert_generic(b.nodes["tre-a"])
    assert again.nodes["tre-a"].payload == a.nodes["tre-a"].payload
