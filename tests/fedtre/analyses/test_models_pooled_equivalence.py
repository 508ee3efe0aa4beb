"""Federated linear_regression and glm equal statsmodels' fits of the pooled data.

Every split is uneven, and in each the first node holds a single level of a categorical
covariate (so its design lacks that covariate's other levels: the coordinator's union of
levels must map its sums into the pooled design). The references are statsmodels' formula
API on the pooled complete cases; standard errors of GLMs are compared with the inverse
of statsmodels' Hessian at its (tightly converged) maximum-likelihood estimate.

EXACT_COUNTS releases counts exactly (rounding base 1), so every figure, n included,
equals the pooled fit's. Under NOISY (the default cell-key noise and the default NK and
p% rules, on data no column of which is dominated) the coefficients, standard errors and
test statistics still equal the pooled fit's to 1e-8 (they come from the exact model
statistics) while n is the sum of the released, perturbed n's.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from analysis_testkit import run_federated
from model_testkit import make_model_nodes, model_cohort, run_rounds, split_with_single_level

from fedtre.analyses import get_analysis
from fedtre.disclosure import DisclosurePolicy
from fedtre.errors import InvalidRequest

# Counts released exactly, every rule off: the whole result equals the pooled fit.
EXACT_COUNTS = DisclosurePolicy(
    threshold=0,
    perturbation="rounding",
    rounding_base=1,
    zeros_disclosive=False,
    dominance_n=0,
    p_percent=0,
    min_residual_df=0,
    magnitude_noise=0,
    categorical_only_models=True,
)
# The default count noise and dominance rules; a threshold of 1 so that the small nodes'
# rare levels do not block (level_counts is tested in test_model_disclosure.py); models
# without a numeric covariate allowed, to check their fit (table_model: test_models_release).
NOISY = DisclosurePolicy(threshold=1, min_residual_df=0, categorical_only_models=True)
RTOL = 1e-8
POOLED_N = 900
# sizes, and the (column, level) the first node holds alone
SPLITS = {
    "2 nodes": ([160, 740], ("smoking", "never")),
    "3 nodes": ([90, 510, 300], ("sex", "F")),
    "4 nodes": ([120, 45, 400, 335], ("smoking", "former")),
    "5 nodes": ([60, 300, 70, 350, 120], ("smoking", "never")),
}


@pytest.fixture(params=list(SPLITS), scope="module")
def network(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    sizes, (column, level) = SPLITS[request.param]
    pooled = model_cohort(POOLED_N, seed=20261201)
    parts = split_with_single_level(pooled, sizes, column, level)
    assert parts[0][column].nunique() == 1
    nodes = make_model_nodes(tmp_path_factory.mktemp("models"), parts)
    yield pd.concat(parts, ignore_index=True), nodes
    for source in nodes.values():
        source.engine.dispose()


def close(got: Any, expected: Any, rtol: float = RTOL, atol: float = 0.0) -> bool:
    return bool(np.allclose(np.asarray(got, float), np.asarray(expected, float), rtol, atol))


def max_rel(got: Any, expected: Any) -> float:
    g, e = np.asarray(got, float), np.asarray(expected, float)
    return float(np.max(np.abs(g - e) / np.abs(e)))


def formula(outcome: str, covariates: list[str]) -> str:
    return f"{outcome} ~ " + (" + ".join(covariates) if covariates else "1")


# -- linear regression -----------------------------------------------------------------

OLS_MODELS = {
    "numeric and categorical": ["age", "bmi", "sex", "smoking", "C(site)", "diabetic"],
    "one numeric": ["age"],
    "categorical only": ["smoking", "sex"],
    "intercept only": [],
}


@pytest.mark.parametrize("model", list(OLS_MODELS))
def test_linear_regression_equals_pooled_ols(network, model: str) -> None:
    # Given a cohort split unevenly, one node with a single level of a covariate
    pooled, nodes = network
    covariates = OLS_MODELS[model]

    # When every node sends its sufficient statistics and the coordinator solves
    result = run_federated(
        get_analysis("linear_regression"),
        {"outcome": "sbp", "covariates": covariates},
        nodes,
        EXACT_COUNTS,
    )

    # Then the table and figures are statsmodels' OLS of the pooled complete cases
    fit = smf.ols(formula("sbp", covariates), pooled).fit()
    terms = result["terms"]
    assert terms[0] == "Intercept"
    assert sorted(terms) == sorted(fit.params.index)
    ci = fit.conf_int()
    assert close(result["coef"], fit.params[terms])
    assert close(result["std_err"], fit.bse[terms])
    assert close(result["t"], fit.tvalues[terms])
    # p values and interval bounds near zero: relative to the standard error's scale
    assert close(result["p_value"], fit.pvalues[terms], rtol=1e-6, atol=1e-300)
    assert close(result["ci_lower"], ci[0][terms], atol=RTOL * fit.bse[terms].max())
    assert close(result["ci_upper"], ci[1][terms], atol=RTOL * fit.bse[terms].max())
    m = result["model"]
    assert m["n"] == fit.nobs
    assert m["df_resid"] == fit.df_resid
    assert m["df_model"] == fit.df_model
    # with the exact standard errors these would state the exact n: never given
    assert m["rss"] is None and m["scale"] is None
    assert m["log_likelihood"] is None and m["aic"] is None
    if covariates:
        assert close(m["r_squared"], fit.rsquared)
        assert close(m["adj_r_squared"], fit.rsquared_adj)
        assert close(m["f_statistic"], fit.fvalue)
    assert result["withheld_by"] == []
    assert result["nodes"] == {"included": sorted(nodes), "excluded": {}}


def test_linear_regression_terms_come_in_statsmodels_order(network) -> None:
    pooled, nodes = network
    covariates = ["C(site)", "bmi", "smoking", "age", "diabetic"]

    result = run_federated(
        get_analysis("linear_regression"),
        {"outcome": "sbp", "covariates": covariates},
        nodes,
        EXACT_COUNTS,
    )

    # patsy lists the categorical terms first, then the numeric ones, in formula order
    fit = smf.ols("sbp ~ C(site) + bmi + smoking + age + diabetic", pooled).fit()
    assert result["terms"] == list(fit.params.index)
    assert result["terms"] == [
        "Intercept",
        "C(site)[T.2]",
        "C(site)[T.3]",
        "C(site)[T.4]",
        "smoking[T.former]",
        "smoking[T.never]",
        "diabetic[T.True]",
        "bmi",
        "age",
    ]
    assert close(result["coef"], fit.params.to_numpy())
    assert close(result["std_err"], fit.bse.to_numpy())


def test_linear_regression_with_filter_equals_pooled_subset(network) -> None:
    pooled, nodes = network
    f = {"and": [{"col": "age", "op": ">=", "value": 40}, {"col": "arm", "op": "!=", "value": "c"}]}

    result = run_federated(
        get_analysis("linear_regression"),
        {"outcome": "sbp", "covariates": ["age", "bmi", "smoking"], "filter": f},
        nodes,
        EXACT_COUNTS,
    )

    subset = pooled[(pooled.age >= 40) & (pooled.arm != "c")]
    fit = smf.ols("sbp ~ age + bmi + smoking", subset).fit()
    assert result["model"]["n"] == fit.nobs
    assert close(result["coef"], fit.params[result["terms"]])
    assert close(result["std_err"], fit.bse[result["terms"]])


def noise_bound(nodes: dict[str, Any]) -> int:
    """The most the sum of the nodes' released n can differ from the true n (D per node)."""
    return NOISY.noise_deviation * len(nodes)


