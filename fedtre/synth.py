"""Synthetic patient cohorts, one per TRE, for demos, tests and benchmarks.

(Longer than our one-line rule, on purpose: these generating parameters are the ground
truth that federated analyses are checked against, so they are written down here.)

Each TRE draws from its own population profile; node i uses profile i, and with more
nodes than profiles the profiles repeat, on independent random streams.

| profile    | regions                        | age (sd) | deprivation 1..5 % | smokers* | BMI  |
| ---------- | ------------------------------ | -------- | ------------------ | -------- | ---- |
| north-east | North East; Yorkshire & Humber | 54 (17)  | 12 15 20 23 30     | .22/.28  | 28.5 |
| london     | London                         | 42 (15)  | 18 20 20 22 20     | .13/.20  | 26.5 |
| south-west | South West; South East         | 58 (17)  | 30 26 20 14 10     | .10/.30  | 27.0 |
| midlands   | West Midlands; East Midlands   | 50 (17)  | 16 18 20 22 24     | .16/.25  | 28.0 |
| north-west | North West                     | 50 (17)  | 14 16 19 23 28     | .18/.26  | 28.2 |
| wales      | Wales                          | 53 (18)  | 17 19 21 22 21     | .15/.27  | 27.8 |

(*) P(current) / P(former | not current) at age 50 in quintile 3. Age is a normal with that
mean and sd, truncated to 18..95 (redrawn, not clipped); "Yorkshire & Humber" is spelt out as
"Yorkshire and The Humber" in the data.

Shared model for every TRE (a = age - 50, d = deprivation quintile - 3, male = 0/1):

| variable | model                                                                           |
| -------- | ------------------------------------------------------------------------------- |
| sex      | P(F) = 0.51                                                                     |
| region   | uniform over the profile's regions                                              |
| smoking  | logit P(current) = logit(profile) + 0.30 d - 0.02 a;                            |
|          | if not current, logit P(former) = logit(profile) + 0.03 a                       |
| bmi      | Normal(profile + 0.4 d + 0.04 a, 4.8), clipped to 15..60, 1 decimal;            |
|          | then 2% set missing (NaN) completely at random                                  |
| sbp      | 127 + 0.45 a + 0.6 (bmi - 27) + 4 male + 1.0 d + Normal(0, 13), 80..240, whole  |
| diabetes | logit P = -2.9 + 0.05 a + 0.13 (bmi - 27) + 0.15 d + 0.2 male                   |
| event    | exponential (proportional) hazard: 0.012 per year x the hazard ratios below     |
| censor   | administrative Uniform(1, 10) years, or loss to follow-up at 0.03 per year      |

| event-model term          | log hazard ratio | hazard ratio      |
| ------------------------- | ---------------- | ----------------- |
| age, per year (a)         | 0.060            | 1.82 per 10 years |
| male                      | 0.262            | 1.30              |
| current smoker            | 0.693            | 2.00              |
| former smoker             | 0.262            | 1.30              |
| diabetes                  | 0.531            | 1.70              |
| sbp, per mmHg above 130   | 0.014            | 1.15 per 10 mmHg  |
| deprivation, per quintile | 0.100            | 1.11              |

event = 1 when the event time comes before censoring; follow_up_days is the earlier of
the two in days, rounded up (so always > 0). BMI is masked after sbp and diabetes are
drawn, so the models above hold for the true values.
"""

from __future__ import annotations

import os
import sqlite3
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedtre.errors import Conflict, InvalidRequest
from fedtre.files import open_private, private_database, private_dir

if TYPE_CHECKING:
    import pandas as pd

COLUMN_TYPES: dict[str, str] = {
    "age": "integer",
    "sex": "string",
    "region": "string",
    "deprivation": "integer",
    "bmi": "float",
    "smoking": "string",
    "sbp": "float",
    "diabetes": "integer",
    "event": "integer",
    "follow_up_days": "integer",
}
# The grids a TRE would declare for the synthetic cohort's numeric columns: released
# bounds (histogram, quantile and survival intervals) fall on multiples of these only.
GRIDS: dict[str, float] = {"age": 5, "bmi": 1, "sbp": 5, "follow_up_days": 30}
TABLE_NAME = "cohort"
FORMATS = ("csv", "sqlite")
DEFAULT_SEED = 2026
MAX_NODES = len(string.ascii_lowercase)

