"""Regressions and survival over a real network (mTLS, agents, coordinator) equal the pooled fits.

One LocalNetwork of three agents with every disclosure rule off; tre-c holds never-smokers
only. References: statsmodels on the pooled data.
"""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from fedtre.cli.main import main
from fedtre.client import JobStatus
from fedtre.errors import InvalidRequest
from fedtre.testing import LocalNetwork

EXACT = {
    "threshold": 0,
    "rounding_base": 1,
    "zeros_disclosive": False,
    "dominance_n": 0,
    "p_percent": 0,
}


# The most a sum of three nodes' released n can differ from the true n: the models' n goes
# through the cell-key method (default noise_deviation 3 per node) even with threshold 0.
NOISE = 3 * 3


def make_pooled(n: int = 900, seed: int = 31) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 90, n)
    smoking = rng.choice(["never", "former", "current"], n, p=[0.5, 0.3, 0.2])
    sex = rng.choice(["F", "M"], n)
    current = smoking == "current"
    eta = -5.0 + 0.06 * age + 0.8 * current + 0.3 * (sex == "M")
    hazard = 0.04 * np.exp(0.02 * (age - 50) + 0.5 * current)
    event = rng.exponential(1 / hazard)
    censor = rng.uniform(1, 25, n)
    return pd.DataFrame(
        {
            "age": age,
            "sex": sex,
            "smoking": smoking,
            "sbp": 100 + 0.5 * age + 4 * current + rng.normal(0, 10, n),
            "diabetic": rng.random(n) < 1 / (1 + np.exp(-eta)),
            "time": np.ceil(np.minimum(event, censor) * 4) / 4,
            "died": (event <= censor).astype(int),
        }
    )


@pytest.fixture(scope="module")
def pooled() -> pd.DataFrame:
    return make_pooled()


@pytest.fixture(scope="module")
def parts(pooled: pd.DataFrame) -> dict[str, pd.DataFrame]:
    never = pooled.index[pooled.smoking == "never"][:110]
    rest = pooled.drop(index=never)
    return {
        "tre-a": rest.iloc[:480].reset_index(drop=True),
        "tre-b": rest.iloc[480:].reset_index(drop=True),
        "tre-c": pooled.loc[never].reset_index(drop=True),
    }


@pytest.fixture(scope="module")
def network(parts):
    with LocalNetwork(
        {node: {"cohort": frame} for node, frame in parts.items()}, policy=EXACT
    ) as net:
        yield net


def test_glm_over_the_network_equals_pooled_and_shows_progress(network, pooled) -> None:
    # Given a logistic regression submitted by the researcher
    params = {"outcome": "diabetic", "family": "binomial", "covariates": ["age", "sex", "smoking"]}
    seen: list[JobStatus] = []
    with network.client() as client:
        handle = client.submit("glm", dataset="cohort", params=params)
        # When the job runs round after round, followed through the job's status
        handle.wait(timeout=120, progress=seen.append)
        result = handle.result(timeout=10)

    # Then it equals statsmodels' fit of the pooled data
    assert result.state == "completed"
    data = pooled.assign(diabetic=pooled.diabetic.astype(int))
    model = smf.glm("diabetic ~ age + sex + smoking", data, family=sm.families.Binomial())
    fit = model.fit(tol=1e-14, maxiter=100)
    se = np.sqrt(np.diag(np.linalg.inv(-model.hessian(fit.params.to_numpy()))))
    frame = result.to_frame()
    assert list(frame.index) == list(fit.params.index)  # statsmodels' order
    assert list(frame.index) == [
        "Intercept",
        "sex[T.M]",
        "smoking[T.former]",
        "smoking[T.never]",
        "age",
    ]
    assert list(frame.columns) == ["coef", "std_err", "z", "p_value", "ci_lower", "ci_upper"]
    assert np.allclose(frame.coef, fit.params[frame.index], rtol=1e-8, atol=0)
    order = [list(fit.params.index).index(t) for t in frame.index]
    assert np.allclose(frame.std_err, se[order], rtol=1e-8, atol=0)
    model_fit = result.model
    assert model_fit is not None
    # n is the sum of the released (cell-key perturbed) n's; df_resid follows it
    assert abs(model_fit.n - len(pooled)) <= NOISE
    assert model_fit.df_resid == model_fit.n - len(frame.index)
    assert model_fit.deviance == pytest.approx(fit.deviance, rel=1e-10)
    # the node statistics stay with the coordinator: the researcher gets n and the design
    for node in result.nodes.values():
        assert set(node.payload) == {"n", "covariates", "basis"}
    assert model_fit.converged is True
    # and the researcher saw its progress: round k of at most 25, the deviance from round 2
    running = [s.progress for s in seen if s.state == "running" and s.progress is not None]
    assert running, "no progress was reported while the job ran"
    assert [p.round for p in running] == sorted(p.round for p in running)
    assert {p.max_rounds for p in running} == {25}
    final = seen[-1].progress
    assert final is not None and final.round == model_fit.iterations
    assert final.figures["deviance"] == pytest.approx(fit.deviance, rel=1e-10)
    assert final.describe().startswith(f"round {model_fit.iterations} of at most 25, deviance ")


