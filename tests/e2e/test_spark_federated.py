"""Federated answers with TREs on Spark SQL equal pandas and statsmodels on the pooled data.

Three TREs over the real network, every disclosure rule off: tre-a's data is a Parquet
file and tre-b's a CSV file, both read by Spark SQL (engine = "spark", the test run's one
local SparkSession), tre-c's a DataFrame (SQLite). A last test runs the default rules
(cell-key noise, differencing memory) on the Spark TREs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from fedtre.testing import LocalNetwork, SparkFile

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
GRIDS = {"cohort": {"sbp": 5.0}}


def make_pooled(n: int = 900, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 90, n)
    sex = rng.choice(["F", "M"], n)
    eta = -4.0 + 0.05 * age + 0.4 * (sex == "M")
    frame = pd.DataFrame(
        {
            "age": age,
            "sex": sex,
            "smoking": rng.choice(["never", "former", "current"], n, p=[0.5, 0.3, 0.2]),
            "sbp": (100 + 0.5 * age + rng.normal(0, 12, n)).round(1),
            "bmi": rng.normal(27, 5, n).round(2),
            "diabetic": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int),
        }
    )
    frame.loc[rng.random(n) < 0.05, "bmi"] = np.nan
    return frame


@pytest.fixture(scope="module")
def pooled() -> pd.DataFrame:
    return make_pooled()


def _network(pooled: pd.DataFrame, home, policy):
    import duckdb

    parts = {"tre-a": pooled.iloc[:400], "tre-b": pooled.iloc[400:700], "tre-c": pooled.iloc[700:]}
    parquet, csv = home / "tre-a.parquet", home / "tre-b.csv"
    with duckdb.connect() as conn:
        conn.register("frame", parts["tre-a"])
        conn.execute(f"COPY frame TO '{parquet}' (FORMAT parquet)")
    parts["tre-b"].to_csv(csv, index=False)
    data = {
        "tre-a": {"cohort": SparkFile(parquet)},
        "tre-b": {"cohort": SparkFile(csv)},
        "tre-c": {"cohort": parts["tre-c"].reset_index(drop=True)},
    }
    return LocalNetwork(data, policy=policy, grids=GRIDS)


@pytest.fixture(scope="module")
def network(pooled, spark_master, tmp_path_factory):
    with _network(pooled, tmp_path_factory.mktemp("spark"), EXACT) as net:
        yield net


def run(net, analysis, **params):
    with net.client() as client:
        return client.submit(analysis, dataset="cohort", params=params).result(timeout=120)


def test_the_spark_tres_run_in_spark(network) -> None:
    dialects = {
        node: agent.sources["cohort"].engine.dialect.name for node, agent in network.agents.items()
    }
    assert dialects == {"tre-a": "spark", "tre-b": "spark", "tre-c": "sqlite"}


def test_count_with_a_filter_equals_pandas(network, pooled) -> None:
    result = run(
        network,
        "count",
        filter={
            "and": [
                {"col": "age", "op": ">=", "value": 50},
                {"col": "sex", "op": "==", "value": "F"},
            ]
        },
    )

    assert result.state == "completed"
    assert int(result.combined["n"]) == int(((pooled.age >= 50) & (pooled.sex == "F")).sum())
    assert int(result.nodes["tre-a"].payload["n"]) == int(
        ((pooled.age[:400] >= 50) & (pooled.sex[:400] == "F")).sum()
    )


def test_crosstab_equals_pandas(network, pooled) -> None:
    frame = run(network, "crosstab", rows="smoking", columns="sex").to_frame()

    expected = pd.crosstab(pooled.smoking, pooled.sex)
    assert sorted(frame.index) == sorted(expected.index)
    for row in expected.index:
        for col in expected.columns:
            assert frame.loc[row, col] == expected.loc[row, col], (row, col)


def test_summary_by_group_equals_pandas(network, pooled) -> None:
    frame = run(network, "summary", column="bmi", by="smoking").to_frame()

    expected = pooled.dropna(subset=["bmi"]).groupby("smoking").bmi
    for group, values in expected:
        assert frame.loc[group, "n"] == len(values)
        assert frame.loc[group, "mean"] == pytest.approx(values.mean(), rel=1e-9)
        assert frame.loc[group, "sd"] == pytest.approx(values.std(ddof=1), rel=1e-9)


def test_histogram_equals_numpy(network, pooled) -> None:
    result = run(network, "histogram", column="sbp", width=10, origin=0)

    bins = result.combined["bins"]
    assert sum(n for _, _, n in bins) == len(pooled)
    for lo, hi, n in bins:  # the outer bins are open
        low, high = -np.inf if lo is None else lo, np.inf if hi is None else hi
        assert n == int(((pooled.sbp >= low) & (pooled.sbp < high)).sum()), (lo, hi)
    assert len(bins) > 5


def test_logistic_glm_equals_statsmodels(network, pooled) -> None:
    result = run(
        network, "glm", outcome="diabetic", family="binomial", covariates=["age", "sex", "bmi"]
    )

    assert result.state == "completed"
    data = pooled.dropna(subset=["bmi"])
    fit = smf.glm("diabetic ~ age + sex + bmi", data, family=sm.families.Binomial()).fit(
        tol=1e-14, maxiter=100
    )
    frame = result.to_frame()
    assert list(frame.index) == list(fit.params.index)
    np.testing.assert_allclose(frame["coef"], fit.params, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(frame["std_err"], fit.bse, rtol=1e-5)


def test_the_default_rules_release_noisy_counts_from_spark(
    pooled, spark_master, tmp_path_factory
) -> None:
    # Given the same TREs under the default rules (cell-key noise, differencing memory)
    with _network(pooled, tmp_path_factory.mktemp("spark-default"), None) as net:
        # When a count and a crosstab run
        count = run(net, "count", filter={"col": "age", "op": ">=", "value": 40})
        again = run(net, "count", filter={"col": "age", "op": ">=", "value": 40})
        table = run(net, "crosstab", rows="smoking")

    # Then each Spark TRE releases its count with bounded noise, the same noise each time
    assert count.state == "completed" and table.state == "completed"
    for node, part in (("tre-a", pooled.iloc[:400]), ("tre-b", pooled.iloc[400:700])):
        released = int(count.nodes[node].payload["n"])
        assert abs(released - int((part.age >= 40).sum())) <= 5, node
        assert int(again.nodes[node].payload["n"]) == released, node
