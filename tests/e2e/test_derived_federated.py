"""Derived variables over a real network equal statsmodels formulas and pandas on the pooled data.

Three TREs with every disclosure rule off: tre-a's and tre-c's data are DataFrames (SQLite),
tre-b's a Parquet file (DuckDB). Each analysis names derived variables where
columns go; the references are statsmodels' formula API (the same formula where patsy has
the function) and pandas on the pooled cohort.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from fedtre.testing import LocalNetwork

EXACT = {
    "threshold": 0,
    "rounding_base": 1,
    "zeros_disclosive": False,
    "dominance_n": 0,
    "p_percent": 0,
    "perturbation": "rounding",
    "magnitude_noise": 0,
    "min_residual_df": 0,
}
BANDS = "bands(age, [40, 60, 75])"
EVER = 'recode(smoking, {"current": "ever", "former": "ever"})'
BAND_LABELS = ["(-inf, 40)", "[40, 60)", "[60, 75)", "[75, inf)"]


def make_pooled(n: int = 1500, seed: int = 23) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 90, n)
    smoking = rng.choice(["never", "former", "current"], n, p=[0.5, 0.3, 0.2])
    days = rng.integers(30, 3650, n)
    rate = np.exp(-7.5 + 0.02 * age + 0.6 * (smoking == "current"))
    bmi = rng.normal(27, 5, n).round(2)
    bmi[rng.random(n) < 0.05] = np.nan
    born = [dt.date(1930, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 25000, n)]
    return pd.DataFrame(
        {
            "age": age,
            "sex": rng.choice(["F", "M"], n),
            "smoking": smoking,
            "bmi": bmi,
            "sbp": (100 + 0.5 * age + rng.normal(0, 10, n)).round(1),
            "follow_up_days": days,
            "events": rng.poisson(rate * days),
            "born": pd.to_datetime(born),
        }
    )


@pytest.fixture(scope="module")
def pooled() -> pd.DataFrame:
    return make_pooled()


@pytest.fixture(scope="module")
def network(pooled: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    import duckdb

    home = tmp_path_factory.mktemp("derived")
    parts = {
        "tre-a": pooled.iloc[:700],
        "tre-b": pooled.iloc[700:1100],
        "tre-c": pooled.iloc[1100:],
    }
    parquet_path = home / "tre-b.parquet"
    with duckdb.connect() as conn:
        conn.register("frame", parts["tre-b"])
        conn.execute(
            "COPY (SELECT * REPLACE (CAST(born AS DATE) AS born) FROM frame) "
            f"TO '{parquet_path}' (FORMAT parquet)"
        )
    data = {
        "tre-a": {"cohort": parts["tre-a"].reset_index(drop=True)},
        "tre-b": {"cohort": parquet_path},
        "tre-c": {"cohort": parts["tre-c"].reset_index(drop=True)},
    }
    with LocalNetwork(data, policy=EXACT) as net:
        yield net


def _with_derived(pooled: pd.DataFrame) -> pd.DataFrame:
    """The pooled cohort with pandas' own band and recode (patsy has neither)."""
    band = pd.cut(pooled.age, [-np.inf, 40, 60, 75, np.inf], right=False, labels=BAND_LABELS)
    return pooled.assign(
        band=band.astype(str), ever=pooled.smoking.replace({"current": "ever", "former": "ever"})
    )