def test_linear_regression_over_the_network_equals_pooled(network, pooled) -> None:
    with network.client() as client:
        result = client.submit(
            "linear_regression",
            dataset="cohort",
            params={"outcome": "sbp", "covariates": ["age", "smoking", "sex"]},
        ).result(timeout=60)

    fit = smf.ols("sbp ~ age + smoking + sex", pooled).fit()
    frame = result.to_frame()
    assert list(frame.index) == list(fit.params.index)  # statsmodels' order
    assert list(frame.index) == [
        "Intercept",
        "smoking[T.former]",
        "smoking[T.never]",
        "sex[T.M]",
        "age",
    ]
    assert list(frame.columns) == ["coef", "std_err", "t", "p_value", "ci_lower", "ci_upper"]
    assert np.allclose(frame.coef, fit.params[frame.index], rtol=1e-8, atol=0)
    assert np.allclose(frame.std_err, fit.bse[frame.index], rtol=1e-8, atol=0)
    assert np.allclose(frame.t, fit.tvalues[frame.index], rtol=1e-8, atol=0)
    # R-squared from F at the released df: within the count noise of the pooled value
    assert frame.attrs["model"]["r_squared"] == pytest.approx(fit.rsquared, rel=1e-2)
    assert frame.attrs["model"]["f_statistic"] == pytest.approx(fit.fvalue, rel=1e-8)
    assert result.model is not None
    assert abs(result.model.n - fit.nobs) <= NOISE
    assert result.model.df_resid == result.model.n - len(frame.index)
    assert result.model.rss is None and result.model.log_likelihood is None
    for node in result.nodes.values():
        assert set(node.payload) == {"n", "covariates", "basis"}


SURVIVAL_GRID = 0.25
SURVIVAL_END = 10.0
PERMISSIVE = {**EXACT, "perturbation": "rounding", "magnitude_noise": 0, "min_residual_df": 0}


def survival_parts(n: int = 600, seed: int = 17) -> dict[str, pd.DataFrame]:
    """Three nodes; quarter-year times with censorings before the first event (0.25, 0.5),
    between events and tied with them; administrative censoring at 10 years everywhere."""
    rng = np.random.default_rng(seed)
    arm = rng.choice(["a", "b"], n)
    event = 0.6 + rng.exponential(1 / (0.1 * np.where(arm == "b", 1.6, 1.0)))
    censor = np.where(rng.random(n) < 0.3, rng.uniform(0.0, 12.0, n), 99.0)
    time = np.maximum(np.ceil(np.minimum(np.minimum(event, censor), SURVIVAL_END) * 4) / 4, 0.25)
    died = ((event <= censor) & (event <= SURVIVAL_END)).astype(int)
    time[:20] = np.where(np.arange(20) % 2 == 0, 0.25, 0.5)
    died[:20] = 0
    frame = pd.DataFrame({"time": time, "died": died, "arm": arm})
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    parts = {"tre-a": frame.iloc[:150], "tre-b": frame.iloc[150:420], "tre-c": frame.iloc[420:]}
    return {node: part.reset_index(drop=True) for node, part in parts.items()}


