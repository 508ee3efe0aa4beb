"""The researcher and admin commands against a real network: tables, JSON, errors, exit codes."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fedtre.cli.main import main
from fedtre.testing import LocalNetwork


@pytest.fixture(scope="module")
def network():
    frame = pd.DataFrame({"age": [30, 45, 60, 75] * 10, "sex": ["F", "M"] * 20})
    with LocalNetwork(
        {"tre-a": {"cohort": frame}, "tre-b": {"cohort": frame.head(20)}},
        policy={"threshold": 0, "rounding_base": 1, "perturbation": "rounding"},
        auto_approve=False,
    ) as net:
        yield net


def fedtre(net, *args: str, user: str = "researcher") -> list[str]:
    return [*args, "--coordinator", net.address, "--identity", str(net.pki / "users" / user)]


def test_submit_approve_result_round_trip(network, capsys):
    assert (
        main(
            fedtre(
                network,
                "submit",
                "count",
                "--dataset",
                "cohort",
                "--filter",
                "age >= 60",
                "--no-wait",
                "--json",
            )
        )
        == 0
    )
    job_id = json.loads(capsys.readouterr().out)["job_id"]

    assert main(fedtre(network, "jobs", "list", "--state", "pending_approval")) == 0
    assert str(job_id) in capsys.readouterr().out
    assert main(fedtre(network, "jobs", "approve", str(job_id), user="admin")) == 0
    capsys.readouterr()
    assert main(fedtre(network, "result", str(job_id), "--wait", "--json")) == 0
    result = json.loads(capsys.readouterr().out)

    assert result["state"] == "completed"
    assert result["combined"]["n"] == 20 + 10
    assert type(result["combined"]["n"]) is int  # "30", not "30.0"
    assert result["params"]["filter"] == {"col": "age", "op": ">=", "value": 60}


def test_result_prints_a_readable_table(network, capsys):
    main(
        fedtre(
            network,
            "submit",
            "crosstab",
            "--dataset",
            "cohort",
            "--param",
            "rows=sex",
            "--no-wait",
            "--json",
        )
    )
    job_id = json.loads(capsys.readouterr().out)["job_id"]
    main(fedtre(network, "jobs", "approve", str(job_id), user="admin"))

    assert main(fedtre(network, "result", str(job_id), "--wait")) == 0
    out = capsys.readouterr().out

    assert "combined result:" in out
    assert "tre-a: released" in out and "tre-b: released" in out
    assert any(line.split() == ["F", "30"] for line in out.splitlines())


def test_dry_run_lists_problems_and_exits_1(network, capsys):
    code = main(
        fedtre(
            network,
            "submit",
            "summary",
            "--dataset",
            "cohort",
            "--param",
            "column=weight",
            "--dry-run",
        )
    )

    out = capsys.readouterr().out
    assert code == 1
    assert "weight" in out and "tre-a" in out and "tre-b" in out


def test_nodes_lists_online_nodes_with_their_columns(network, capsys):
    assert main(fedtre(network, "nodes")) == 0
    out = capsys.readouterr().out
    assert "tre-a" in out and "online" in out and "age:integer" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "count", "--dataset", "cohort", "--filter", "age >=> 3"], "filter"),
        (
            ["submit", "count", "--dataset", "cohort", "--params", "{not json"],
            "--params is not valid JSON",
        ),
        (["submit", "count", "--dataset", "cohort", "--param", "novalue"], "KEY=VALUE"),
        (["jobs", "show", "987654"], "no job 987654"),
        (["jobs", "approve", "1"], "needs one of ['admin', 'approver']"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_code_2(network, capsys, args, message):
    assert main(fedtre(network, *args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_missing_identity_says_how_to_fix_it(capsys, monkeypatch):
    monkeypatch.delenv("FEDTRE_IDENTITY", raising=False)
    assert main(["nodes"]) == 2
    assert "--identity" in capsys.readouterr().err


def test_unreachable_coordinator_is_unavailable_not_a_traceback(network, capsys):
    args = [
        "nodes",
        "--coordinator",
        "127.0.0.1:1",
        "--identity",
        str(network.pki / "users" / "researcher"),
    ]
    assert main(args) == 2
    assert "cannot reach the coordinator" in capsys.readouterr().err


def test_a_first_of_two_approvals_says_how_many_more_are_needed(network, capsys):
    # Given a project whose jobs need two approvers, and a second approver
    network.add_project("two-keys", approvals_required=2, auto_approve=())
    network.add_user("approver-2", "approver", projects=())
    args = ["submit", "count", "--dataset", "cohort", "--project", "two-keys"]
    assert main(fedtre(network, *args, "--no-wait", "--json")) == 0
    job_id = str(json.loads(capsys.readouterr().out)["job_id"])

    def approve(user: str) -> int:  # approvers hold tokens only: the API port
        where = ["--coordinator", network.api_address, "--identity", str(network.identity(user))]
        return main(["jobs", "approve", job_id, *where])

    # When the first approver approves, the job waits and the approver is told why
    assert approve("approver") == 0
    assert capsys.readouterr().out.strip() == (
        f"job {job_id}: your approval is recorded (1 of 2); it runs once 1 more approver(s) approve"
    )

    # and when the second approves, it runs
    assert approve("approver-2") == 0
    assert capsys.readouterr().out.startswith(f"job {job_id} approved: ")


def test_result_shows_whole_number_parameters_as_integers(network, capsys):
    args = [
        "submit",
        "count",
        "--dataset",
        "cohort",
        "--filter",
        "age >= 60",
        "--project",
        "default",
    ]
    assert main(fedtre(network, *args, "--no-wait", "--json")) == 0
    job_id = str(json.loads(capsys.readouterr().out)["job_id"])

    assert main(fedtre(network, "jobs", "show", job_id)) == 0

    params = next(line for line in capsys.readouterr().out.splitlines() if "params" in line)
    assert '"value": 60}' in params and "60.0" not in params
