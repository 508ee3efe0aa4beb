"""Federated logistic regression vs statsmodels on the pooled data: iterations and wall time.

Run with `make bench-glm` (or `nice -n 10 .venv/bin/python bench/glm.py --rows 1000000`).
Three nodes of --rows records each (8 covariates: 5 numeric, 3 categorical, 10 parameters)
run as a real network on loopback (fedtre.testing.LocalNetwork: gRPC over mutual TLS, the
agents' SQLite or Parquet datasets, signed approvals); the job's wall time is from submit
to the combined result. statsmodels fits the same model (GLM, binomial, IRLS) on the
pooled records in memory; its time is the fit alone (design matrix already built), as
a researcher holding the pooled data would see. Prints a table and writes
bench/results/glm.json. With --profile, also profiles one agent's round (cProfile); with
--timeline, prints every SQL statement of the job (SQLAlchemy cursor events) and each
round's times from the coordinator; --tol 1e-8 stops after as many rounds as statsmodels'
iterations (bench/README.md, "Iterations").
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NODES = ("tre-a", "tre-b", "tre-c")
COVARIATES = [
    "age",
    "sex",
    "smoking",
    "deprivation",
    "bmi",
    "sbp",
    "exercise",
    "family_history",
]
OUTCOME = "diabetes"
TIME_TARGET = 2.0


def cohort(index: int, rows: int) -> pd.DataFrame:
    """Node index's records: its own age mix and smoking rates; one shared risk model."""
    rng = np.random.default_rng(np.random.SeedSequence(7, spawn_key=(index,)))
    age = np.clip(rng.normal((54, 42, 58)[index % 3], 16, rows), 18, 95).round()
    male = rng.random(rows) < 0.49
    smoking = rng.choice(
        ["current", "former", "never"], rows, p=(0.15 + 0.03 * index, 0.25, 0.6 - 0.03 * index)
    )
    deprivation = rng.integers(1, 6, rows)
    bmi = np.clip(rng.normal(27 + 0.04 * (age - 50), 4.8), 15, 60).round(1)
    sbp = np.clip(
        120 + 0.45 * (age - 50) + 0.6 * (bmi - 27) + rng.normal(0, 13, rows), 80, 240
    ).round()
    exercise = rng.gamma(2.0, 1.5, rows).round(1)
    family = rng.random(rows) < 0.2
    eta = (
        -2.2
        + 0.04 * (age - 50)
        + 0.25 * male
        + np.select([smoking == "current", smoking == "former"], [0.35, 0.15], 0.0)
        + 0.12 * (deprivation - 3)
        + 0.11 * (bmi - 27)
        + 0.01 * (sbp - 130)
        - 0.08 * exercise
        + 0.6 * family
    )
    diabetes = (rng.random(rows) < 1 / (1 + np.exp(-eta))).astype(np.int64)
    return pd.DataFrame(
        {
            "age": age.astype(np.int64),
            "sex": np.where(male, "M", "F"),
            "smoking": smoking,
            "deprivation": deprivation.astype(np.int64),
            "bmi": bmi,
            "sbp": sbp,
            "exercise": exercise,
            "family_history": family,
            "diabetes": diabetes,
        }
    )