@pytest.fixture(scope="module")
def survival_network():
    """The survival nodes, each declaring the grid of quarter years for `time`."""
    parts = survival_parts()
    with LocalNetwork(
        {node: {"cohort": frame} for node, frame in parts.items()},
        policy=PERMISSIVE,
        grids={"cohort": {"time": SURVIVAL_GRID}},
    ) as net:
        yield net, pd.concat(parts.values(), ignore_index=True)


def test_kaplan_meier_over_the_network_equals_pooled(survival_network) -> None:
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test

    network, pooled = survival_network
    first_event = pooled[pooled.died == 1].time.min()
    assert (pooled[pooled.time < first_event].died == 0).sum() >= 20  # censored before it

    with network.client() as client:
        result = client.submit(
            "kaplan_meier",
            dataset="cohort",
            params={"time": "time", "event": "died", "by": "arm"},
        ).result(timeout=60)

    frame = result.to_frame()
    for level in ("a", "b"):
        group = pooled[pooled.arm == level]
        kmf = KaplanMeierFitter().fit(group.time, group.died)
        events = kmf.event_table
        table = frame.loc[level]
        finite = table[table.index.notna()]
        times = finite.index.to_numpy()
        assert np.array_equal(times, np.sort(group.time.unique())[:-1])
        assert np.array_equal(finite.at_risk.to_numpy(int), events.at_risk.loc[times].to_numpy())
        assert np.array_equal(finite.events.to_numpy(int), events.observed.loc[times].to_numpy())
        assert np.array_equal(finite.censored.to_numpy(int), events.censored.loc[times].to_numpy())
        expected = kmf.survival_function_at_times(times).to_numpy()
        assert np.allclose(finite.survival.to_numpy(), expected, rtol=0, atol=1e-8)
        # the open last row: the records at the end of follow-up
        last = table.iloc[-1]
        assert np.isnan(table.index[-1])
        assert last.survival == pytest.approx(kmf.survival_function_.iloc[-1, 0], abs=1e-8)
    test = multivariate_logrank_test(pooled.time, pooled.arm, pooled.died)
    assert frame.attrs["logrank"]["chi2"] == pytest.approx(test.test_statistic, abs=1e-8)
    assert frame.attrs["logrank"]["p_value"] == pytest.approx(test.p_value, abs=1e-8)


def cli(net, *args: str) -> list[str]:
    return [*args, "--coordinator", net.address, "--identity", str(net.identity())]


def test_cli_result_prints_a_regression_readably(network, pooled, capsys) -> None:
    with network.client() as client:
        job = client.submit(
            "glm",
            dataset="cohort",
            params={"outcome": "diabetic", "family": "binomial", "covariates": ["age", "smoking"]},
        )
        job.wait(timeout=120)

    assert main(cli(network, "result", str(job.id))) == 0
    out = capsys.readouterr().out

    lines = out.splitlines()
    header = next(line for line in lines if "coef" in line)
    assert header.split() == ["coef", "std_err", "z", "p_value", "ci_lower", "ci_upper"]
    for term in ("Intercept", "age", "smoking[T.former]", "smoking[T.never]"):
        assert any(line.startswith(term + " ") for line in lines), term
    shown = re.search(r"GLM binomial \(logit link\): n = (\d+)", out)
    assert shown is not None and abs(int(shown.group(1)) - len(pooled)) <= NOISE
    assert "converged after" in out
    assert "deviance = " in out


def test_cli_result_plots_survival_curves_to_png(survival_network, tmp_path, capsys) -> None:
    network, _ = survival_network
    with network.client() as client:
        job = client.submit(
            "kaplan_meier", dataset="cohort", params={"time": "time", "event": "died", "by": "arm"}
        )
        job.wait(timeout=60)
    target = tmp_path / "km.png"

    assert main(cli(network, "result", str(job.id), "--plot", str(target))) == 0

    out = capsys.readouterr().out
    assert f"survival curves drawn to {target}" in out
    assert "log-rank test: chi2 = " in out
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(target)
    assert image.shape[0] > 100 and image.shape[1] > 100
    # the curves were drawn: the image is not a blank canvas
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10