_SQL_TYPES = {"integer": "INTEGER", "float": "REAL", "string": "TEXT"}
_NULLABLE = {"bmi"}


@dataclass(frozen=True)
class Profile:
    """One TRE's population mix (see the module docstring)."""

    name: str
    regions: tuple[str, ...]
    age_mean: float
    age_sd: float
    deprivation: tuple[float, float, float, float, float]
    current_smoking: float
    former_smoking: float
    bmi_mean: float


PROFILES: tuple[Profile, ...] = (
    Profile("north-east", ("North East", "Yorkshire and The Humber"), 54, 17,
            (0.12, 0.15, 0.20, 0.23, 0.30), 0.22, 0.28, 28.5),
    Profile("london", ("London",), 42, 15, (0.18, 0.20, 0.20, 0.22, 0.20), 0.13, 0.20, 26.5),
    Profile("south-west", ("South West", "South East"), 58, 17,
            (0.30, 0.26, 0.20, 0.14, 0.10), 0.10, 0.30, 27.0),
    Profile("midlands", ("West Midlands", "East Midlands"), 50, 17,
            (0.16, 0.18, 0.20, 0.22, 0.24), 0.16, 0.25, 28.0),
    Profile("north-west", ("North West",), 50, 17,
            (0.14, 0.16, 0.19, 0.23, 0.28), 0.18, 0.26, 28.2),
    Profile("wales", ("Wales",), 53, 18, (0.17, 0.19, 0.21, 0.22, 0.21), 0.15, 0.27, 27.8),
)  # fmt: skip

# Event model (log hazard ratios), shared by all TREs so that pooled and federated
# estimates target the same truth.
BASELINE_HAZARD_PER_YEAR = 0.012
LOG_HR = {
    "age": 0.060,
    "male": 0.262,
    "current": 0.693,
    "former": 0.262,
    "diabetes": 0.531,
    "sbp": 0.014,
    "deprivation": 0.100,
}
_DAYS_PER_YEAR = 365.25
_BMI_MISSING = 0.02


def node_ids(n_nodes: int) -> list[str]:
    """Return the node ids tre-a, tre-b, ... for n_nodes (1..26); InvalidRequest otherwise."""
    if not 1 <= n_nodes <= MAX_NODES:
        raise InvalidRequest(f"the number of nodes must be between 1 and {MAX_NODES}")
    return [f"tre-{letter}" for letter in string.ascii_lowercase[:n_nodes]]


def get_profile(profile: int | str) -> Profile:
    """Return a profile by index or name; raises InvalidRequest for an unknown one."""
    if isinstance(profile, int) and 0 <= profile < len(PROFILES):
        return PROFILES[profile]
    for candidate in PROFILES:
        if candidate.name == profile:
            return candidate
    names = ", ".join(p.name for p in PROFILES)
    raise InvalidRequest(
        f"unknown profile {profile!r}: give an index 0..{len(PROFILES) - 1} or one of {names}"
    )


