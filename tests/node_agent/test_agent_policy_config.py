"""The [policy] settings and dataset keys in agent.toml: loaded, checked, written back."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from fedtre.errors import InvalidRequest
from node_agent.config import load_config, write_config
from node_agent.policy import LocalPolicy

DATASET = """
[datasets.cohort]
url = "sqlite:////abs/cohort.sqlite"
table = "cohort"
{key}
[datasets.cohort.columns]
age = "integer"
"""


def agent_toml(policy: str, key: str = "") -> str:
    return f"""
node_id = "tre-a"
coordinator = "127.0.0.1:50051"
[tls]
dir = "bundle"
{policy}
{DATASET.format(key=key)}
"""


FULL_POLICY = """
[policy]
threshold = 12
rounding = "midpoint"
rounding_base = 6
zeros_disclosive = true
dominance_n = 3
dominance_k = 85
p_percent = 15
min_residual_df = 20
hold_for_review = ["summary"]
analyses = ["count", "summary"]

[policy.projects.rare-disease]
threshold = 20
hold_for_review = ["count"]
"""


def test_every_policy_setting_and_project_override_loads(
    write_toml: Callable[..., Path],
) -> None:
    config = load_config(write_toml(agent_toml(FULL_POLICY)))

    policy = config.policy
    assert (policy.threshold, policy.rounding, policy.rounding_base) == (12, "midpoint", 6)
    assert (policy.dominance_n, policy.dominance_k, policy.p_percent) == (3, 85.0, 15.0)
    assert policy.min_residual_df == 20 and policy.hold_for_review == ("summary",)
    rare = LocalPolicy.from_config(config).disclosure_for("rare-disease")
    assert rare.threshold == 20 and set(rare.hold_for_review) == {"summary", "count"}
    assert config.analyses == ("count", "summary")


def test_a_project_override_looser_than_the_tre_is_a_start_up_error(
    write_toml: Callable[..., Path],
) -> None:
    text = agent_toml("[policy]\nthreshold = 10\n[policy.projects.p]\nthreshold = 5\n")
    with pytest.raises(InvalidRequest) as err:
        load_config(write_toml(text))
    message = str(err.value)
    assert "agent.toml: [policy]" in message and "would loosen" in message
    assert "threshold 5 is below 10" in message


def test_a_tre_policy_looser_than_the_defaults_loads_with_a_warning(
    write_toml: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="node_agent.config"):
        config = load_config(write_toml(agent_toml("[policy]\nthreshold = 5\np_percent = 0\n")))
    assert config.policy.threshold == 5
    warning = next(r for r in caplog.records if "looser than fedtre's defaults" in r.getMessage())
    assert "threshold 5 is below 10" in warning.getMessage()


def test_an_impossible_setting_names_the_file_and_the_fix(write_toml: Callable[..., Path]) -> None:
    with pytest.raises(InvalidRequest, match=r"\[policy\]: .*rounding must be one of"):
        load_config(write_toml(agent_toml('[policy]\nrounding = "up"\n')))


def test_a_key_column_is_read_for_url_datasets(write_toml: Callable[..., Path]) -> None:
    config = load_config(write_toml(agent_toml("", key='key = "patient_id"')))
    assert config.datasets["cohort"].key == "patient_id"
    assert "patient_id" not in config.datasets["cohort"].schema.columns  # never advertised
    assert LocalPolicy.from_config(config).keys == {"cohort": "patient_id"}


def test_a_key_column_is_refused_for_csv_datasets(
    write_toml: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "c.csv").write_text("age\n1\n")
    text = """
node_id = "tre-a"
coordinator = "127.0.0.1:50051"
[tls]
dir = "bundle"
[datasets.c]
csv = "c.csv"
key = "age"
[datasets.c.columns]
age = "integer"
"""
    with pytest.raises(InvalidRequest, match="key column is for url datasets only"):
        load_config(write_toml(text))


def test_written_config_reads_back_equal(write_toml: Callable[..., Path], tmp_path: Path) -> None:
    config = load_config(write_toml(agent_toml(FULL_POLICY, key='key = "pid"')))
    again = write_config(tmp_path / "again.toml", config)
    assert again.policy == config.policy
    assert again.datasets["cohort"].key == "pid"