@pytest.fixture(scope="module")
def default_network(parts):
    """The default policy; tre-c has 60 records, only 6 of them diabetic, 4 current smokers."""
    a, b = parts["tre-a"], parts["tre-b"]
    rare = pd.concat(
        [
            a[a.diabetic & (a.smoking != "current")].head(6),
            a[~a.diabetic & (a.smoking == "current")].head(4),
            a[~a.diabetic & (a.smoking != "current")].head(50),
        ]
    ).reset_index(drop=True)
    assert rare.diabetic.sum() == 6 and (rare.smoking == "current").sum() == 4
    data = {"tre-a": {"cohort": a}, "tre-b": {"cohort": b}, "tre-c": {"cohort": rare}}
    with LocalNetwork(data) as net:
        yield net


@pytest.mark.parametrize(
    ("analysis", "params", "rule"),
    [
        ("glm", {"outcome": "diabetic", "family": "binomial", "covariates": ["age"]}, "diabetic"),
        ("linear_regression", {"outcome": "sbp", "covariates": ["age", "smoking"]}, "smoking"),
    ],
)
def test_default_policy_blocks_a_model_before_anything_leaves(
    default_network, analysis, params, rule
) -> None:
    with default_network.client() as client:
        result = client.submit(analysis, dataset="cohort", params=params).result(timeout=60)

    blocked = result.nodes["tre-c"]
    assert blocked.outcome == "blocked"
    assert blocked.payload == {}
    failed = [r for r in blocked.rules if not r.passed]
    # a rare level's members also have high leverage (a level of one record: leverage 1)
    assert "level_counts" in {r.rule for r in failed}
    assert {r.rule for r in failed} <= {"level_counts", "leverage"}
    # the researcher sees the rule families in fixed words: no level, no count, no rule passed
    assert {r.rule for r in blocked.rules} == {r.rule for r in failed}
    for shown in failed:
        assert f"{rule} = " not in shown.detail and "current" not in shown.detail
        assert not any(ch.isdigit() for ch in shown.detail)
    assert result.state == "partial"
    assert result.to_frame() is None or result.to_frame().empty
    assert "coef" not in result.combined or result.combined["coef"] == []
    if analysis == "glm":
        # the fit stopped in round 1: no later round was queued
        assert result.job.progress is not None and result.job.progress.round == 1
        assert "round 1: node 'tre-c' blocked its output" in result.combined["error"]


def test_cli_result_rounds_the_log_rank_figures_of_the_pooled_test(survival_network, capsys):
    from lifelines.statistics import multivariate_logrank_test

    network, pooled = survival_network
    with network.client() as client:
        job = client.submit(
            "kaplan_meier", dataset="cohort", params={"time": "time", "event": "died", "by": "arm"}
        )
        job.wait(timeout=60)

    assert main(cli(network, "result", str(job.id))) == 0

    shown = re.search(r"log-rank test: chi2 = (\S+) on 1 df, p = (\S+)", capsys.readouterr().out)
    test = multivariate_logrank_test(pooled.time, pooled.arm, pooled.died)
    assert shown is not None
    assert shown.group(1) == f"{test.test_statistic:.4g}"  # e.g. 26.08, not 26.084569771123782
    assert shown.group(2) == f"{test.p_value:.4g}"


# -- what the researcher reads: summary(), odds ratios, reprs and HTML --------------------


def summary_rows(text: str, terms: list[str]) -> dict[str, list[float]]:
    """The numbers on each term's row of a summary's table, in the order printed."""
    rows: dict[str, list[float]] = {}
    for line in text.splitlines():
        name = line.split(" ", 1)[0]
        if name in terms and name not in rows:
            rows[name] = [float(v) for v in line.split()[1:]]
    return rows


