"""What a person types on the first day, through a real network: lists, waits, projects,
misspelt names, refusals, and JSON for scripts (issue 17, items 8 and 9)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from fedtre.cli.main import main
from fedtre.errors import InvalidRequest
from fedtre.testing import LocalNetwork, eventually

EXACT = {"threshold": 0, "rounding_base": 1, "perturbation": "rounding"}


def cohort(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(30, 80, n)
    bmi = rng.normal(27, 4, n).round(1)
    sex = rng.choice(["F", "M"], n)
    sbp = (100 + 0.5 * age + 0.8 * bmi + rng.normal(0, 8, n)).round(1)
    return pd.DataFrame({"age": age, "sex": sex, "bmi": bmi, "sbp": sbp})


@pytest.fixture(scope="module")
def network():
    parts = {"tre-a": cohort(120, 1), "tre-b": cohort(90, 2)}
    with LocalNetwork(
        {node: {"cohort": frame} for node, frame in parts.items()},
        policy=EXACT,
        auto_approve=False,
    ) as net:
        net.pooled = pd.concat(parts.values(), ignore_index=True)
        net.add_project("second", auto_approve=())
        net.add_user("solo", "researcher", projects=("second",))
        yield net


def run(net, capsys, *args: str, user: str = "researcher") -> tuple[int, str, str]:
    where = ["--coordinator", net.api_address, "--identity", str(net.identity(user))]
    code = main([*args, *where])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def approve(net, job_id: int) -> None:
    with net.client("approver") as approver:
        approver.approve(job_id)


def test_a_comma_list_is_a_list_parameter_and_the_fit_is_the_pooled_one(network, capsys):
    # Given a regression typed as a person types it
    args = ["submit", "linear_regression", "--dataset", "cohort", "--project", "default"]
    params = ["--param", "outcome=sbp", "--param", "covariates=age,bmi"]

    # When it is submitted, approved and read back as JSON
    code, out, _ = run(network, capsys, *args, *params, "--no-wait", "--json")
    assert code == 0
    job_id = json.loads(out)["job_id"]
    approve(network, job_id)
    code, out, _ = run(network, capsys, "result", str(job_id), "--wait", "--json")

    # Then the covariates went as a list, and the coefficients are the pooled fit's
    assert code == 0
    result = json.loads(out)
    assert result["params"]["covariates"] == ["age", "bmi"]
    fit = smf.ols("sbp ~ age + bmi", data=network.pooled).fit()
    with network.client() as client:
        frame = client.handle(job_id).result().to_frame()
    assert np.allclose(frame.coef[fit.params.index], fit.params, rtol=1e-8)


def test_one_item_of_a_list_parameter_is_a_list_of_one(network, capsys):
    args = ["submit", "linear_regression", "--dataset", "cohort", "--project", "default"]

    code, out, _ = run(
        network, capsys, *args, "--param", "outcome=sbp", "--param", "covariates=age", "--dry-run"
    )

    assert code == 0 and "no problems" in out


def test_result_wait_stops_at_its_timeout_and_says_how_to_follow(network, capsys):
    # Given a job waiting for an approver
    code, out, _ = run(
        network, capsys, *["submit", "count", "--dataset", "cohort", "--project", "default"],
        "--no-wait", "--json",
    )  # fmt: skip
    job_id = json.loads(out)["job_id"]

    # When the researcher waits for it with a timeout
    code, _, err = run(network, capsys, "result", str(job_id), "--wait", "--timeout", "0.5")

    # Then the wait ends with a clear error, and the job is still there
    assert code == 2
    assert "still pending approval after 0.5 s" in err
    assert f"fedtre result {job_id} --wait" in err
    with network.client() as client:
        assert client.job(job_id).state == "pending_approval"


def test_a_missing_project_with_several_lists_them_and_submits_nothing(network, capsys):
    with network.client("admin") as admin:
        before = len(admin.jobs(limit=1000))

    code, _, err = run(network, capsys, "submit", "count", "--dataset", "cohort")

    assert code == 2
    assert "give --project: you are a member of default, second" in err
    assert "Traceback" not in err
    with network.client("admin") as admin:
        assert len(admin.jobs(limit=1000)) == before


def test_a_missing_project_is_your_only_project(network, capsys):
    code, out, err = run(
        network, capsys, "submit", "count", "--dataset", "cohort", "--no-wait", "--json",
        user="solo",
    )  # fmt: skip

    assert code == 0, err
    assert "project second (your only project)" not in err  # --json: nothing but JSON
    with network.client("admin") as admin:
        assert admin.job(json.loads(out)["job_id"]).project == "second"


def test_a_misspelt_project_suggests_the_nearest_of_yours(network, capsys):
    code, _, err = run(
        network, capsys, "submit", "count", "--dataset", "cohort", "--project", "defualt"
    )

    assert code == 2
    assert "not a member of a project 'defualt'" in err
    assert "your projects: default, second (did you mean 'default'?)" in err


def test_a_misspelt_column_is_said_once_for_every_node_with_a_suggestion(network, capsys):
    args = ["submit", "summary", "--dataset", "cohort", "--project", "default"]

    code, out, _ = run(network, capsys, *args, "--param", "column=spb", "--dry-run")

    assert code == 1
    lines = [line for line in out.splitlines() if "'spb'" in line]
    assert len(lines) == 1
    assert lines[0].startswith("  - tre-a, tre-b: summary column 'spb' is not declared")
    assert "(did you mean 'sbp'?)" in lines[0]


def test_a_submission_with_a_misspelt_column_is_refused_with_each_problem_once(network, capsys):
    args = ["submit", "summary", "--dataset", "cohort", "--project", "default"]

    code, _, err = run(network, capsys, *args, "--param", "column=spb")

    assert code == 2
    assert err.count("'spb'") == 1 and "(did you mean 'sbp'?)" in err
    assert "tre-a, tre-b:" in err


def test_a_refusal_names_the_command_not_the_rpc(network, capsys):
    code, _, err = run(network, capsys, "jobs", "approve", "1")

    assert code == 2
    assert "`fedtre jobs approve` needs one of ['admin', 'approver']" in err
    assert "'researcher' has role 'researcher'" in err
    assert "/fedtre.v1" not in err and "ApproveJob" not in err


def test_a_pending_multi_round_job_shows_no_round(network, capsys):
    args = ["submit", "glm", "--dataset", "cohort", "--project", "default", "--no-wait", "--json"]
    params = ["--param", "outcome=sbp", "--param", "family=poisson", "--param", "covariates=age"]
    code, out, _ = run(network, capsys, *args, *params)
    job_id = json.loads(out)["job_id"]

    code, out, _ = run(network, capsys, "jobs", "show", str(job_id))

    assert code == 0
    assert "pending_approval" in out
    assert "round" not in out
    with network.client() as client:
        assert client.job(job_id).progress is None


def test_json_writes_integers_and_zoned_times(network, capsys):
    args = ["submit", "count", "--dataset", "cohort", "--project", "default", "--no-wait"]
    _, out, _ = run(network, capsys, *args, "--json", "--filter", "age >= 50")
    job_id = json.loads(out)["job_id"]
    approve(network, job_id)

    code, out, _ = run(network, capsys, "result", str(job_id), "--wait", "--json")

    result = json.loads(out)
    assert code == 0
    assert result["combined"]["n"] == int((network.pooled.age >= 50).sum())
    assert type(result["combined"]["n"]) is int
    assert (
        result["params"]["filter"]["value"] == 50
        and type(result["params"]["filter"]["value"]) is int
    )
    created = datetime.fromisoformat(result["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    _, out, _ = run(network, capsys, "nodes", "--json")
    assert all(datetime.fromisoformat(n["last_seen"]).tzinfo is not None for n in json.loads(out))


# -- projects are checked against the network (item 9) ---------------------------------


def create_project(net, capsys, *args: str) -> tuple[int, str, str]:
    expires = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
    return run(
        net, capsys, "projects", "create", *args, "--expires", expires, "--members", "researcher",
        user="admin",
    )  # fmt: skip


def test_a_project_naming_what_the_network_lacks_is_refused_with_suggestions(network, capsys):
    code, _, err = create_project(
        network, capsys, "typo", "--nodes", "tre-z,tre-a", "--datasets", "cohrt",
        "--analyses", "count",
    )  # fmt: skip

    assert code == 2
    assert "unknown node 'tre-z'" in err and "registered nodes: tre-a, tre-b" in err
    assert "dataset 'cohrt' (did you mean 'cohort'?)" in err
    with network.client("admin") as admin:
        assert "typo" not in {p.name for p in admin.admin.projects()}


def test_an_unknown_analysis_suggests_the_nearest(network, capsys):
    code, _, err = create_project(
        network, capsys, "typo2", "--nodes", "tre-a", "--datasets", "cohort", "--analyses", "cuont"
    )

    assert code == 2
    assert "unknown analysis ['cuont'] (did you mean 'count'?)" in err


def test_the_api_answers_invalid_argument_and_a_good_project_is_accepted(network):
    expires = datetime.now(UTC) + timedelta(days=30)
    with network.client("admin") as admin:
        with pytest.raises(InvalidRequest, match="unknown node 'tre-q'"):
            admin.admin.create_project(
                "api-typo", expires=expires, nodes=["tre-q"], datasets=["cohort"],
                analyses=["count"], members=["researcher"],
            )  # fmt: skip
        with pytest.raises(InvalidRequest, match="dataset 'cohrt'"):
            admin.admin.update_project("second", datasets=["cohrt"])

        made = admin.admin.create_project(
            "good", expires=expires, nodes=["tre-a", "tre-b"], datasets=["cohort"],
            analyses=["count"], members=["researcher"],
        )  # fmt: skip
    assert made.nodes == ("tre-a", "tre-b")


# -- a node that is offline at submission (item 8) ---------------------------------------


def test_submitting_to_an_offline_node_warns(tmp_path, capsys):
    frame = cohort(40, 3)
    with LocalNetwork(
        {"tre-a": {"cohort": frame}, "tre-b": {"cohort": frame}}, policy=EXACT, ping_interval=0.3
    ) as net:
        net.stop_agent("tre-b")
        with net.client("admin") as admin:
            eventually(
                lambda: {n.node_id: n.online for n in admin.nodes()}["tre-b"] is False,
                what="tre-b offline",
            )

        code, _, err = run(
            net, capsys, "submit", "count", "--dataset", "cohort", "--project", "default",
            "--no-wait",
        )  # fmt: skip

    assert code == 0
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert re.match(
        r"warning: node tre-b is offline, last seen .* UTC; its task waits", warnings[0]
    )
