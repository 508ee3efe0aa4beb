"""cox: parameter and schema errors, the model rules at each round, and the coordinator's
step control, on SQLite nodes without a network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from analysis_testkit import EXACT, make_source, roundtrip
from model_testkit import run_round_at_node, run_rounds

from fedtre.analyses import CATALOGUE, DatasetSchema, Outcome
from fedtre.disclosure import DisclosurePolicy, release
from fedtre.errors import InvalidRequest

COX = CATALOGUE["cox"]
SCHEMA = DatasetSchema(
    "cohort",
    {
        "time": "float",
        "died": "integer",
        "age": "integer",
        "bmi": "float",
        "arm": "string",
        "label": "string",
        "score": "float",
    },
)
BASE = {"time": "time", "event": "died", "covariates": ["age"]}


def survival(n: int, seed: int, *, event_rate: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(30, 80, n)
    arm = rng.choice(["a", "b"], n)
    hazard = 0.1 * np.exp(0.02 * (age - 50) + 0.4 * (arm == "b"))
    time = np.round(rng.exponential(1 / hazard), 1) + 0.1
    return pd.DataFrame(
        {
            "time": time,
            "died": (rng.random(n) < event_rate).astype(int),
            "age": age,
            "bmi": rng.normal(27, 4, n),
            "arm": arm,
            "label": "x",
            "score": rng.normal(0, 1, n),
        }
    )


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"time": "time", "event": "died"}, "needs the parameter(s) ['covariates']"),
        ({**BASE, "covariates": []}, "at least one covariate"),
        ({**BASE, "event": "time"}, "must be different columns"),
        ({**BASE, "covariates": ["age", "time"]}, "is the time or the event column"),
        ({**BASE, "ties": "exact"}, "'ties' must be one of ['efron', 'breslow']"),
        ({**BASE, "stratified": "no"}, "'stratified' must be true or false"),
        ({**BASE, "max_iter": 1}, "'max_iter' must be a whole number from 2 to 100"),
        ({**BASE, "tol": 0}, "'tol' must be a number above 0"),
        ({**BASE, "strata": "node"}, "unknown cox parameter(s) ['strata']"),
        ({**BASE, "covariates": ["age; drop"]}, "must be a column name"),
    ],
)
def test_bad_parameters_say_what_is_wrong(params, fragment) -> None:
    with pytest.raises(InvalidRequest) as err:
        COX.validate(params)
    assert fragment in str(err.value)


def test_unstratified_is_refused_with_the_reason() -> None:
    with pytest.raises(InvalidRequest) as err:
        COX.validate({**BASE, "stratified": False})
    message = str(err.value)
    assert "refused" in message and "risk sets span nodes" in message
    assert "Leave 'stratified' out" in message
    # stratified by node is the default, and may be said explicitly
    assert COX.validate({**BASE, "stratified": True}) == COX.validate(BASE)


def test_schema_problems_name_the_column_and_its_type() -> None:
    problems = COX.schema_problems({"time": "arm", "event": "bmi", "covariates": ["nope"]}, SCHEMA)
    text = " ".join(problems)
    assert "'arm'" in text and "'bmi'" in text and "'nope'" in text
    assert len(problems) == 3


def test_an_event_column_with_other_values_is_refused(tmp_path) -> None:
    frame = survival(100, 1)
    frame.loc[3, "died"] = 2
    source = make_source(tmp_path / "n.db", frame, SCHEMA)
    with pytest.raises(InvalidRequest) as err:
        COX.compute(COX.validate(BASE), source)
    assert "other than 0 and 1" in str(err.value)


def test_too_few_events_per_parameter_blocks_the_round(tmp_path) -> None:
    # Given a node with 200 records but only 8 events, and two parameters
    frame = survival(200, 2, event_rate=0.0)
    frame.loc[:7, "died"] = 1
    source = make_source(tmp_path / "n.db", frame, SCHEMA)

    output = run_round_at_node(COX, {**BASE, "covariates": ["age", "bmi"]}, {}, source, EXACT)

    # Then nothing leaves: 8 - 2 events to spare are fewer than min_residual_df (10)
    assert output.outcome is Outcome.BLOCKED and output.payload == {}
    assert {r.rule for r in output.rules if not r.passed} == {"events_per_parameter"}


def test_a_categorical_covariate_alone_needs_the_policy_to_allow_it(tmp_path) -> None:
    # Given a fit on the arm only (no numeric covariate: every weight is one of two values,
    # so the exact figures are functions of the integer numbers at risk per arm)
    source = make_source(tmp_path / "n.db", survival(400, 3), SCHEMA)
    params = {**BASE, "covariates": ["arm"]}

    # Then the default policy blocks it by table_model alone, and a TRE that allows
    # categorical-only models releases it
    blocked = run_round_at_node(COX, params, {}, source, DisclosurePolicy())
    assert blocked.outcome is Outcome.BLOCKED and blocked.payload == {}
    assert {r.rule for r in blocked.rules if not r.passed} == {"table_model"}
    allowed = DisclosurePolicy(categorical_only_models=True)
    released = run_round_at_node(COX, params, {}, source, allowed)
    assert released.outcome is Outcome.RELEASED
    rules = {r.rule for r in released.rules}
    assert {"level_counts", "events_per_parameter", "leverage", "table_model"} <= rules


def test_a_dominated_numeric_covariate_blocks_the_round(tmp_path) -> None:
    frame = survival(400, 4)
    frame.loc[0, "score"] = 1e6
    source = make_source(tmp_path / "n.db", frame, SCHEMA)

    output = run_round_at_node(
        COX, {**BASE, "covariates": ["score"]}, {}, source, DisclosurePolicy()
    )

    assert output.outcome is Outcome.BLOCKED and output.payload == {}
    assert "nk_dominance" in {r.rule for r in output.rules if not r.passed}


def test_the_researcher_never_receives_a_node_score_or_information(tmp_path) -> None:
    source = make_source(tmp_path / "n.db", survival(300, 5), SCHEMA)
    output = run_round_at_node(COX, BASE, {}, source, EXACT)
    assert {"score", "information", "log_likelihood"} <= set(output.payload)
    assert set(release.researcher_view("cox", output.payload)) == {
        "n",
        "events",
        "covariates",
        "basis",
    }
    assert COX.to_frame(BASE, output.payload) is None


def test_a_fit_that_runs_out_of_rounds_says_it_did_not_converge(tmp_path) -> None:
    nodes = {
        f"tre-{i}": make_source(tmp_path / f"{i}.db", survival(300, 6 + i), SCHEMA)
        for i in range(2)
    }
    run = run_rounds(COX, {**BASE, "covariates": ["age", "arm"], "max_iter": 2}, nodes)
    assert run.result is not None
    assert run.result["model"]["converged"] is False
    assert "did not converge within 2 iterations" in run.result["warning"]


def test_a_round_whose_likelihood_fell_is_retried_at_half_the_step(tmp_path) -> None:
    # Given round 1 done, and a coordinator state that accepted a higher likelihood
    source = make_source(tmp_path / "n.db", survival(300, 8), SCHEMA)
    params = COX.validate(BASE)
    first = {"tre-0": run_round_at_node(COX, BASE, {}, source, EXACT)}
    state = roundtrip(COX.advance(params, COX.initial_state(params), first).state)
    second = {"tre-0": run_round_at_node(COX, BASE, COX.round_params(params, state), source, EXACT)}
    inflated = {**state, "accepted_log_likelihood": 0.0}

    # When the next round's likelihood is below it
    step = COX.advance(params, inflated, second)

    # Then beta goes halfway back to the accepted one, and the job goes on
    assert step.done is False
    assert step.state["halvings"] == 1
    assert step.state["beta"] == pytest.approx([b / 2 for b in state["beta"]])


def test_a_malformed_node_payload_is_refused_naming_the_node(tmp_path) -> None:
    source = make_source(tmp_path / "n.db", survival(300, 9), SCHEMA)
    params = COX.validate(BASE)
    output = run_round_at_node(COX, BASE, {}, source, EXACT)
    bad = dataclasses.replace(output, payload={**output.payload, "information": [[1.0, 2.0]]})
    with pytest.raises(InvalidRequest) as err:
        COX.advance(params, COX.initial_state(params), {"tre-0": bad})
    assert "tre-0" in str(err.value) and "information" in str(err.value)
