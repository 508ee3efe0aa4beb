"""One node's cox round in its engine, against lifelines on the same records in memory.

Run with `make bench-cox` (or `nice -n 10 .venv/bin/python bench/cox.py --rows 200000`).
One synthetic cohort (fedtre.synth, profile 0) of --rows records in a SQLite file and in
a CSV file read through DuckDB, each opened as the agent opens it; the model is follow_up_days / event ~ age, sex,
smoking, bmi, diabetes, C(deprivation) (10 parameters). Times: the node's computation
(`compute`: the model rules' aggregates and the per-event-time sums) for round 1 (beta =
0, every level's column: 13) and for a later round (beta away from 0), with Efron and
Breslow ties; lifelines' CoxPHFitter (Efron) fitting the same records from a DataFrame
already in memory, all iterations. Prints a table and writes bench/results/cox.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COVARIATES = ["age", "sex", "smoking", "bmi", "diabetes", "C(deprivation)"]
LEVELS = {
    "sex": ["F", "M"],
    "smoking": ["current", "former", "never"],
    "C(deprivation)": ["1", "2", "3", "4", "5"],
}
BETA = [0.06, 0.26, 0.3, -0.5, 0.01, 0.5, 0.1, 0.2, 0.3, 0.4]


def main() -> None:
    from fedtre.analyses import CATALOGUE
    from fedtre.analyses.iterative import with_round
    from fedtre.synth import COLUMN_TYPES, generate_cohort
    from node_agent.config import DatasetConfig
    from node_agent.sources import open_source

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cox.json")
    args = parser.parse_args()

    frame = generate_cohort(0, args.rows, np.random.default_rng(1))
    folder = Path(tempfile.mkdtemp(prefix="fedtre-bench-cox-"))
    cox = CATALOGUE["cox"]
    figures: dict[str, float] = {}
    events = 0
    sqlite_path, csv_path = folder / "cohort.sqlite", folder / "cohort.csv"
    engine = sa.create_engine(f"sqlite:///{sqlite_path}")
    frame.to_sql("cohort", engine, index=False)
    engine.dispose()
    frame.to_csv(csv_path, index=False)
    datasets = {
        "SQLite": DatasetConfig(
            "cohort", COLUMN_TYPES, url=f"sqlite:///{sqlite_path}", table="cohort"
        ),
        "DuckDB (CSV)": DatasetConfig("cohort", COLUMN_TYPES, csv=csv_path),
    }
    for name, dataset in datasets.items():
        source = open_source(dataset, folder / "cache")
        for ties in ("efron", "breslow"):
            params = cox.validate(
                {"time": "follow_up_days", "event": "event", "covariates": COVARIATES, "ties": ties}
            )
            start = time.perf_counter()
            events = int(cox.compute(params, source)["events"])
            figures[f"{name}: round 1 ({ties})"] = time.perf_counter() - start
            later = with_round(cox, params, {"beta": BETA, "levels": LEVELS})
            start = time.perf_counter()
            cox.compute(later, source)
            figures[f"{name}: later round ({ties})"] = time.perf_counter() - start
        source.engine.dispose()

    import patsy
    from lifelines import CoxPHFitter

    design = patsy.dmatrix(" + ".join(COVARIATES), frame, return_type="dataframe")
    pooled = design.drop(columns="Intercept").assign(
        follow_up_days=frame.follow_up_days[design.index], event=frame.event[design.index]
    )
    start = time.perf_counter()
    CoxPHFitter().fit(pooled, "follow_up_days", "event")
    figures["lifelines, whole fit (efron)"] = time.perf_counter() - start

    print(f"cox at one node: {args.rows} records, {events} events")
    for name, seconds in figures.items():
        print(f"  {name:34s} {seconds:8.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "rows": args.rows,
                "events": events,
                "seconds": {k: round(v, 3) for k, v in figures.items()},
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
