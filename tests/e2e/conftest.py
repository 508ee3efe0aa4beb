"""A three-TRE network over mutual TLS, shared by the end-to-end tests of one module."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedtre.testing import LocalNetwork

# Uneven split: the three TREs hold 55%, 30% and 15% of the pooled cohort.
SPLIT = (0.55, 0.30, 0.15)
NODES = ("tre-a", "tre-b", "tre-c")


def make_pooled(n: int = 1200, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 95, n),
            "sex": rng.choice(["F", "M"], n),
            "smoking": rng.choice(["never", "former", "current"], n, p=[0.5, 0.3, 0.2]),
            "deprivation": rng.integers(1, 6, n),
            "sbp": rng.normal(132, 18, n).round(1),
            "bmi": rng.normal(27, 5, n),
        }
    )
    frame.loc[rng.random(n) < 0.05, "bmi"] = np.nan
    return frame


def split(pooled: pd.DataFrame) -> dict[str, pd.DataFrame]:
    bounds = np.cumsum([0, *(int(round(f * len(pooled))) for f in SPLIT[:-1]), len(pooled)])
    bounds[-1] = len(pooled)
    return {
        node: pooled.iloc[lo:hi].reset_index(drop=True)
        for node, lo, hi in zip(NODES, bounds[:-1], bounds[1:], strict=True)
    }


@pytest.fixture(scope="module")
def pooled() -> pd.DataFrame:
    return make_pooled()


@pytest.fixture(scope="module")
def parts(pooled: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return split(pooled)


@pytest.fixture(scope="module")
def permissive_network(parts, tmp_path_factory):
    """Every disclosure rule off: federated answers must equal pooled ones exactly.

    tre-a's data is a DataFrame (SQLite), tre-b's a CSV file, tre-c's a SQLite file.
    """
    home = tmp_path_factory.mktemp("files")
    csv_path = home / "tre-b.csv"
    parts["tre-b"].to_csv(csv_path, index=False)
    import sqlalchemy as sa

    sqlite_path = home / "tre-c.sqlite"
    engine = sa.create_engine(f"sqlite:///{sqlite_path}")
    with engine.begin() as conn:
        parts["tre-c"].to_sql("cohort", conn, index=False)
    engine.dispose()
    data = {
        "tre-a": {"cohort": parts["tre-a"]},
        "tre-b": {"cohort": csv_path},
        "tre-c": {"cohort": sqlite_path},
    }
    exact = {
        "threshold": 0,
        "rounding_base": 1,
        "zeros_disclosive": False,
        "dominance_n": 0,
        "p_percent": 0,
        "perturbation": "rounding",
        "magnitude_noise": 0,
    }
    with LocalNetwork(data, policy=exact) as net:
        yield net
