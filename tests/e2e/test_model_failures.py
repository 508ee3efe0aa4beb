"""A model that fails says why, once, and no node is shown as having released into it.

Two agents on synthetic cohorts (fedtre.synth: follow_up_days in days) behind a real
coordinator; the reference for the fit that works is statsmodels on the pooled records.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from fedtre.report import result_lines
from fedtre.synth import generate_cohort
from fedtre.testing import LocalNetwork

LOG_SCALE = "offset must be on the log scale: use log(follow_up_days)"


@pytest.fixture(scope="module")
def parts() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(7)
    made = {}
    for profile, node in enumerate(("tre-a", "tre-b")):
        cohort = generate_cohort(profile, 500, rng)
        made[node] = cohort.assign(log_follow_up=np.log(cohort.follow_up_days))
    return made


@pytest.fixture(scope="module")
def network(parts):
    with LocalNetwork({node: {"cohort": frame} for node, frame in parts.items()}) as net:
        yield net


def poisson(offset: str) -> dict:
    return {"outcome": "event", "family": "poisson", "covariates": ["age", "sex"], "offset": offset}


def test_an_offset_in_days_fails_once_with_the_log_scale_fix(network) -> None:
    # Given a Poisson model whose offset is the raw follow-up in days
    with network.client() as client:
        result = client.submit("glm", dataset="cohort", params=poisson("follow_up_days")).result(
            timeout=120
        )

    # Then the job failed, with a cause the researcher can act on, on the job itself
    assert result.state == "failed"
    assert LOG_SCALE in result.job.reason
    assert "overflowed" in result.cause and result.cause == result.job.reason
    # stated once in what `fedtre result` prints and in the repr, not once per node
    printed = "\n".join(result_lines(result))
    assert printed.count(LOG_SCALE) == 1
    assert repr(result).count(LOG_SCALE) == 1
    assert result._repr_html_().count(LOG_SCALE) == 1
    # and no node is shown as having released into a result: they answered, nothing combined
    for node in ("tre-a", "tre-b"):
        assert f"  {node}: answered (not combined: the job failed)" in printed
        assert f"{node}: released" not in printed and f"{node}: released" not in repr(result)
    assert result.to_frame() is None


def test_the_same_model_with_the_log_offset_equals_statsmodels(network, parts) -> None:
    with network.client() as client:
        result = client.submit("glm", dataset="cohort", params=poisson("log_follow_up")).result(
            timeout=120
        )

    pooled = pd.concat(parts.values(), ignore_index=True)
    fit = smf.glm(
        "event ~ age + sex", pooled, family=sm.families.Poisson(), offset=pooled.log_follow_up
    ).fit(tol=1e-14)
    assert result.state == "completed" and result.cause == ""
    frame = result.to_frame()
    assert list(frame.index) == list(fit.params.index)
    assert np.allclose(frame.coef, fit.params, rtol=1e-7)
    assert np.allclose(frame.std_err, fit.bse, rtol=1e-7)


def test_every_node_blocking_is_one_stated_cause(network) -> None:
    # Given a summary of a cohort too small at every node
    params = {"column": "age", "filter": {"col": "age", "op": ">", "value": 200}}
    with network.client() as client:
        result = client.submit("summary", dataset="cohort", params=params).result(timeout=60)

    # Then the failed job names both nodes and their one rule, once
    assert result.state == "failed"
    assert result.job.reason.startswith("nodes 'tre-a' and 'tre-b' blocked their output (")
    assert result.job.reason.count("(") == result.job.reason.count(")")
    rule = next(r for r in result.nodes["tre-a"].rules if not r.passed)
    assert result.job.reason.count(rule.detail) == 1
    printed = "\n".join(result_lines(result))
    assert printed.count(rule.detail) == 1
    assert "  tre-a: withheld its output (disclosure rules)" in printed


def test_fedtre_result_prints_the_cause_once_and_no_node_as_released(network, capsys) -> None:
    from fedtre.cli.main import main

    with network.client() as client:
        job = client.submit("glm", dataset="cohort", params=poisson("follow_up_days"))
        job.wait(timeout=120)
    identity = ["--coordinator", network.address, "--identity", str(network.identity())]

    assert main(["result", str(job.id), *identity]) == 0
    out = capsys.readouterr().out

    assert out.count(LOG_SCALE) == 1
    assert "released" not in out
    assert out.count("answered (not combined: the job failed)") == 4  # table and lines, 2 nodes
    assert "decided   by auto-approval\n" in out  # the cause is not an approver's reason
