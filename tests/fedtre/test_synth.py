"""Synthetic cohorts: reproducible, in range, different per TRE, and true to their model."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedtre.cli import main as cli
from fedtre.errors import Conflict, InvalidRequest
from fedtre.synth import (
    COLUMN_TYPES,
    LOG_HR,
    PROFILES,
    generate_cohort,
    write_cohorts,
)

_DTYPE_KIND = {"integer": "i", "float": "f"}


def _cohort(profile: int | str, n: int = 3000, seed: int = 7) -> pd.DataFrame:
    return generate_cohort(profile, n, np.random.default_rng(seed))


def test_same_seed_gives_the_same_cohort() -> None:
    pd.testing.assert_frame_equal(_cohort(0, seed=11), _cohort(0, seed=11))
    assert not _cohort(0, seed=11).equals(_cohort(0, seed=12))


def test_columns_and_types_match_the_declaration() -> None:
    cohort = _cohort("london")

    assert list(cohort.columns) == list(COLUMN_TYPES)
    for name, kind in COLUMN_TYPES.items():
        if kind == "string":
            assert cohort[name].map(type).eq(str).all(), name
        else:
            assert cohort[name].dtype.kind == _DTYPE_KIND[kind], name


@pytest.mark.parametrize("profile", range(len(PROFILES)))
def test_values_are_in_range(profile: int) -> None:
    cohort = _cohort(profile)

    assert cohort.age.between(18, 95).all()
    assert set(cohort.sex) == {"F", "M"}
    assert set(cohort.region) <= set(PROFILES[profile].regions)
    assert set(cohort.deprivation) == {1, 2, 3, 4, 5}
    assert set(cohort.smoking) == {"never", "former", "current"}
    assert cohort.bmi.dropna().between(15, 60).all()
    assert 0.005 < cohort.bmi.isna().mean() < 0.04
    assert cohort.sbp.between(80, 240).all() and cohort.sbp.notna().all()
    assert set(cohort.diabetes) == {0, 1} and set(cohort.event) == {0, 1}
    assert (cohort.follow_up_days > 0).all() and cohort.follow_up_days.max() <= 3653


def test_each_tre_covers_its_own_regions() -> None:
    regions = [set(profile.regions) for profile in PROFILES]

    assert sum(len(r) for r in regions) == len(set().union(*regions))


def test_tres_differ_in_population_mix() -> None:
    london, south_west, north_east = _cohort("london"), _cohort("south-west"), _cohort("north-east")

    assert south_west.age.mean() - london.age.mean() > 10
    assert north_east.deprivation.mean() - south_west.deprivation.mean() > 0.6
    assert (north_east.smoking == "current").mean() > 2 * (south_west.smoking == "current").mean()


def test_event_model_recovers_the_documented_hazard_ratios() -> None:
    # Given a large pooled sample, when an exponential (Poisson, log person-time offset)
    # model is fitted, then its log hazard ratios are the documented ones.
    rng = np.random.default_rng(2026)
    pooled = pd.concat([generate_cohort(i, 20_000, rng) for i in range(len(PROFILES))])
    terms = {
        "age": (pooled.age - 50) / 10,
        "male": (pooled.sex == "M").astype(float),
        "current": (pooled.smoking == "current").astype(float),
        "former": (pooled.smoking == "former").astype(float),
        "diabetes": pooled.diabetes.astype(float),
        "sbp": (pooled.sbp - 130) / 10,
        "deprivation": pooled.deprivation - 3,
    }
    x = np.column_stack([np.ones(len(pooled)), *(np.asarray(t, float) for t in terms.values())])
    beta = _fit_poisson(
        x, pooled.event.to_numpy(float), np.log(pooled.follow_up_days.to_numpy(float) / 365.25)
    )

    # Age and sbp are fitted per 10 units, so one tolerance is meaningful for every term.
    expected = {**LOG_HR, "age": 10 * LOG_HR["age"], "sbp": 10 * LOG_HR["sbp"]}
    assert dict(zip(terms, beta[1:], strict=True)) == pytest.approx(expected, abs=0.06)
    assert np.exp(beta[0]) == pytest.approx(0.012, rel=0.25)


def test_write_cohorts_csv_round_trips(tmp_path: Path) -> None:
    paths = write_cohorts(tmp_path, n_nodes=2, rows=300, seed=5)

    assert paths == {"tre-a": tmp_path / "tre-a.csv", "tre-b": tmp_path / "tre-b.csv"}
    frame = pd.read_csv(paths["tre-b"])
    assert list(frame.columns) == list(COLUMN_TYPES) and len(frame) == 300
    assert frame.bmi.isna().any() and frame.age.dtype.kind == "i"


def test_write_cohorts_sqlite_declares_types(tmp_path: Path) -> None:
    paths = write_cohorts(tmp_path, n_nodes=1, rows=500, seed=5, fmt="sqlite")

    with sqlite3.connect(paths["tre-a"]) as connection:
        declared = {row[1]: row[2] for row in connection.execute("PRAGMA table_info(cohort)")}
        (count, missing) = connection.execute(
            "SELECT COUNT(*), SUM(bmi IS NULL) FROM cohort"
        ).fetchone()
    connection.close()
    assert declared["age"] == "INTEGER" and declared["bmi"] == "REAL"
    assert declared["region"] == "TEXT"
    assert count == 500 and missing > 0


def test_a_node_cohort_does_not_depend_on_the_number_of_nodes(tmp_path: Path) -> None:
    two = write_cohorts(tmp_path / "two", n_nodes=2, rows=200, seed=9)
    five = write_cohorts(tmp_path / "five", n_nodes=5, rows=200, seed=9)

    assert two["tre-b"].read_bytes() == five["tre-b"].read_bytes()
    assert five["tre-a"].read_bytes() != five["tre-b"].read_bytes()


def test_write_cohorts_refuses_to_overwrite(tmp_path: Path) -> None:
    paths = write_cohorts(tmp_path, n_nodes=1, rows=50, seed=1)
    before = paths["tre-a"].read_bytes()

    with pytest.raises(Conflict, match="--force"):
        write_cohorts(tmp_path, n_nodes=1, rows=50, seed=2)

    assert paths["tre-a"].read_bytes() == before
    write_cohorts(tmp_path, n_nodes=1, rows=50, seed=2, overwrite=True)
    assert paths["tre-a"].read_bytes() != before


@pytest.mark.parametrize(
    "kwargs", [{"n_nodes": 0}, {"n_nodes": 27}, {"rows": 0}, {"fmt": "parquet"}]
)
def test_write_cohorts_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        write_cohorts(tmp_path / "out", **kwargs)  # type: ignore[arg-type]

    assert not (tmp_path / "out").exists()


def test_unknown_profile_is_rejected() -> None:
    with pytest.raises(InvalidRequest, match="london"):
        _cohort("atlantis")


def test_cli_writes_and_lists_cohorts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_COMMAND_MODULES", ("synth",))

    code = cli.main(["synth", str(tmp_path), "--nodes", "2", "--rows", "40", "--format", "sqlite"])

    out = capsys.readouterr().out
    assert code == 0
    assert str(tmp_path / "tre-b.sqlite") in out and "London" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tre-a.sqlite", "tre-b.sqlite"]


def _fit_poisson(x: np.ndarray, y: np.ndarray, offset: np.ndarray) -> np.ndarray:
    beta = np.zeros(x.shape[1])
    beta[0] = np.log(y.sum() / np.exp(offset).sum())
    for _ in range(25):
        mu = np.exp(x @ beta + offset)
        step = np.linalg.solve(x.T @ (x * mu[:, None]), x.T @ (y - mu))
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return beta
