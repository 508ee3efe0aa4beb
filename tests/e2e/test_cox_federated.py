"""cox over a real network (mTLS, agents, coordinator, rounds) equals the pooled fit
stratified by node: lifelines' Rossi data over five TREs with every rule off (its 432
people, split five ways, fail the default leverage rule: the most a record may weigh in
its own fit is 1/10, and a node of 86 with a skewed `prio` exceeds it), and synthetic
cohorts (fedtre.synth) over two TREs under the default disclosure policy.

References: lifelines' CoxPHFitter(...).fit(pooled, strata=["node"]) (Efron) and
statsmodels' PHReg(..., strata=node, ties="breslow").
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import patsy
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi

from fedtre.analyses.cox import CoxFit
from fedtre.cli.main import main
from fedtre.client import JobStatus
from fedtre.errors import InvalidRequest
from fedtre.synth import generate_cohort
from fedtre.testing import LocalNetwork

ROSSI = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]
NODES = 5
# lifelines stops on its own criteria well before 1e-8; these make it converge fully.
TIGHT = {"precision": 1e-16, "r_precision": 0.0, "max_steps": 200}
# The most a sum of two nodes' released counts can differ from the true one under the
# default cell-key perturbation (noise of at most 3 per node).
NOISE = 3 * 2
# Every rule off and counts exact, as tests/e2e/test_models_federated.py's EXACT, with
# rounding to 1 so the released n and events are the true ones.
EXACT = {
    "threshold": 0,
    "rounding_base": 1,
    "perturbation": "rounding",
    "zeros_disclosive": False,
    "dominance_n": 0,
    "p_percent": 0,
}


def rossi_parts() -> dict[str, pd.DataFrame]:
    """Rossi's people dealt at random to five TREs, arrests evenly (22 or 23 each)."""
    rossi = load_rossi().sample(frac=1.0, random_state=5)
    rossi = rossi.sort_values("arrest", kind="stable").reset_index(drop=True)
    return {f"tre-{i}": rossi.iloc[i::NODES].reset_index(drop=True) for i in range(NODES)}


