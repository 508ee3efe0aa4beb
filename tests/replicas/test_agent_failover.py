"""An agent lists several coordinator replicas and moves to the next when its stream is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtre.errors import InvalidRequest
from node_agent.config import load_config
from node_agent.connection import parse_targets

CONFIG = """
node_id = "tre-a"
coordinator = "{coordinator}"
[tls]
dir = "bundle"
[datasets.cohort]
url = "sqlite:////abs/cohort.sqlite"
table = "cohort"
[datasets.cohort.columns]
age = "integer"
"""


def _load(tmp_path: Path, coordinator: str):
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    for name in ("ca", "cert", "key"):  # config loading only checks the paths
        (bundle / f"{name}.pem").write_text("placeholder\n")
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG.format(coordinator=coordinator))
    return load_config(path)


def test_one_address_still_loads(tmp_path):
    config = _load(tmp_path, "c1.example.org:50051")
    assert parse_targets(config.coordinator) == ["c1.example.org:50051"]


def test_several_replicas_load_in_their_order(tmp_path):
    config = _load(tmp_path, "c1.example.org:50051, c2.example.org:50052")
    assert parse_targets(config.coordinator) == ["c1.example.org:50051", "c2.example.org:50052"]


def test_a_bad_address_in_the_list_is_named(tmp_path):
    with pytest.raises(InvalidRequest, match="'c2.example.org' is not host:port"):
        _load(tmp_path, "c1.example.org:50051,c2.example.org")