def test_linear_regression_with_derived_covariates_equals_statsmodels(network, pooled) -> None:
    # Given an OLS with a log outcome, a square, an interaction, bands and a recode
    params = {
        "outcome": "log(sbp)",
        "covariates": ["I(age ** 2)", "age:bmi", "log(bmi)", BANDS, EVER],
    }
    with network.client() as client:
        result = client.submit("linear_regression", dataset="cohort", params=params).result(
            timeout=90
        )

    # Then it equals statsmodels' formula fit of the pooled data, term by term
    data = _with_derived(pooled)
    fit = smf.ols("np.log(sbp) ~ I(age ** 2) + age:bmi + np.log(bmi) + band + ever", data).fit()
    names = {
        "Intercept": "Intercept",
        "I(age ** 2)": "I(age ** 2)",
        "age:bmi": "age:bmi",
        "log(bmi)": "np.log(bmi)",
        **{f"{BANDS}[T.{b}]": f"band[T.{b}]" for b in BAND_LABELS[1:]},
        f"{EVER}[T.never]": "ever[T.never]",
    }
    assert result.state == "completed", result
    frame = result.to_frame()
    assert sorted(frame.index) == sorted(names)
    reference = [names[t] for t in frame.index]
    assert np.allclose(frame.coef, fit.params[reference], rtol=1e-8, atol=0)
    assert np.allclose(frame.std_err, fit.bse[reference], rtol=1e-8, atol=0)


@pytest.mark.parametrize(
    "how", [{"exposure": "follow_up_days"}, {"offset": "log(follow_up_days)"}], ids=str
)
def test_poisson_rate_model_with_exposure_or_log_offset_equals_statsmodels(
    network, pooled, how
) -> None:
    # Given a Poisson rate model: events per day of follow-up, by age band and smoking
    covariates = [BANDS, "smoking", "I(sbp / 100)"]
    params = {"outcome": "events", "family": "poisson", "covariates": covariates, **how}
    with network.client() as client:
        result = client.submit("glm", dataset="cohort", params=params).result(timeout=120)

    # Then it equals statsmodels' GLM with the same exposure
    data = _with_derived(pooled)
    fit = smf.glm(
        "events ~ band + smoking + I(sbp / 100)",
        data,
        family=sm.families.Poisson(),
        exposure=data.follow_up_days,
    ).fit(tol=1e-14, maxiter=100)
    assert result.state == "completed", result
    frame = result.to_frame()
    reference = [t.replace(f"{BANDS}[", "band[") for t in frame.index]
    assert np.allclose(frame.coef, fit.params[reference], rtol=1e-7, atol=0)
    assert np.allclose(frame.std_err, fit.bse[reference], rtol=1e-6, atol=0)
    assert result.model is not None
    assert result.model.deviance == pytest.approx(fit.deviance, rel=1e-8)


def test_a_raw_offset_that_overflows_says_to_take_its_log(network) -> None:
    # Given the follow-up in days as the offset itself (not its log)
    params = {
        "outcome": "events",
        "family": "poisson",
        "covariates": ["age"],
        "offset": "follow_up_days",
    }
    with network.client() as client:
        result = client.submit("glm", dataset="cohort", params=params).result(timeout=120)

    # Then the job fails, and the researcher is told the cause and the fix
    assert result.state == "failed"
    assert "offset must be on the log scale: use log(follow_up_days)" in result.combined["error"]


def test_crosstab_of_derived_rows_and_columns_with_a_derived_filter_equals_pandas(
    network, pooled
) -> None:
    params = {
        "rows": BANDS,
        "columns": EVER,
        "filter": {"col": 'years_between(born, "2020-01-01")', "op": ">=", "value": 30},
    }
    with network.client() as client:
        result = client.submit("crosstab", dataset="cohort", params=params).result(timeout=60)

    data = _with_derived(pooled)
    years = (pd.Timestamp("2020-01-01") - data.born).dt.days / 365.25
    expected = pd.crosstab(data.band[years >= 30], data.ever[years >= 30])
    assert result.state == "completed", result
    table = result.to_frame()
    got = {(str(r), str(c)): int(v) for (r, c), v in table.stack().items()}
    want = {(str(r), str(c)): int(v) for (r, c), v in expected.stack().items()}
    assert {k: v for k, v in got.items() if k in want} == want