def write(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".parquet":
        import duckdb

        with duckdb.connect() as duck:
            duck.register("frame", frame)
            duck.execute(f"COPY frame TO '{path}' (FORMAT parquet)")
        return
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE cohort (age INTEGER, sex TEXT, smoking TEXT, deprivation INTEGER, "
            "bmi REAL, sbp REAL, exercise REAL, family_history BOOLEAN, diabetes INTEGER)"
        )
        conn.executemany(
            "INSERT INTO cohort VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            frame.astype(object).itertuples(index=False, name=None),
        )
    conn.close()


def statsmodels_fit(pooled: pd.DataFrame) -> dict[str, Any]:
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    model = smf.glm(f"{OUTCOME} ~ " + " + ".join(COVARIATES), pooled, family=sm.families.Binomial())
    start = time.perf_counter()
    fit = model.fit()
    seconds = time.perf_counter() - start
    return {
        "fit_s": seconds,
        "iterations": int(fit.fit_history["iteration"]),
        "params": fit.params,
        "bse": fit.bse,
        "deviance": float(fit.deviance),
    }


class StatementTimeline:
    """Every SQL statement the agents' engines run (SQLAlchemy cursor events): when, how
    long, at which agent (its engine, numbered as first seen), and what (a short label: the GLM round's sums, the record
    hashes, level counts, ...)."""

    def __init__(self) -> None:
        import sqlalchemy as sa

        self.events: list[tuple[float, float, str, str]] = []
        self._engines: dict[int, str] = {}
        self._sa = sa
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._before)
        sa.event.listen(sa.engine.Engine, "after_cursor_execute", self._after)

    def close(self) -> None:
        self._sa.event.remove(self._sa.engine.Engine, "before_cursor_execute", self._before)
        self._sa.event.remove(self._sa.engine.Engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, *_: Any) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def _after(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        started = conn.info["bench_started"].pop()
        if conn.engine.url.get_backend_name() in ("duckdb", "sqlite", "postgresql") and (
            "cohort" in statement
        ):
            engine = self._engines.setdefault(id(conn.engine), f"engine {len(self._engines) + 1}")
            self.events.append((started, time.perf_counter(), engine, _label(statement)))

    def report(self, start: float) -> str:
        lines = ["start s   end s  took s  agent's      statement"]
        for begun, ended, engine, label in sorted(self.events):
            if begun >= start:
                lines.append(
                    f"{begun - start:7.2f} {ended - start:7.2f} {ended - begun:7.2f}  "
                    f"{engine:12s}  {label}"
                )
        return "\n".join(lines)


def _label(statement: str) -> str:
    text = " ".join(statement.split())
    if "MATERIALIZED" in text and "terms" in text:
        return "round sums (X'WX, X'Wz, deviance)"
    if "md5" in text.lower():
        return "record hashes (md5): " + text[:50]
    return text[:70]


def round_times(coordinator_db: Path) -> str:
    """Each round's tasks from the coordinator's own timestamps: queued, delivered, reported."""
    from datetime import datetime

    def seconds(value: Any) -> float:
        return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else value

    with sqlite3.connect(coordinator_db) as conn:
        rows = conn.execute(
            "SELECT round_no, queued_at, delivered_at, reported_at FROM tasks ORDER BY round_no"
        ).fetchall()
    conn.close()
    t0 = min(seconds(r[1]) for r in rows)
    lines, last = [], None
    for number in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == number]
        queued = min(seconds(r[1]) for r in mine) - t0
        delivered = max(seconds(r[2]) for r in mine) - t0
        reported = max(seconds(r[3]) for r in mine) - t0
        gap = "" if last is None else f" ({queued - last:.2f} s after the last report)"
        lines.append(
            f"round {number}: queued {queued:7.2f} s{gap}, delivered by {delivered:7.2f} s, "
            f"last report {reported:7.2f} s"
        )
        last = reported
    return "\n".join(lines)


def federated_fit(
    paths: dict[str, Path], directory: Path, tol: float | None, timeline: bool = False
) -> dict[str, Any]:
    from fedtre.testing import LocalNetwork

    data = {node: {"cohort": path} for node, path in paths.items()}
    params: dict[str, Any] = {"outcome": OUTCOME, "covariates": COVARIATES, "family": "binomial"}
    if tol is not None:
        params["tol"] = tol
    statements = StatementTimeline() if timeline else None
    with LocalNetwork(data, directory=directory) as net, net.client() as client:
        start = time.perf_counter()
        result = client.submit("glm", dataset="cohort", params=params).result(timeout=3600)
        seconds = time.perf_counter() - start
    if statements is not None:
        statements.close()
        print(statements.report(start))
        print(round_times(directory / "coordinator.sqlite"))
    if result.state != "completed":
        raise RuntimeError(f"the job ended {result.state}: {result.combined}")
    frame = result.to_frame()
    model = result.model
    assert model is not None
    return {
        "job_s": seconds,
        "iterations": model.iterations,
        "converged": model.converged,
        "frame": frame,
        "deviance": model.deviance,
    }


