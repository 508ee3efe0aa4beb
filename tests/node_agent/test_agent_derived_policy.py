"""[policy] derived: a TRE switches derived variables off, or allows some functions only.

The agent enforces it: a task using a function the TRE does not allow is REFUSED with the
reason, before anything is computed; the coordinator cannot widen it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from fedtre.analyses import CATALOGUE, Outcome
from fedtre.analyses.expressions import FEATURES
from fedtre.disclosure import DisclosurePolicy
from fedtre.errors import InvalidRequest
from node_agent.config import load_config, write_config
from node_agent.executor import Executor, TaskSpec
from node_agent.policy import LocalPolicy
from node_agent.sources.sql import open_sql_source
from node_agent.state import AgentState

COLUMNS = {"age": "integer", "sex": "string", "bmi": "float"}


def agent_toml(policy: str) -> str:
    return f"""
node_id = "tre-a"
coordinator = "127.0.0.1:50051"
[tls]
dir = "bundle"
[policy]
{policy}
[datasets.cohort]
url = "sqlite:////abs/cohort.sqlite"
table = "cohort"
[datasets.cohort.columns]
age = "integer"
"""


@pytest.mark.parametrize(
    ("setting", "allowed"),
    [
        ("", FEATURES),
        ("derived = true", FEATURES),
        ("derived = false", ()),
        ('derived = ["log", "bands"]', ("log", "bands")),
    ],
)
def test_the_setting_loads_and_writes_back(
    write_toml: Callable[..., Path], tmp_path: Path, setting: str, allowed: tuple[str, ...]
) -> None:
    config = load_config(write_toml(agent_toml(setting)))

    assert config.derived == allowed
    again = tmp_path / "again.toml"
    write_config(again, config)
    assert load_config(again).derived == allowed


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('derived = ["logarithm"]', r"unknown function\(s\) \['logarithm'\]"),
        ('derived = "log"', "must be true, false or a list of functions"),
    ],
)
def test_a_wrong_setting_is_explained(
    write_toml: Callable[..., Path], setting: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        load_config(write_toml(agent_toml(setting)))


@pytest.fixture
def source(tmp_path: Path):
    rows = pd.DataFrame({"age": range(20, 80), "sex": ["F", "M"] * 30, "bmi": [27.5] * 60})
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'cohort.sqlite'}")
    with engine.begin() as conn:
        rows.to_sql("cohort", conn, index=False)
    engine.dispose()
    opened = open_sql_source("cohort", f"sqlite:///{tmp_path / 'cohort.sqlite'}", "cohort", COLUMNS)
    yield opened
    opened.engine.dispose()


def _executor(tmp_path: Path, source, derived: frozenset[str]) -> Executor:
    local = LocalPolicy(
        node_id="tre-a",
        analyses={"count": CATALOGUE["count"], "crosstab": CATALOGUE["crosstab"]},
        disclosure=DisclosurePolicy(),
        datasets={"cohort": source.schema},
        derived=derived,
    )
    return Executor(local, {"cohort": source}, AgentState(tmp_path / "state.sqlite"))


def _task(task_id: str, analysis: str, **params: object) -> TaskSpec:
    return TaskSpec(task_id, 1, "tre-a", analysis, "cohort", dict(params))


def test_a_tre_without_derived_variables_refuses_them_and_says_why(tmp_path: Path, source) -> None:
    # Given a TRE that switched derived variables off
    executor = _executor(tmp_path, source, frozenset())

    # When a task groups by an age band
    output = executor.run(_task("t-1", "crosstab", rows="bands(age, [40, 60])"))

    # Then it is refused with the reason, and nothing was computed or released
    assert output.outcome is Outcome.REFUSED
    assert output.payload == {}
    assert "this TRE does not allow derived variables (bands(age, [40, 60]))" in output.error
    # while declared columns are still served
    assert executor.run(_task("t-2", "crosstab", rows="sex")).outcome is not Outcome.REFUSED


def test_a_tre_allowing_some_functions_refuses_the_others_by_name(tmp_path: Path, source) -> None:
    # Given a TRE allowing log and bands only
    executor = _executor(tmp_path, source, frozenset({"log", "bands"}))

    # When one task uses bands and another an interaction with arithmetic
    allowed = executor.run(_task("t-1", "crosstab", rows="bands(age, [40, 60])"))
    refused = executor.run(
        _task("t-2", "count", filter={"col": "I(age * 2):bmi", "op": ">", "value": 1})
    )

    # Then the first runs; the second is refused, naming what is not allowed and what is
    assert allowed.outcome is not Outcome.REFUSED
    assert refused.outcome is Outcome.REFUSED
    assert "does not allow arithmetic, interaction in derived variables" in refused.error
    assert "it allows: bands, log" in refused.error