def test_glm_summary_equals_statsmodels_with_odds_ratios(network, pooled) -> None:
    # Given a logistic regression whose covariates are written numeric first
    params = {"outcome": "diabetic", "family": "binomial", "covariates": ["age", "smoking"]}
    with network.client() as client:
        result = client.submit("glm", dataset="cohort", params=params).result(timeout=120)

    # When the researcher asks for its summary and odds ratios
    summary = result.summary()
    text = str(summary)
    odds = result.odds_ratios()

    # Then the coefficient table lists statsmodels' terms in statsmodels' order, with its
    # figures as statsmodels' own summary rounds them
    data = pooled.assign(diabetic=pooled.diabetic.astype(int))
    fit = smf.glm("diabetic ~ age + smoking", data, family=sm.families.Binomial()).fit(tol=1e-14)
    terms = list(fit.params.index)
    assert list(summary.coefficients.index) == terms
    rows = summary_rows(text.split("Odds ratios")[0], terms)
    assert list(rows) == terms
    ci = fit.conf_int()
    for term in terms:
        coef, se, z, p, lower, upper = rows[term]
        assert coef == pytest.approx(round(fit.params[term], 4), abs=1e-4)
        assert se == pytest.approx(round(fit.bse[term], 3), abs=1e-3)
        assert z == pytest.approx(round(fit.tvalues[term], 3), abs=1e-3)
        assert p == pytest.approx(round(fit.pvalues[term], 3), abs=1e-3)
        assert (lower, upper) == pytest.approx((ci.loc[term, 0], ci.loc[term, 1]), abs=1e-3)
    # the odds ratios with their CIs are exp of the coefficients and of their CIs (ds.glm)
    expected = np.exp(fit.params.drop("Intercept"))
    assert list(odds.index) == terms[1:]
    assert np.allclose(odds.odds_ratio, expected, rtol=1e-8)
    assert np.allclose(odds.ci_lower, np.exp(ci[0].drop("Intercept")), rtol=1e-8)
    assert np.allclose(odds.ci_upper, np.exp(ci[1].drop("Intercept")), rtol=1e-8)
    odds_rows = summary_rows(text.split("Odds ratios")[1], terms)
    for term in terms[1:]:
        assert odds_rows[term][0] == pytest.approx(expected[term], abs=1e-4)
    baseline = 1 / (1 + np.exp(-fit.params["Intercept"]))
    assert "Baseline probability (the intercept" in text and f"= {baseline:.4f} [" in text
    # n used is the released (perturbed) n; n excluded is a count the nodes do not release
    used = re.search(r"No\. Observations:\s+(\d+)", text)
    assert used is not None and abs(int(used.group(1)) - fit.nobs) <= NOISE
    assert re.search(r"No\. excluded \(missing\):\s+not released", text)
    assert re.search(rf"Deviance:\s+{fit.deviance:.2f}", text)
    assert re.search(r"Model Family:\s+Binomial", text) and re.search(r"Converged:\s+True", text)
    # and the notebook shows the same summary as HTML
    assert "<table>" in summary._repr_html_() and "Odds ratios" in summary._repr_html_()


def test_ols_summary_equals_statsmodels_and_a_poisson_glm_has_rate_ratios(network, pooled):
    with network.client() as client:
        ols = client.submit(
            "linear_regression",
            dataset="cohort",
            params={"outcome": "sbp", "covariates": ["age", "sex"]},
        ).result(timeout=60)
        poisson = client.submit(
            "glm",
            dataset="cohort",
            params={"outcome": "died", "family": "poisson", "covariates": ["age"]},
        ).result(timeout=120)

    fit = smf.ols("sbp ~ age + sex", pooled).fit()
    text = str(ols.summary())
    rows = summary_rows(text, list(fit.params.index))
    assert list(rows) == ["Intercept", "sex[T.M]", "age"] == list(fit.params.index)
    for term, (coef, se, t, *_rest) in rows.items():
        assert coef == pytest.approx(round(fit.params[term], 4), abs=1e-4)
        assert se == pytest.approx(round(fit.bse[term], 3), abs=1e-3)
        assert t == pytest.approx(round(fit.tvalues[term], 3), abs=1e-3)
    assert "OLS Regression Results" in text and "Odds ratios" not in text
    assert re.search(rf"F-statistic:\s+{fit.fvalue:.2f}", text)

    pfit = smf.glm("died ~ age", pooled, family=sm.families.Poisson()).fit(tol=1e-14)
    ptext = str(poisson.summary())
    assert "Rate ratios (exp(coef))" in ptext
    rate = summary_rows(ptext.split("Rate ratios")[1], ["age"])["age"][0]
    assert rate == pytest.approx(np.exp(pfit.params["age"]), abs=1e-4)
    with pytest.raises(InvalidRequest, match="binomial"):
        poisson.odds_ratios()