def pooled_of(parts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([p.assign(node=node) for node, p in parts.items()], ignore_index=True)


@pytest.fixture(scope="module")
def rossi_network():
    parts = rossi_parts()
    data = {node: {"cohort": frame} for node, frame in parts.items()}
    with LocalNetwork(data, policy=EXACT) as net:
        yield net, pooled_of(parts)


@pytest.fixture(scope="module")
def synth_network():
    rng = np.random.default_rng(2026)
    parts = {f"tre-{i}": generate_cohort(i, 700, rng) for i in range(2)}
    with LocalNetwork({node: {"cohort": frame} for node, frame in parts.items()}) as net:
        yield net, pooled_of(parts)


def test_cox_over_five_nodes_equals_lifelines_on_rossi(rossi_network) -> None:
    # Given Rossi's data over five TREs
    network, pooled = rossi_network

    # When the researcher fits the Cox model
    with network.client() as client:
        result = client.submit(
            "cox",
            dataset="cohort",
            params={"time": "week", "event": "arrest", "covariates": ROSSI},
        ).result(timeout=120)

    # Then the coefficients and standard errors are lifelines' pooled fit stratified by node
    assert result.state == "completed", result.combined
    cph = CoxPHFitter().fit(
        pooled[[*ROSSI, "week", "arrest", "node"]],
        "week",
        "arrest",
        strata=["node"],
        fit_options=TIGHT,
    )
    frame = result.to_frame()
    assert list(frame.index) == ROSSI
    assert list(frame.columns) == [
        "coef",
        "hazard_ratio",
        "std_err",
        "z",
        "p_value",
        "ci_lower",
        "ci_upper",
        "hr_ci_lower",
        "hr_ci_upper",
    ]
    summary = cph.summary.loc[ROSSI]
    np.testing.assert_allclose(frame.coef, summary["coef"], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(frame.std_err, summary["se(coef)"], rtol=1e-8)
    np.testing.assert_allclose(frame.hazard_ratio, summary["exp(coef)"], rtol=1e-8)
    np.testing.assert_allclose(frame.hr_ci_lower, summary["exp(coef) lower 95%"], rtol=1e-8)
    np.testing.assert_allclose(frame.hr_ci_upper, summary["exp(coef) upper 95%"], rtol=1e-8)
    np.testing.assert_allclose(frame.p_value, summary["p"], rtol=1e-6)
    model = result.model
    assert isinstance(model, CoxFit)
    assert model.log_likelihood == pytest.approx(cph.log_likelihood_, rel=1e-10)
    assert model.aic_partial == pytest.approx(cph.AIC_partial_, rel=1e-10)
    assert model.converged is True and model.concordance is None
    assert model.n == len(pooled) and model.events == int(pooled.arrest.sum())


def test_breslow_over_the_network_equals_statsmodels(rossi_network) -> None:
    network, pooled = rossi_network
    with network.client() as client:
        result = client.submit(
            "cox",
            dataset="cohort",
            params={"time": "week", "event": "arrest", "covariates": ROSSI, "ties": "breslow"},
        ).result(timeout=120)

    fit = sm.PHReg(
        pooled.week, pooled[ROSSI], status=pooled.arrest, strata=pooled.node, ties="breslow"
    ).fit(tol=1e-14)
    frame = result.to_frame()
    np.testing.assert_allclose(frame.coef, fit.params, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(frame.std_err, fit.bse, rtol=1e-8)
    assert result.model is not None and result.model.log_likelihood == pytest.approx(
        fit.llf, rel=1e-10
    )


def test_cox_on_synthetic_cohorts_under_the_default_policy(synth_network) -> None:
    # Given two TREs with different populations and NULLs in bmi, under the default policy
    network, pooled = synth_network
    covariates = ["age", "sex", "smoking", "bmi", "C(deprivation)"]
    seen: list[JobStatus] = []

    # When the researcher fits the Cox model with categorical covariates
    with network.client() as client:
        handle = client.submit(
            "cox",
            dataset="cohort",
            params={"time": "follow_up_days", "event": "event", "covariates": covariates},
        )
        handle.wait(timeout=120, progress=seen.append)
        result = handle.result(timeout=10)

    # Then the fit is lifelines' on the pooled complete cases, terms named as patsy names them
    x = patsy.dmatrix(" + ".join(covariates), pooled, return_type="dataframe")
    frame = pd.concat(
        [x.drop(columns="Intercept"), pooled.loc[x.index, ["follow_up_days", "event", "node"]]],
        axis=1,
    )
    cph = CoxPHFitter().fit(frame, "follow_up_days", "event", strata=["node"], fit_options=TIGHT)
    got = result.to_frame()
    # in statsmodels' (patsy's) order: categorical terms first, then numeric ones
    assert list(got.index) == [c for c in x.columns if c != "Intercept"]
    np.testing.assert_allclose(got.coef, cph.params_[got.index], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got.std_err, cph.standard_errors_[got.index], rtol=1e-8)
    # n and events are sums of the nodes' perturbed counts
    model = result.model
    assert isinstance(model, CoxFit)
    assert abs(model.n - len(frame)) <= NOISE
    assert abs(model.events - int(frame.event.sum())) <= NOISE
    # the researcher receives each node's counts and design, never its score or information
    for node in result.nodes.values():
        assert node.outcome == "released"
        assert set(node.payload) == {"n", "events", "covariates", "basis"}
    # and followed the rounds with the log-likelihood
    running = [s.progress for s in seen if s.progress is not None]
    assert running and running[-1].round == model.iterations
    assert "log-likelihood -" in running[-1].describe()
    # summary() and odds ratios are for the regressions: a cox result says where to look
    with pytest.raises(InvalidRequest, match="to_frame"):
        result.summary()
    with pytest.raises(InvalidRequest, match="binomial"):
        result.odds_ratios()


def test_unstratified_cox_is_refused_with_its_reason(rossi_network) -> None:
    network, _ = rossi_network
    with network.client() as client, pytest.raises(InvalidRequest) as refused:
        client.submit(
            "cox",
            dataset="cohort",
            params={"time": "week", "event": "arrest", "covariates": ROSSI, "stratified": False},
        )
    assert "refused" in str(refused.value) and "risk" in str(refused.value)


def test_cli_prints_a_cox_fit_readably(rossi_network, capsys) -> None:
    network, pooled = rossi_network
    params = '{"time": "week", "event": "arrest", "covariates": ["fin", "age", "prio"]}'

    code = main(
        [
            "submit",
            "cox",
            "--dataset",
            "cohort",
            "--params",
            params,
            "--timeout",
            "120",
            "--coordinator",
            network.address,
            "--identity",
            str(network.identity()),
        ]
    )

    assert code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if "hazard_ratio" in line)
    assert header.split()[:3] == ["coef", "hazard_ratio", "std_err"]
    for term in ("fin", "age", "prio"):
        assert any(line.startswith(term + " ") for line in lines), term
    shown = re.search(r"stratified by node \(efron ties\): n = (\d+), events = (\d+)", out)
    assert shown is not None
    assert int(shown.group(1)) == len(pooled) and int(shown.group(2)) == pooled.arrest.sum()
    assert "log partial likelihood = -" in out and "partial AIC = " in out
    assert "not given: the likelihood-ratio test" in out and "concordance" in out