@pytest.mark.parametrize("model", ["numeric and categorical", "intercept only"])
def test_linear_regression_under_count_noise_and_dominance_keeps_the_pooled_fit(
    network, model: str
) -> None:
    # Given undominated data, the default count noise and the NK and p% rules on
    pooled, nodes = network
    covariates = OLS_MODELS[model]
    params = {"outcome": "sbp", "covariates": covariates}

    # When the model is fitted twice
    result = run_federated(get_analysis("linear_regression"), params, nodes, NOISY)
    again = run_federated(get_analysis("linear_regression"), params, nodes, NOISY)

    # Then coefficients, standard errors and t statistics are the pooled fit's, exactly
    fit = smf.ols(formula("sbp", covariates), pooled).fit()
    terms = result["terms"]
    assert close(result["coef"], fit.params[terms])
    assert close(result["std_err"], fit.bse[terms])
    assert close(result["t"], fit.tvalues[terms])
    # and n is the released n: near the true n, the same on every run, df from it
    m = result["model"]
    assert abs(m["n"] - fit.nobs) <= noise_bound(nodes)
    assert m["n"] == again["model"]["n"]
    assert m["df_resid"] == m["n"] - len(terms)
    assert m["rss"] is None and m["scale"] is None and m["log_likelihood"] is None
    # p values and intervals use the released df: near statsmodels' (far tails aside)
    expected_p = fit.pvalues[terms].to_numpy()
    shown = expected_p > 1e-6
    assert close(np.asarray(result["p_value"])[shown], expected_p[shown], rtol=1e-2)
    assert result == again


