"""The TRE's cell-key settings: its secret (created 0600, kept, refused when exposed), its own
perturbation table, and the grids of released bounds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedtre.disclosure import release
from fedtre.errors import InvalidRequest
from node_agent.config import AgentConfig, DatasetConfig, TlsConfig, load_config, write_config
from node_agent.secret import load_or_create_secret

CONFIG = """
node_id = "tre-a"
coordinator = "127.0.0.1:50051"
state_db = "state/agent.sqlite"
[tls]
dir = "bundle"
[policy]
{policy}
[datasets.cohort]
url = "sqlite:////abs/cohort.sqlite"
table = "cohort"
{dataset}
[datasets.cohort.columns]
age = "integer"
sex = "string"
"""


def _write(tmp_path: Path, *, policy: str = "", dataset: str = "") -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    for name in ("ca", "cert", "key"):
        (bundle / f"{name}.pem").write_text("placeholder\n")
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG.format(policy=policy, dataset=dataset))
    return path


def test_the_secret_is_created_once_with_mode_0600_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cell-key-secret"
    first = load_or_create_secret(path)
    assert len(first) == 32 and (path.stat().st_mode & 0o777) == 0o600
    assert load_or_create_secret(path) == first


def test_a_secret_readable_by_others_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    load_or_create_secret(path)
    os.chmod(path, 0o644)
    with pytest.raises(InvalidRequest, match=f"chmod 600 {path}"):
        load_or_create_secret(path)


def test_the_secret_lives_beside_the_state_db_unless_configured(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path))
    assert config.secret_path == tmp_path / "state" / "agent-cell-key-secret"
    config = load_config(_write(tmp_path, policy='cell_key_secret = "keys/secret"'))
    assert config.secret_path == tmp_path / "keys" / "secret"


def test_a_tres_own_ptable_is_used_for_every_count(tmp_path: Path) -> None:
    rows = ["pcv,ckey,pvalue"] + [
        f"{n},{k},{2 if n >= 10 else -n}" for n in range(1, 31) for k in range(256)
    ]
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    config = load_config(_write(tmp_path, policy='ptable = "p.csv"'))
    assert config.ptable == tmp_path / "p.csv"
    assert release.count(20, 99, config.policy) == 22
    assert release.count(9, 99, config.policy) is None


def test_a_broken_ptable_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("pcv,ckey\n1,0\n")
    with pytest.raises(InvalidRequest, match=r"\[policy\] ptable.*columns pcv, ckey, pvalue"):
        load_config(_write(tmp_path, policy='ptable = "p.csv"'))


def test_grids_are_read_for_numeric_columns_and_advertised(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, dataset="grids = { age = 5 }"))
    assert config.datasets["cohort"].schema.grids == {"age": 5.0}


@pytest.mark.parametrize(
    ("grids", "problem"),
    [
        ("grids = { sex = 5 }", "not a declared numeric column"),
        ("grids = { age = 0 }", "not a positive width"),
        ('grids = { age = "5" }', "not a positive width"),
        ("grids = 5", "must be a table of column = width"),
    ],
)
def test_bad_grids_are_refused_naming_the_fix(tmp_path: Path, grids: str, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        load_config(_write(tmp_path, dataset=grids))


def test_cell_key_settings_round_trip_through_a_written_config(
    tmp_path: Path, tls_dir: Path
) -> None:
    config = AgentConfig(
        node_id="tre-b",
        coordinator="127.0.0.1:6000",
        state_db=tmp_path / "state.sqlite",
        tls=TlsConfig(ca=tls_dir / "ca.pem", cert=tls_dir / "cert.pem", key=tls_dir / "key.pem"),
        datasets={
            "cohort": DatasetConfig(
                "cohort",
                {"age": "integer"},
                url=f"sqlite:///{tmp_path}/c.sqlite",
                table="cohort",
                grids={"age": 5.0},
            )
        },
        cell_key_secret=tmp_path / "secret",
    )
    assert write_config(tmp_path / "agent.toml", config) == config