def test_summary_of_a_derived_column_by_a_derived_group_equals_pandas(network, pooled) -> None:
    params = {"column": "log(bmi)", "by": "I(age >= 65)"}
    with network.client() as client:
        result = client.submit("summary", dataset="cohort", params=params).result(timeout=60)

    values = np.log(pooled.bmi)
    by = (pooled.age >= 65).map({True: "true", False: "false"})
    expected = values.groupby(by)
    assert result.state == "completed", result
    frame = result.to_frame()
    for level in ("false", "true"):
        row = frame.loc[level]
        assert row["n"] == expected.count()[level]
        assert row["mean"] == pytest.approx(expected.mean()[level], rel=1e-10)
        assert row["sd"] == pytest.approx(expected.std()[level], rel=1e-9)


def test_count_with_filters_on_derived_variables_equals_pandas(network, pooled) -> None:
    text = f'`{BANDS}` == "[40, 60)" and `I(sbp / bmi > 5)` == true'
    from fedtre.analyses.filters import parse_filter_text

    params = {"filter": parse_filter_text(text)}
    with network.client() as client:
        result = client.submit("count", dataset="cohort", params=params).result(timeout=60)

    expected = ((pooled.age >= 40) & (pooled.age < 60) & (pooled.sbp / pooled.bmi > 5)).sum()
    assert result.state == "completed", result
    assert result.combined["n"] == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"column": "log(smoking)"}, "log() takes a number; column 'smoking' is string"),
        ({"column": "bmi*2"}, "write it inside I(), e.g. I(x * 2)"),
        ({"column": "log(weight)"}, "column 'weight' is not declared in dataset 'cohort'"),
    ],
)
def test_a_bad_expression_is_refused_at_submit_pointing_at_the_token(
    network, params, message
) -> None:
    from fedtre.errors import InvalidRequest

    # When a researcher submits a summary of a derived variable that cannot be computed
    with network.client() as client, pytest.raises(InvalidRequest) as caught:
        client.submit("summary", dataset="cohort", params=params)

    # Then nothing is submitted, and the error (INVALID_ARGUMENT) shows the token
    assert message in str(caught.value)
    assert "^" in str(caught.value)


def test_cox_with_derived_covariates_equals_lifelines_stratified_by_node(network, pooled):
    # Given a Cox model of time to first event whose covariates are a log, a band and a recode
    from lifelines import CoxPHFitter

    covariates = ["log(bmi)", BANDS, EVER]
    params = {"time": "follow_up_days", "event": "I(events > 0)", "covariates": covariates}
    with network.client() as client:
        result = client.submit("cox", dataset="cohort", params=params).result(timeout=120)

    # Then it equals lifelines on the pooled complete cases, one stratum per TRE
    assert result.state == "completed", result
    data = _with_derived(pooled).assign(
        log_bmi=np.log(pooled.bmi),
        event=(pooled.events > 0).astype(int),
        node=[0] * 700 + [1] * 400 + [2] * (len(pooled) - 1100),
    )
    data = data.dropna(subset=["log_bmi"])
    design = pd.get_dummies(data[["band", "ever"]], drop_first=True, dtype=float)
    frame = pd.concat([data[["log_bmi", "follow_up_days", "event", "node"]], design], axis=1)
    tight = {"precision": 1e-16, "r_precision": 0.0, "max_steps": 200}
    cph = CoxPHFitter().fit(frame, "follow_up_days", "event", strata=["node"], fit_options=tight)
    names = {
        "log(bmi)": "log_bmi",
        **{f"{BANDS}[T.{b}]": f"band_{b}" for b in BAND_LABELS[1:]},
        f"{EVER}[T.never]": "ever_never",
    }
    combined = result.combined
    assert sorted(combined["terms"]) == sorted(names)
    for term, coef, se in zip(
        combined["terms"], combined["coef"], combined["std_err"], strict=True
    ):
        assert coef == pytest.approx(cph.params_[names[term]], rel=1e-8, abs=1e-12)
        assert se == pytest.approx(cph.standard_errors_[names[term]], rel=1e-8)
