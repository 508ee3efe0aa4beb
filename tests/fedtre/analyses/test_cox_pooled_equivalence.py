"""cox over 2 to 5 SQLite nodes equals the pooled fit stratified by node, on synthetic
cohorts (fedtre.synth, one population profile per node) and on lifelines' Rossi data.

References: lifelines' CoxPHFitter(...).fit(pooled, strata=["node"]) (Efron ties, its
only method) and statsmodels' PHReg(..., strata=node, ties=...) for Efron and Breslow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import patsy
import pytest
import statsmodels.api as sm
from analysis_testkit import EXACT, make_source
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from model_testkit import run_rounds

from fedtre.analyses import CATALOGUE, DatasetSchema
from fedtre.synth import COLUMN_TYPES, generate_cohort

COX = CATALOGUE["cox"]
SYNTH_SCHEMA = DatasetSchema("cohort", dict(COLUMN_TYPES))
SYNTH_COVARIATES = ["age", "sex", "smoking", "bmi", "diabetes", "C(deprivation)"]
ROSSI_COVARIATES = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]
# lifelines stops on its own criteria well before 1e-8; these make it converge fully.
TIGHT = {"precision": 1e-16, "r_precision": 0.0, "max_steps": 200}


def synth_parts(nodes: int) -> list[pd.DataFrame]:
    rng = np.random.default_rng(100 + nodes)
    return [generate_cohort(i, int(rng.integers(300, 500)), rng) for i in range(nodes)]


def rossi_parts(nodes: int) -> list[pd.DataFrame]:
    """Rossi's 432 people (114 arrests) dealt at random to the nodes, arrests evenly, so
    that even five nodes each have the events that seven parameters need (3 per parameter)."""
    rossi = load_rossi().sample(frac=1.0, random_state=nodes)
    rossi = rossi.sort_values("arrest", kind="stable").reset_index(drop=True)
    return [rossi.iloc[i::nodes].reset_index(drop=True) for i in range(nodes)]


def nodes_of(tmp_path: Path, parts: list[pd.DataFrame], schema: DatasetSchema) -> dict:
    return {
        f"tre-{i}": make_source(tmp_path / f"node{i}.db", part, schema)
        for i, part in enumerate(parts)
    }


def pooled_design(
    parts: list[pd.DataFrame], covariates: list[str], time: str, event: str
) -> tuple[pd.DataFrame, list[str]]:
    """The pooled complete cases as patsy codes them (our term names), with the node."""
    pooled = pd.concat([p.assign(node=i) for i, p in enumerate(parts)], ignore_index=True)
    x = patsy.dmatrix(" + ".join(covariates), pooled, return_type="dataframe")
    x = x.drop(columns="Intercept")
    frame = pd.concat([x, pooled.loc[x.index, [time, event, "node"]]], axis=1)
    return frame.reset_index(drop=True), list(x.columns)


# Efron (lifelines' method) over every split; Breslow over the smallest and largest.
CASES = [
    (data, nodes, ties)
    for data in ("synth", "rossi")
    for nodes, ties in [(n, "efron") for n in (2, 3, 4, 5)] + [(2, "breslow"), (5, "breslow")]
]


@pytest.mark.parametrize(("data", "nodes", "ties"), CASES)
def test_cox_equals_the_pooled_fit_stratified_by_node(tmp_path, data, nodes, ties) -> None:
    # Given a dataset split over `nodes` TREs
    if data == "synth":
        parts, schema = synth_parts(nodes), SYNTH_SCHEMA
        time, event, covariates = "follow_up_days", "event", SYNTH_COVARIATES
    else:
        parts = rossi_parts(nodes)
        schema = DatasetSchema("cohort", {c: "integer" for c in parts[0].columns})
        time, event, covariates = "week", "arrest", ROSSI_COVARIATES
    params = {"time": time, "event": event, "covariates": covariates, "ties": ties}

    # When cox is fitted round by round
    run = run_rounds(COX, params, nodes_of(tmp_path, parts, schema), EXACT)

    # Then it equals the pooled fit with one stratum per node
    result = run.result
    assert result is not None and result["model"]["converged"] is True
    frame, names = pooled_design(parts, covariates, time, event)
    # our terms in covariate order; patsy puts categorical terms first
    terms = result["terms"]
    assert sorted(terms) == sorted(names)
    coef, se = np.array(result["coef"]), np.array(result["std_err"])
    reference = sm.PHReg(
        frame[time], frame[terms], status=frame[event], strata=frame["node"], ties=ties
    ).fit(tol=1e-14)
    np.testing.assert_allclose(coef, reference.params, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(se, reference.bse, rtol=1e-8, atol=0)
    assert result["model"]["log_likelihood"] == pytest.approx(reference.llf, rel=1e-10)
    if ties == "efron":
        cph = CoxPHFitter().fit(frame, time, event, strata=["node"], fit_options=TIGHT)
        np.testing.assert_allclose(coef, cph.params_[terms], rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(se, cph.standard_errors_[terms], rtol=1e-8, atol=0)
        np.testing.assert_allclose(result["z"], cph.summary.loc[terms, "z"], rtol=1e-8)
        np.testing.assert_allclose(result["p_value"], cph.summary.loc[terms, "p"], rtol=1e-6)
        np.testing.assert_allclose(
            result["hr_ci_lower"], cph.summary.loc[terms, "exp(coef) lower 95%"], rtol=1e-8
        )
        assert result["model"]["log_likelihood"] == pytest.approx(cph.log_likelihood_, rel=1e-10)
        assert result["model"]["aic_partial"] == pytest.approx(cph.AIC_partial_, rel=1e-10)
    # no figure at beta = 0 reaches the researcher: not the null likelihood, nor round 1's
    assert not {"null_log_likelihood", "lr_chi2", "lr_p_value"} & set(result["model"])
    assert run.progress[0] == {"iteration": 1}
    assert all("log_likelihood" in step for step in run.progress[1:])
    np.testing.assert_allclose(result["hazard_ratio"], np.exp(coef), rtol=1e-12)
    # n and events are the nodes' released counts (exact under this policy)
    assert result["model"]["n"] == len(frame)
    assert result["model"]["events"] == int(frame[event].sum())
    # and each node sent only counts, its design, and score / information / likelihood
    for outputs in run.rounds:
        for output in outputs.values():
            assert set(output.payload) == {
                "n",
                "events",
                "covariates",
                "basis",
                "score",
                "information",
                "log_likelihood",
                "finite",
            }


def test_cox_with_a_filter_and_fixed_levels_equals_the_pooled_fit(tmp_path) -> None:
    # Given synthetic nodes, a filter, and a chosen reference level for smoking
    parts = synth_parts(3)
    params = {
        "time": "follow_up_days",
        "event": "event",
        "covariates": ["age", "smoking", "sbp"],
        "levels": {"smoking": ["never", "former", "current"]},
        "filter": {"col": "age", "op": ">=", "value": 40},
    }

    run = run_rounds(COX, params, nodes_of(tmp_path, parts, SYNTH_SCHEMA), EXACT)

    kept = [p[p.age >= 40].reset_index(drop=True) for p in parts]
    frame, _ = pooled_design(kept, ["age", "smoking", "sbp"], "follow_up_days", "event")
    terms = ["smoking[T.former]", "smoking[T.current]", "age", "sbp"]
    # with "never" as the reference level
    frame["smoking[T.current]"] = [
        float(s == "current") for s in pd.concat(kept, ignore_index=True).smoking
    ]
    frame = frame.drop(columns="smoking[T.never]")
    cph = CoxPHFitter().fit(frame, "follow_up_days", "event", strata=["node"], fit_options=TIGHT)
    assert run.result is not None
    # in statsmodels' order: the categorical terms first
    assert run.result["terms"] == ["smoking[T.former]", "smoking[T.current]", "age", "sbp"]
    np.testing.assert_allclose(run.result["coef"], cph.params_[terms], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(run.result["std_err"], cph.standard_errors_[terms], rtol=1e-8)
