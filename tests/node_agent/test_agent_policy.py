"""Local policy: the node refuses what it does not serve, with every reason stated."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fedtre.analyses.base import Analysis, DatasetSchema
from fedtre.disclosure import DisclosurePolicy
from fedtre.errors import InvalidRequest, NotFound
from node_agent.config import load_config
from node_agent.policy import LocalPolicy
from node_agent.task import TaskSpec

SCHEMA = DatasetSchema("cohort", {"age": "integer", "sex": "string"})


@pytest.fixture
def policy(row_count: Analysis) -> LocalPolicy:
    return LocalPolicy(
        node_id="tre-a",
        analyses={"rowcount": row_count},
        disclosure=DisclosurePolicy(),
        datasets={"cohort": SCHEMA},
    )


def task(**changes: object) -> TaskSpec:
    base = dict(
        task_id="t-1",
        job_id=1,
        node="tre-a",
        analysis="rowcount",
        dataset="cohort",
        params={"columns": ["age"]},
    )
    return TaskSpec(**{**base, **changes})  # type: ignore[arg-type]


def test_a_task_within_policy_has_no_reasons(policy: LocalPolicy) -> None:
    assert policy.check_task(task()) == []


def test_task_for_another_node_is_refused(policy: LocalPolicy) -> None:
    assert policy.check_task(task(node="tre-b")) == [
        "task is addressed to node 'tre-b', but this node is 'tre-a'"
    ]


def test_analysis_not_served_is_refused(policy: LocalPolicy) -> None:
    assert policy.check_task(task(analysis="glm")) == [
        "analysis 'glm' is not served by this node; it serves ['rowcount']"
    ]


def test_undeclared_dataset_is_refused(policy: LocalPolicy) -> None:
    assert policy.check_task(task(dataset="gp_records")) == [
        "dataset 'gp_records' is not declared by this node; it declares ['cohort']"
    ]


def test_undeclared_columns_are_refused(policy: LocalPolicy) -> None:
    assert policy.check_task(task(params={"columns": ["age", "nhs_number", "postcode"]})) == [
        "column 'nhs_number' is not declared in dataset 'cohort'",
        "column 'postcode' is not declared in dataset 'cohort'",
    ]


def test_invalid_parameters_are_refused(policy: LocalPolicy) -> None:
    reasons = policy.check_task(task(params={"sql": "select * from cohort"}))
    assert reasons == ["invalid parameters for 'rowcount': unknown parameter(s) ['sql']"]


def test_every_reason_is_given_at_once(policy: LocalPolicy) -> None:
    reasons = policy.check_task(task(node="tre-b", analysis="glm", dataset="x"))
    assert len(reasons) == 3


def test_policy_is_built_from_config_through_the_catalogue(
    row_count: Analysis, write_toml: Callable[[str], Path]
) -> None:
    config = load_config(
        write_toml(
            'node_id = "tre-a"\ncoordinator = "h:1"\n[tls]\ndir = "bundle"\n'
            '[policy]\nthreshold = 25\nanalyses = ["rowcount"]\n'
            '[datasets.cohort]\nurl = "sqlite:///c.sqlite"\ntable = "cohort"\n'
            '[datasets.cohort.columns]\nage = "integer"\n'
        )
    )

    def catalogue(name: str) -> Analysis:
        if name != "rowcount":
            raise NotFound(f"no analysis {name!r}")
        return row_count

    policy = LocalPolicy.from_config(config, catalogue)

    assert dict(policy.analyses) == {"rowcount": row_count}
    assert policy.disclosure.threshold == 25
    assert dict(policy.datasets) == {"cohort": DatasetSchema("cohort", {"age": "integer"})}


def test_config_allowing_an_unknown_analysis_fails_at_start(
    write_toml: Callable[[str], Path],
) -> None:
    config = load_config(
        write_toml(
            'node_id = "tre-a"\ncoordinator = "h:1"\n[tls]\ndir = "bundle"\n'
            '[policy]\nanalyses = ["nosuch"]\n'
            '[datasets.cohort]\nurl = "sqlite:///c.sqlite"\ntable = "cohort"\n'
            '[datasets.cohort.columns]\nage = "integer"\n'
        )
    )

    def catalogue(name: str) -> Analysis:
        raise NotFound(f"no analysis {name!r}")

    with pytest.raises(InvalidRequest, match=r"\[policy\] analyses lists 'nosuch'"):
        LocalPolicy.from_config(config, catalogue)


def test_default_analyses_resolve_in_fedtres_catalogue(write_toml: Callable[[str], Path]) -> None:
    config = load_config(
        write_toml(
            'node_id = "tre-a"\ncoordinator = "h:1"\n[tls]\ndir = "bundle"\n'
            '[datasets.cohort]\nurl = "sqlite:///c.sqlite"\ntable = "cohort"\n'
            '[datasets.cohort.columns]\nage = "integer"\n'
        )
    )
    policy = LocalPolicy.from_config(config)
    assert sorted(policy.analyses) == ["count", "crosstab", "summary"]