# -- GLMs ---------------------------------------------------------------------------------

GLM_COVARIATES = ["age", "bmi", "sex", "smoking", "C(site)"]


def pooled_glm(pooled: pd.DataFrame, params: dict[str, Any]) -> tuple[Any, Any, np.ndarray]:
    """statsmodels' GLM of the pooled complete cases: default fit, tight fit, exact SEs."""
    columns = [params["outcome"], *["site" if c == "C(site)" else c for c in params["covariates"]]]
    if params.get("offset"):
        columns.append(params["offset"])
    data = pooled.dropna(subset=columns).copy()
    data[params["outcome"]] = data[params["outcome"]].astype(int)
    family = sm.families.Binomial() if params["family"] == "binomial" else sm.families.Poisson()
    offset = data[params["offset"]] if params.get("offset") else None
    model = smf.glm(
        formula(params["outcome"], params["covariates"]), data, family=family, offset=offset
    )
    default = model.fit()
    tight = model.fit(tol=1e-14, maxiter=100)
    exact_se = np.sqrt(np.diag(np.linalg.inv(-model.hessian(tight.params.to_numpy()))))
    return default, tight, exact_se


def check_glm(result: dict[str, Any], default: Any, tight: Any, exact_se: np.ndarray) -> None:
    terms = result["terms"]
    assert terms[0] == "Intercept"
    assert sorted(terms) == sorted(tight.params.index)
    order = [list(tight.params.index).index(t) for t in terms]
    se = exact_se[order]
    coef = tight.params.to_numpy()[order]
    assert close(result["coef"], coef)
    assert close(result["std_err"], se)
    # statsmodels' default fit computes its standard errors at the estimate before its last
    # step (they are off the exact ones by up to ~1e-7 here); only a sanity check against it
    assert close(result["std_err"], default.bse[terms], rtol=1e-6)
    z = coef / se
    assert close(result["z"], z)
    assert close(result["z"], default.tvalues[terms], rtol=1e-6)
    assert close(result["p_value"], default.pvalues[terms], rtol=1e-5, atol=1e-300)
    ci = default.conf_int()
    assert close(result["ci_lower"], ci[0][terms], atol=1e-7 * se.max())
    assert close(result["ci_upper"], ci[1][terms], atol=1e-7 * se.max())
    m = result["model"]
    assert m["n"] == tight.nobs
    assert m["df_resid"] == tight.df_resid
    assert m["df_model"] == tight.df_model
    assert m["converged"] is True
    assert close(m["deviance"], tight.deviance, rtol=1e-10)
    assert close(m["log_likelihood"], tight.llf, rtol=1e-10)
    assert close(m["aic"], tight.aic, rtol=1e-10)
    # statsmodels stops when the deviance stops changing (tol 1e-8); fedtre when no
    # coefficient moves by more than 1e-10 of itself, which may take one more round
    assert (
        default.fit_history["iteration"] <= m["iterations"] <= default.fit_history["iteration"] + 1
    )