def profile_round(path: Path) -> str:
    """cProfile one agent's local computation of a round (round 1) and its cohort measure."""
    from fedtre.analyses import CATALOGUE
    from fedtre.disclosure import differencing
    from fedtre.testing import column_types
    from node_agent.config import DatasetConfig
    from node_agent.sources import open_source

    sample = cohort(0, 100)
    if path.suffix == ".parquet":
        dataset = DatasetConfig("cohort", column_types(sample), parquet=path)
    else:
        dataset = DatasetConfig(
            "cohort", column_types(sample), url=f"sqlite:///{path}", table="cohort"
        )
    source = open_source(dataset, path.parent / "unused")
    glm = CATALOGUE["glm"]
    params = glm.validate({"outcome": OUTCOME, "covariates": COVARIATES, "family": "binomial"})
    profiler = cProfile.Profile()
    timings = {}
    profiler.enable()
    start = time.perf_counter()
    differencing.measure_cohort(source, None, None, filtered=False)
    timings["cohort_measure_s"] = time.perf_counter() - start
    start = time.perf_counter()
    glm.compute(params, source)
    timings["round_compute_s"] = time.perf_counter() - start
    profiler.disable()
    source.engine.dispose()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    return json.dumps(timings) + "\n" + out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="records per node")
    parser.add_argument("--source", choices=("sqlite", "parquet"), default="sqlite")
    parser.add_argument("--data", type=Path, help="folder for the generated data (kept)")
    parser.add_argument("--profile", action="store_true", help="cProfile one agent's round")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print every SQL statement of the job (when, how long, which agent thread) "
        "and each round's times from the coordinator",
    )
    parser.add_argument(
        "--tol",
        type=float,
        help="glm's tol (default: the analysis' 1e-10; 1e-8 stops after as many rounds as "
        "statsmodels' iterations, bench/README.md)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "glm.json")
    args = parser.parse_args()

    own = args.data is None
    data = Path(tempfile.mkdtemp(prefix="fedtre-bench-glm-")) if own else args.data
    data.mkdir(parents=True, exist_ok=True)
    try:
        frames = [cohort(i, args.rows) for i in range(len(NODES))]
        paths = {node: data / f"{node}-{args.rows}.{args.source}" for node in NODES}
        for frame, path in zip(frames, paths.values(), strict=True):
            if not path.exists():
                partial = path.with_name(path.name + ".partial" + path.suffix)
                partial.unlink(missing_ok=True)
                write(frame, partial)
                partial.rename(path)
        pooled = pd.concat(frames, ignore_index=True)
        del frames
        reference = statsmodels_fit(pooled)
        del pooled
        network = data / "network"
        shutil.rmtree(network, ignore_errors=True)
        ours = federated_fit(paths, network, args.tol, args.timeline)
        profile = profile_round(paths[NODES[0]]) if args.profile else None
    finally:
        if own:
            shutil.rmtree(data, ignore_errors=True)

    params, bse = reference["params"], reference["bse"]
    # patsy puts categorical terms first; fedtre keeps the order the covariates were given
    assert sorted(ours["frame"].index) == sorted(params.index), ours["frame"].index
    frame = ours["frame"].loc[params.index]
    coef_rel = float(np.max(np.abs(frame["coef"] - params) / np.abs(params)))
    se_rel = float(np.max(np.abs(frame["std_err"] - bse) / np.abs(bse)))
    figures = {
        "nodes": len(NODES),
        "rows_per_node": args.rows,
        "source": args.source,
        "parameters": len(params),
        "statsmodels_fit_s": round(reference["fit_s"], 3),
        "statsmodels_iterations": reference["iterations"],
        "fedtre_job_s": round(ours["job_s"], 3),
        "fedtre_iterations": ours["iterations"],
        "fedtre_tol": args.tol,
        "fedtre_converged": ours["converged"],
        "time_ratio": round(ours["job_s"] / reference["fit_s"], 2),
        "time_target": TIME_TARGET,
        "max_rel_diff_coef": coef_rel,
        "max_rel_diff_std_err": se_rel,
        "deviance_fedtre": ours["deviance"],
        "deviance_statsmodels": reference["deviance"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work), "
        f"{platform.python_implementation()} {platform.python_version()}",
    }
    print(f"logistic regression, {len(params)} parameters, {len(NODES)} nodes x {args.rows:,}")
    for key, value in figures.items():
        print(f"  {key:24} {value}")
    if profile:
        print(profile)
        figures["profile_head"] = profile.splitlines()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
