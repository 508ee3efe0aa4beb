"""Regressions and survival over a real network (mTLS, agents, coordinator) equal the pooled fits.

One LocalNetwork of three agents with every disclosure rule off; tre-c holds never-smokers
only. References: statsmodels on the pooled data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from statsmodels.duration.survfunc import SurvfuncRight, survdiff

from fedtre.cli.main import main
from fedtre.client import JobStatus
from fedtre.testing import LocalNetwork

EXACT = {
    "threshold": 0,
    "rounding_base": 1,
    "zeros_disclosive": False,
    "dominance_n": 0,
    "p_percent": 0,
}


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
    assert list(frame.index) == [
        "Intercept",
        "age",
        "sex[T.M]",
        "smoking[T.former]",
        "smoking[T.never]",
    ]
    assert list(frame.columns) == ["coef", "std_err", "z", "p_value", "ci_lower", "ci_upper"]
    assert np.allclose(frame.coef, fit.params[frame.index], rtol=1e-8, atol=0)
    order = [list(fit.params.index).index(t) for t in frame.index]
    assert np.allclose(frame.std_err, se[order], rtol=1e-8, atol=0)
    model_fit = result.model
    assert model_fit is not None
    assert model_fit.n == len(pooled)
    assert model_fit.df_resid == fit.df_resid
    assert model_fit.deviance == pytest.approx(fit.deviance, rel=1e-10)
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
    assert list(frame.index) == [
        "Intercept",
        "age",
        "smoking[T.former]",
        "smoking[T.never]",
        "sex[T.M]",
    ]
    assert list(frame.columns) == ["coef", "std_err", "t", "p_value", "ci_lower", "ci_upper"]
    assert np.allclose(frame.coef, fit.params[frame.index], rtol=1e-8, atol=0)
    assert np.allclose(frame.std_err, fit.bse[frame.index], rtol=1e-8, atol=0)
    assert np.allclose(frame.t, fit.tvalues[frame.index], rtol=1e-8, atol=0)
    assert frame.attrs["model"]["r_squared"] == pytest.approx(fit.rsquared, rel=1e-8)
    assert result.model is not None
    assert result.model.df_resid == fit.df_resid
    assert result.model.n == fit.nobs


def test_kaplan_meier_over_the_network_equals_pooled(network, pooled) -> None:
    with network.client() as client:
        result = client.submit(
            "kaplan_meier",
            dataset="cohort",
            params={"time": "time", "event": "died", "by": "smoking"},
        ).result(timeout=60)

    frame = result.to_frame()
    for level in ("current", "former", "never"):
        group = pooled[pooled.smoking == level]
        sf = SurvfuncRight(group.time.to_numpy(), group.died.to_numpy())
        table = frame.loc[level]
        at_events = table[table.events > 0]
        assert np.array_equal(at_events.index.to_numpy(), sf.surv_times)
        assert np.array_equal(at_events.at_risk.to_numpy(dtype=int), sf.n_risk.astype(int))
        assert np.allclose(at_events.survival, sf.surv_prob, rtol=1e-12)
        finite = np.isfinite(sf.surv_prob_se) & (sf.surv_prob > 0)
        assert np.allclose(at_events.std_err[finite], sf.surv_prob_se[finite], rtol=1e-10)
    chi2, p = survdiff(pooled.time.to_numpy(), pooled.died.to_numpy(), pooled.smoking.to_numpy())
    assert frame.attrs["logrank"]["chi2"] == pytest.approx(chi2, rel=1e-10)
    assert frame.attrs["logrank"]["p_value"] == pytest.approx(p, rel=1e-8)


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
    assert f"GLM binomial (logit link): n = {len(pooled)}" in out
    assert "converged after" in out
    assert "deviance = " in out


def test_cli_result_plots_survival_curves_to_png(network, tmp_path, capsys) -> None:
    with network.client() as client:
        job = client.submit(
            "kaplan_meier", dataset="cohort", params={"time": "time", "event": "died", "by": "sex"}
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
    assert [r.rule for r in failed] == ["level_counts"]
    assert f"{rule} = " in failed[0].detail
    assert result.state == "partial"
    assert result.to_frame() is None or result.to_frame().empty
    assert "coef" not in result.combined or result.combined["coef"] == []
    if analysis == "glm":
        # the fit stopped in round 1: no later round was queued
        assert result.job.progress is not None and result.job.progress.round == 1
        assert "round 1: node 'tre-c' blocked its output" in result.combined["error"]