def test_logistic_regression_equals_pooled_glm(network) -> None:
    # Given a cohort split unevenly, one node with a single level of a covariate
    pooled, nodes = network
    params = {"outcome": "diabetic", "family": "binomial", "covariates": GLM_COVARIATES}

    # When the coordinator runs federated IRLS round by round
    run = run_rounds(get_analysis("glm"), params, nodes, EXACT_COUNTS)

    # Then the fit is statsmodels' logistic regression of the pooled data
    assert run.result is not None
    check_glm(run.result, *pooled_glm(pooled, params))
    assert run.result["model"]["family"] == "binomial"
    assert run.result["model"]["link"] == "logit"
    assert "warning" not in run.result


def test_poisson_regression_with_offset_equals_pooled_glm(network) -> None:
    pooled, nodes = network
    params = {
        "outcome": "visits",
        "family": "poisson",
        "covariates": ["age", "smoking", "C(site)", "bmi"],
        "offset": "log_years",
    }

    run = run_rounds(get_analysis("glm"), params, nodes, EXACT_COUNTS)

    assert run.result is not None
    check_glm(run.result, *pooled_glm(pooled, params))
    assert run.result["model"]["link"] == "log"


def test_poisson_regression_without_offset_equals_pooled_glm(network) -> None:
    pooled, nodes = network
    params = {"outcome": "visits", "family": "poisson", "covariates": ["age", "sex"]}

    run = run_rounds(get_analysis("glm"), params, nodes, EXACT_COUNTS)

    assert run.result is not None
    check_glm(run.result, *pooled_glm(pooled, params))


def test_glm_progress_reports_each_round_and_its_deviance(network) -> None:
    pooled, nodes = network
    params = {"outcome": "diabetic", "family": "binomial", "covariates": ["age", "bmi"]}

    run = run_rounds(get_analysis("glm"), params, nodes, EXACT_COUNTS)

    assert run.result is not None
    iterations = run.result["model"]["iterations"]
    assert [p["iteration"] for p in run.progress] == list(range(1, iterations + 1))
    # from round 2 on, the deviance at the previous round's estimate: it never rises
    deviances = [p["deviance"] for p in run.progress[1:]]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(deviances, deviances[1:], strict=False))
    _, tight, _ = pooled_glm(pooled, params)
    assert close(deviances[-1], tight.deviance, rtol=1e-10)


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_glm_under_count_noise_and_dominance_keeps_the_pooled_fit(network, family: str) -> None:
    # Given undominated data, the default count noise and the NK and p% rules on
    pooled, nodes = network
    if family == "binomial":
        params = {"outcome": "diabetic", "family": family, "covariates": GLM_COVARIATES}
    else:
        params = {
            "outcome": "visits",
            "family": family,
            "covariates": ["age", "smoking", "bmi"],
            "offset": "log_years",
        }

    # When the coordinator runs federated IRLS round by round
    run = run_rounds(get_analysis("glm"), params, nodes, NOISY)

    # Then every figure but the counts is the pooled fit's; n is the released n
    assert run.result is not None
    _, tight, exact_se = pooled_glm(pooled, params)
    terms = run.result["terms"]
    order = [list(tight.params.index).index(t) for t in terms]
    assert close(run.result["coef"], tight.params.to_numpy()[order])
    assert close(run.result["std_err"], exact_se[order])
    m = run.result["model"]
    assert close(m["deviance"], tight.deviance, rtol=1e-10)
    assert close(m["log_likelihood"], tight.llf, rtol=1e-10)
    assert abs(m["n"] - tight.nobs) <= noise_bound(nodes)
    assert m["df_resid"] == m["n"] - len(terms)
    # every round released the same n at each node (one cell key for the same records)
    for node in nodes:
        assert len({r[node].payload["n"] for r in run.rounds}) == 1


# -- iteration cap and tolerance ------------------------------------------------------------