def generate_cohort(profile: int | str, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Return n synthetic patients drawn from a profile, with the columns of COLUMN_TYPES.

    The same rng state gives the same rows. Raises InvalidRequest for a bad profile or n.
    """
    # Imported here, not with the module: every `fedtre` command (the agent's too) loads
    # this module to build its parser, and pandas alone is ~35 MB of the agent's memory.
    import pandas as pd

    p = get_profile(profile)
    if n < 1:
        raise InvalidRequest("the number of rows must be at least 1")

    age = _truncated_normal(rng, p.age_mean, p.age_sd, 18, 95, n).round().astype(np.int64)
    male = (rng.random(n) >= 0.51).astype(np.int64)
    region = rng.choice(np.array(p.regions, dtype=object), size=n)
    dep = rng.choice(np.arange(1, 6), size=n, p=np.array(p.deprivation)).astype(np.int64)
    a, d = (age - 50).astype(float), (dep - 3).astype(float)

    current = rng.random(n) < _expit(_logit(p.current_smoking) + 0.30 * d - 0.02 * a)
    former = ~current & (rng.random(n) < _expit(_logit(p.former_smoking) + 0.03 * a))
    smoking = np.where(current, "current", np.where(former, "former", "never"))

    bmi = np.clip(rng.normal(p.bmi_mean + 0.4 * d + 0.04 * a, 4.8), 15, 60).round(1)
    sbp = 127 + 0.45 * a + 0.6 * (bmi - 27) + 4 * male + 1.0 * d + rng.normal(0, 13, n)
    sbp = np.clip(sbp, 80, 240).round()
    diabetes = rng.random(n) < _expit(-2.9 + 0.05 * a + 0.13 * (bmi - 27) + 0.15 * d + 0.2 * male)

    log_hr = (
        LOG_HR["age"] * a
        + LOG_HR["male"] * male
        + LOG_HR["current"] * current
        + LOG_HR["former"] * former
        + LOG_HR["diabetes"] * diabetes
        + LOG_HR["sbp"] * (sbp - 130)
        + LOG_HR["deprivation"] * d
    )
    event_years = rng.exponential(1 / (BASELINE_HAZARD_PER_YEAR * np.exp(log_hr)))
    censor_years = np.minimum(rng.uniform(1, 10, n), rng.exponential(1 / 0.03, n))
    event = event_years <= censor_years
    follow_up = np.ceil(np.minimum(event_years, censor_years) * _DAYS_PER_YEAR)

    # Masked last, so missingness does not change any value drawn above (MCAR).
    bmi = np.where(rng.random(n) < _BMI_MISSING, np.nan, bmi)

    return pd.DataFrame(
        {
            "age": age,
            "sex": np.where(male == 1, "M", "F"),
            "region": region.astype(str),
            "deprivation": dep,
            "bmi": bmi.astype(np.float64),
            "smoking": smoking,
            "sbp": sbp.astype(np.float64),
            "diabetes": diabetes.astype(np.int64),
            "event": event.astype(np.int64),
            "follow_up_days": np.maximum(follow_up, 1).astype(np.int64),
        },
        columns=list(COLUMN_TYPES),
    )


def write_cohorts(
    directory: str | os.PathLike[str],
    n_nodes: int = 3,
    rows: int = 2000,
    seed: int = DEFAULT_SEED,
    fmt: str = "csv",
    *,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write one cohort per node (tre-a, tre-b, ...) into directory; returns node id -> file.

    Files are `<node>.csv`, or `<node>.sqlite` holding table "cohort". Node i draws from
    PROFILES[i % len(PROFILES)] on its own stream of `seed`, so tre-a's rows do not depend
    on how many nodes are written. Raises InvalidRequest for bad arguments and Conflict
    when a file exists and overwrite is false.
    """
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if rows < 1:
        raise InvalidRequest("the number of rows must be at least 1")
    out = Path(directory)
    paths = {node: out / f"{node}.{fmt}" for node in node_ids(n_nodes)}
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing and not overwrite:
        raise Conflict(
            f"{', '.join(existing)} already exist; pass overwrite (--force) or "
            "choose another directory"
        )
    private_dir(out)
    for index, path in enumerate(paths.values()):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        cohort = generate_cohort(index % len(PROFILES), rows, rng)
        if fmt == "csv":
            with open_private(path, newline="") as handle:
                cohort.to_csv(handle, index=False)
        else:
            _write_sqlite(path, cohort)
    return paths


def _write_sqlite(path: Path, cohort: pd.DataFrame) -> None:
    path.unlink(missing_ok=True)
    private_database(path)
    # Declared column types matter: the agent compiles queries against them.
    columns = ", ".join(
        f"{name} {_SQL_TYPES[kind]}{'' if name in _NULLABLE else ' NOT NULL'}"
        for name, kind in COLUMN_TYPES.items()
    )
    values = [
        [None if isinstance(v, float) and np.isnan(v) else v for v in cohort[name].tolist()]
        for name in COLUMN_TYPES
    ]
    placeholders = ", ".join("?" for _ in COLUMN_TYPES)
    with sqlite3.connect(path) as connection:
        connection.execute(f"CREATE TABLE {TABLE_NAME} ({columns})")
        connection.executemany(
            f"INSERT INTO {TABLE_NAME} VALUES ({placeholders})", zip(*values, strict=True)
        )
    connection.close()  # the context manager commits but does not close


def _truncated_normal(
    rng: np.random.Generator, mean: float, sd: float, low: float, high: float, n: int
) -> np.ndarray:
    # Redraw out-of-range values rather than clip them, which would pile people up at
    # exactly 18 and 95.
    values = rng.normal(mean, sd, n)
    bad = (values < low - 0.5) | (values >= high + 0.5)
    while bad.any():
        values[bad] = rng.normal(mean, sd, int(bad.sum()))
        bad = (values < low - 0.5) | (values >= high + 0.5)
    return values


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _expit(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))