def test_results_and_jobs_read_briefly_in_a_notebook(network, pooled) -> None:
    with network.client() as client:
        # Given a finished model, a count and a job handle
        handle = client.submit(
            "glm",
            dataset="cohort",
            params={"outcome": "diabetic", "family": "binomial", "covariates": ["age"]},
        )
        model = handle.result(timeout=120)
        count = client.submit("count", dataset="cohort").result(timeout=60)
        client_repr, client_html = repr(client), client._repr_html_()

    # Then each repr is one short line: the outcome, the rows, each node in words
    for text in (repr(model), repr(model.job), repr(count), repr(handle), client_repr):
        assert "\n" not in text and len(text) < 300, text
        assert "BEGIN CERTIFICATE" not in text and "xtwx" not in text
    assert repr(model).startswith(f"<Result of job {handle.id} (glm): completed, 2 rows;")
    assert "tre-a: released; tre-b: released; tre-c: released" in repr(model)
    assert repr(model.job).startswith(f"<Job {handle.id} glm on 'cohort': completed;")
    assert repr(model.nodes["tre-a"]) == "<NodeResult tre-a: released>"
    assert network.api_address in client_repr and network.api_address in client_html
    # and the HTML has the combined table, the nodes and what disclosure control did
    page = model._repr_html_()
    assert "<table" in page and "Intercept" in page and "age" in page
    assert "<li><b>tre-a</b>: released</li>" in page
    assert "converged after" in page
    assert "BEGIN CERTIFICATE" not in page and "xtwx" not in page and len(page) < 6000
    job_page = model.job._repr_html_()
    assert f"<b>Job {handle.id}</b>" in job_page and "<li><b>tre-c</b>: released</li>" in job_page
    assert "why:" not in job_page  # a completed job has no cause to state
    notes = {
        r.detail for part in count.nodes.values() for r in part.rules if r.rule == "perturbation"
    }
    assert notes and all(html.escape(n) in count._repr_html_() for n in notes)
    assert "not exact counts" in count._repr_html_()


def test_count_to_frame_is_its_combined_n(network) -> None:
    with network.client() as client:
        result = client.submit("count", dataset="cohort").result(timeout=60)

    frame = result.to_frame()
    assert list(frame.columns) == ["n"] and list(frame.index) == ["all"]
    assert frame.loc["all", "n"] == result.combined["n"]
    assert str(frame.dtypes["n"]) == "Int64"
    # each node's part is a frame too
    for node in result.nodes.values():
        assert node.table.loc["all", "n"] == node.payload["n"]


def test_wait_with_progress_draws_one_bar_of_rounds(network, capsys) -> None:
    with network.client() as client:
        handle = client.submit(
            "glm",
            dataset="cohort",
            params={"outcome": "diabetic", "family": "binomial", "covariates": ["age"]},
        )
        status = handle.wait(timeout=120, progress=True)

    err = capsys.readouterr().err
    assert status.state == "completed"
    assert f"job {handle.id}" in err and "rounds" in err
    # tqdm redraws its one line with \r; the last drawing is the full bar
    last = err.rstrip("\n").split("\r")[-1]
    assert "100%" in last and "completed" in last
    assert "JobStatus(" not in err  # no status objects printed


def test_a_fit_that_did_not_converge_says_so_in_its_summary_and_html(network) -> None:
    params = {"outcome": "diabetic", "family": "binomial", "covariates": ["age"], "max_iter": 2}
    with network.client() as client:
        result = client.submit("glm", dataset="cohort", params=params).result(timeout=60)

    assert result.state == "completed" and result.model.converged is False
    assert re.search(r"Converged:\s+False", str(result.summary()))
    assert "did not converge within 2 iterations" in str(result.summary())
    assert "<b>warning:</b> the fit did not converge" in result._repr_html_()