def statsmodels_irls(pooled: pd.DataFrame, params: dict[str, Any], k: int) -> np.ndarray:
    """statsmodels' binomial IRLS after exactly k iterations (the same start as fedtre's)."""
    data = pooled.dropna(subset=["diabetic", "age", "bmi", "smoking"]).copy()
    data["diabetic"] = data.diabetic.astype(int)
    model = smf.glm(formula("diabetic", params["covariates"]), data, family=sm.families.Binomial())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unconverged fit is what is asked for here
        fit = model.fit(maxiter=k, tol=1e-300)
    return fit.params


@pytest.mark.parametrize("max_iter", [2, 3])
def test_iteration_cap_stops_unconverged_with_a_warning(network, max_iter: int) -> None:
    pooled, nodes = network
    params = {
        "outcome": "diabetic",
        "family": "binomial",
        "covariates": ["age", "bmi", "smoking"],
        "max_iter": max_iter,
    }

    run = run_rounds(get_analysis("glm"), params, nodes, EXACT_COUNTS)

    assert run.result is not None
    assert len(run.rounds) == max_iter
    m = run.result["model"]
    assert m["iterations"] == max_iter
    assert m["converged"] is False
    assert "did not converge" in run.result["warning"]
    # the estimate is statsmodels' after the same number of IRLS steps from the same start
    expected = statsmodels_irls(pooled, params, max_iter)
    assert close(run.result["coef"], expected[run.result["terms"]], rtol=1e-9)


@pytest.mark.parametrize("tol", [1e-3, 1e-6])
def test_convergence_tolerance_is_honoured(network, tol: float) -> None:
    # Given statsmodels' IRLS path from the same start, step by step
    pooled, nodes = network
    params = {"outcome": "diabetic", "family": "binomial", "covariates": ["age", "bmi", "smoking"]}
    path = [statsmodels_irls(pooled, params, k) for k in range(1, 12)]
    steps = [
        float(np.max(np.abs(b - a) / np.maximum(1.0, np.abs(b))))
        for a, b in zip(path, path[1:], strict=False)
    ]
    # the first iteration k whose step from k - 1 is within tol
    expected = next(i for i, s in enumerate(steps, start=2) if s <= tol)

    # When the federated fit runs with that tolerance
    run = run_rounds(get_analysis("glm"), {**params, "tol": tol}, nodes, EXACT_COUNTS)

    # Then it stops exactly there, converged, at statsmodels' estimate of that iteration
    assert run.result is not None
    assert run.result["model"]["iterations"] == expected
    assert run.result["model"]["converged"] is True
    assert close(run.result["coef"], path[expected - 1][run.result["terms"]], rtol=1e-9)


# -- levels ---------------------------------------------------------------------------------


def test_levels_are_the_union_when_no_node_has_them_all(tmp_path) -> None:
    # Given three nodes none of which has every smoking level
    pooled = model_cohort(600, seed=5)
    parts = [
        pooled[pooled.smoking != "current"].iloc[:200],
        pooled[pooled.smoking != "former"].iloc[:150],
        pooled[pooled.smoking == "never"].iloc[200:260],
    ]
    assert all(p.smoking.nunique() < 3 for p in parts)
    nodes = make_model_nodes(tmp_path, [p.reset_index(drop=True) for p in parts])
    both = pd.concat(parts, ignore_index=True)

    ols = run_federated(
        get_analysis("linear_regression"),
        {"outcome": "sbp", "covariates": ["age", "smoking"]},
        nodes,
        EXACT_COUNTS,
    )
    glm_params = {"outcome": "diabetic", "family": "binomial", "covariates": ["age", "smoking"]}
    glm = run_rounds(get_analysis("glm"), glm_params, nodes, EXACT_COUNTS)

    fit = smf.ols("sbp ~ age + smoking", both).fit()
    assert ols["terms"] == list(fit.params.index)  # statsmodels' order
    assert close(ols["coef"], fit.params[ols["terms"]])
    assert close(ols["std_err"], fit.bse[ols["terms"]])
    assert glm.result is not None
    check_glm(glm.result, *pooled_glm(both, glm_params))


def test_requested_levels_set_the_reference(network) -> None:
    pooled, nodes = network
    levels = {"smoking": ["current", "former", "never"]}

    result = run_federated(
        get_analysis("linear_regression"),
        {"outcome": "sbp", "covariates": ["age", "smoking"], "levels": levels},
        nodes,
        EXACT_COUNTS,
    )

    fit = smf.ols("sbp ~ age + C(smoking, Treatment('current'))", pooled).fit()
    # statsmodels' order: the categorical terms before age
    assert result["terms"] == ["Intercept", "smoking[T.former]", "smoking[T.never]", "age"]
    assert close(result["coef"], fit.params.to_numpy())


@pytest.mark.parametrize("analysis", ["linear_regression", "glm"])
def test_a_level_that_exists_nowhere_is_a_clear_error(network, analysis: str) -> None:
    pooled, nodes = network
    params: dict[str, Any] = {
        "outcome": "sbp" if analysis == "linear_regression" else "diabetic",
        "covariates": ["age", "smoking"],
        "levels": {"smoking": ["never", "former", "current", "vaping"]},
    }
    if analysis == "glm":
        params["family"] = "binomial"

    with pytest.raises(InvalidRequest) as caught:
        if analysis == "glm":
            run_rounds(get_analysis("glm"), params, nodes, EXACT_COUNTS)
        else:
            run_federated(get_analysis(analysis), params, nodes, EXACT_COUNTS)

    message = str(caught.value)
    assert "'vaping'" in message
    assert "smoking" in message
    assert "exist at no node" in message


def test_perfect_separation_stops_at_the_cap_and_says_why(tmp_path) -> None:
    # Given an outcome that age predicts perfectly
    pooled = model_cohort(400, seed=9).dropna(subset=["age"])
    pooled["diabetic"] = pooled.age > 60
    nodes = make_model_nodes(tmp_path, [pooled.iloc[:150], pooled.iloc[150:]])
    params = {"outcome": "diabetic", "family": "binomial", "covariates": ["age"], "max_iter": 12}

    run = run_rounds(get_analysis("glm"), params, nodes, EXACT_COUNTS)

    # Then the fit runs to its cap, does not claim convergence, and names separation
    assert run.result is not None
    assert run.result["model"]["converged"] is False
    assert run.result["model"]["iterations"] == 12
    assert "separation" in run.result["warning"]


def test_a_level_missing_from_the_requested_levels_is_a_clear_error(network) -> None:
    pooled, nodes = network
    params = {
        "outcome": "sbp",
        "covariates": ["age", "smoking"],
        "levels": {"smoking": ["never", "former"]},
    }

    with pytest.raises(InvalidRequest, match=r"level\(s\) \['current'\] that 'levels' does not"):
        run_federated(get_analysis("linear_regression"), params, nodes, EXACT_COUNTS)


@pytest.mark.parametrize(
    ("family", "outcome", "fragment"),
    [("binomial", "visits", "not 0 or 1"), ("poisson", "log_years", "not counts")],
)
def test_an_outcome_the_family_cannot_model_is_refused_at_the_node(
    network, family: str, outcome: str, fragment: str
) -> None:
    # visits has counts above 1; log_years is negative wherever follow-up is under a year
    pooled, nodes = network
    assert pooled.visits.max() > 1 and pooled.log_years.min() < 0
    params = {"outcome": outcome, "family": family, "covariates": ["age"]}

    with pytest.raises(InvalidRequest, match=fragment):
        run_rounds(get_analysis("glm"), params, nodes, EXACT_COUNTS)


def test_glm_with_filter_equals_pooled_subset(network) -> None:
    pooled, nodes = network
    f = {
        "and": [
            {"col": "age", "op": "<", "value": 75},
            {"col": "arm", "op": "in", "value": ["a", "b"]},
        ]
    }
    params = {"outcome": "diabetic", "family": "binomial", "covariates": ["age", "bmi", "sex"]}

    run = run_rounds(get_analysis("glm"), {**params, "filter": f}, nodes, EXACT_COUNTS)

    subset = pooled[(pooled.age < 75) & pooled.arm.isin(["a", "b"])]
    assert run.result is not None
    check_glm(run.result, *pooled_glm(subset, params))
