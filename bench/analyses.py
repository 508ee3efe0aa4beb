"""Pushdown at scale: `summary` and `crosstab` on a large table, fedtre's agent vs pandas.

Run with `make bench-analyses` (or `nice -n 10 .venv/bin/python bench/analyses.py --rows
10000000`). For each source (SQLite, Parquet and CSV through DuckDB) and analysis, a fresh
subprocess opens the dataset as the agent does and runs the analysis' local computation;
another loads the same columns into pandas and computes the same figures. Each reports
its wall time and its peak resident memory (ru_maxrss: Python, the in-process SQLite or
DuckDB engine, everything). A third runs the task as the agent's executor does by default,
measuring the differencing cohort first. Prints a table and writes
bench/results/analyses.json. Data are generated once into --data (default: a temp dir).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLUMNS = {
    "age": "integer",
    "sex": "string",
    "smoking": "string",
    "deprivation": "integer",
    "bmi": "float",
}
PARAMS: dict[str, dict[str, Any]] = {
    "summary": {"column": "bmi", "by": "sex"},
    "crosstab": {"rows": "sex", "columns": "smoking"},
}
SOURCES = ("sqlite", "parquet", "csv")
MEMORY_TARGET_MB = 300.0

# One row per person: ages 18-89, 51% women, smoking by a fixed mix, 5% of BMIs missing.
GENERATE = """
SELECT CAST(18 + floor(random() * 72) AS BIGINT) AS age,
       CASE WHEN random() < 0.51 THEN 'F' ELSE 'M' END AS sex,
       CASE WHEN r < 0.17 THEN 'current' WHEN r < 0.42 THEN 'former' ELSE 'never' END
           AS smoking,
       CAST(1 + floor(random() * 5) AS BIGINT) AS deprivation,
       CASE WHEN random() < 0.05 THEN NULL ELSE round(27 + 4.8 * (random() + random() +
           random() + random() - 2.0) * 1.7, 1) END AS bmi
FROM (SELECT random() AS r FROM range({rows}))
"""


def _rss_mb(field: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) resident memory in MB.

    /proc rather than ru_maxrss: Linux keeps ru_maxrss across exec, so a child would
    report its parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


# -- data -----------------------------------------------------------------------------------


def prepare(data: Path, rows: int) -> dict[str, Path]:
    """Write the table as Parquet, CSV and a SQLite file (once per size); return the paths."""
    import duckdb

    data.mkdir(parents=True, exist_ok=True)
    paths = {kind: data / f"cohort-{rows}.{kind}" for kind in SOURCES}
    if all(p.exists() for p in paths.values()):
        return paths
    start = time.perf_counter()
    with duckdb.connect() as conn:
        conn.execute("SELECT setseed(0.42)")
        conn.execute(
            f"COPY ({GENERATE.format(rows=rows)}) TO '{paths['parquet']}' (FORMAT parquet)"
        )
        conn.execute(
            f"COPY (SELECT * FROM read_parquet('{paths['parquet']}')) TO '{paths['csv']}' "
            "(FORMAT csv, HEADER)"
        )
        tmp = paths["sqlite"].with_suffix(".partial")
        tmp.unlink(missing_ok=True)
        with sqlite3.connect(tmp) as db:
            db.execute(
                "CREATE TABLE cohort (age INTEGER, sex TEXT, smoking TEXT, deprivation INTEGER, "
                "bmi REAL)"
            )
            result = conn.execute(f"SELECT * FROM read_parquet('{paths['parquet']}')")
            while batch := result.fetchmany(200_000):
                db.executemany("INSERT INTO cohort VALUES (?, ?, ?, ?, ?)", batch)
        db.close()
        tmp.rename(paths["sqlite"])
    print(f"generated {rows:,} rows in {time.perf_counter() - start:.0f} s into {data}")
    return paths


# -- workers (each in its own process, so ru_maxrss is its own) ----------------------------


def _open(kind: str, path: Path) -> Any:
    from node_agent.config import DatasetConfig
    from node_agent.sources import open_source

    if kind == "sqlite":
        dataset = DatasetConfig("cohort", COLUMNS, url=f"sqlite:///{path}", table="cohort")
    elif kind == "csv":
        dataset = DatasetConfig("cohort", COLUMNS, csv=path)
    else:
        dataset = DatasetConfig("cohort", COLUMNS, parquet=path)
    return open_source(dataset, path.parent / "unused-cache")


def worker_fedtre(kind: str, path: Path, analysis_name: str, *, differencing: bool) -> dict:
    from fedtre.analyses import CATALOGUE
    from fedtre.disclosure import differencing as diff

    analysis = CATALOGUE[analysis_name]
    params = analysis.validate(PARAMS[analysis_name])
    idle = _rss_mb("VmRSS")
    start = time.perf_counter()
    source = _open(kind, path)
    opened = time.perf_counter()
    open_peak = _rss_mb()
    _reset_peak()  # from here, the peak is the task's alone
    if differencing:  # what the executor does first when the policy's threshold is above 1
        diff.measure_cohort(
            source,
            analysis.cohort_filter(params),
            analysis.universe_filter(params),
            filtered=False,
        )
    raw = analysis.compute(params, source)
    done = time.perf_counter()
    source.engine.dispose()
    return {
        "open_s": opened - start,
        "compute_s": done - opened,
        "idle_rss_mb": idle,
        "open_peak_rss_mb": open_peak,
        "peak_rss_mb": _rss_mb(),
        "result": _digest(analysis_name, raw),
    }


def worker_pandas(kind: str, path: Path, analysis_name: str) -> dict:
    import pandas as pd

    from fedtre.disclosure.policy import MAX_DOMINANCE_N

    columns = ["sex", "bmi"] if analysis_name == "summary" else ["sex", "smoking"]
    idle = _rss_mb("VmRSS")
    start = time.perf_counter()
    if kind == "sqlite":
        with sqlite3.connect(path) as conn:
            frame = pd.read_sql(f"SELECT {', '.join(columns)} FROM cohort", conn)
        conn.close()
    elif kind == "csv":
        frame = pd.read_csv(path, usecols=columns)
    else:
        frame = pd.read_parquet(path, columns=columns)
    loaded = time.perf_counter()
    if analysis_name == "summary":
        groups = frame.dropna(subset=["bmi"]).groupby("sex")["bmi"]
        stats = groups.agg(["count", "mean", "var", "min"])
        tops = groups.nlargest(MAX_DOMINANCE_N)
        raw: Any = {"stats": stats, "tops": tops}
        digest = {
            str(sex): [int(row["count"]), float(row["mean"])] for sex, row in stats.iterrows()
        }
    else:
        cells = frame.value_counts(["sex", "smoking"], dropna=False)
        raw = cells
        digest = {f"{s}/{k}": [int(n)] for (s, k), n in cells.items()}
    done = time.perf_counter()
    del raw
    return {
        "load_s": loaded - start,
        "compute_s": done - loaded,
        "total_s": done - start,
        "idle_rss_mb": idle,
        "peak_rss_mb": _rss_mb(),
        "result": dict(sorted(digest.items())),
    }


def _digest(analysis_name: str, raw: dict) -> dict:
    """The figures both sides compute, to check they computed the same thing."""
    if analysis_name == "summary":
        return {str(g[0]): [int(g[1]), float(g[2])] for g in sorted(raw["groups"])}
    return dict(sorted((f"{r}/{c}", [int(n)]) for r, c, n in raw["cells"]))


def run_worker(args: list[str]) -> dict:
    command = [sys.executable, __file__, "--worker", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- driver ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the table")
    parser.add_argument("--data", type=Path, help="folder for the generated data (kept)")
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--analyses", default=",".join(PARAMS))
    parser.add_argument(
        "--no-differencing", action="store_true", help="skip the executor's cohort measure"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "analyses.json"
    )
    parser.add_argument("--worker", nargs=4, metavar=("WHO", "SOURCE", "PATH", "ANALYSIS"))
    args = parser.parse_args()

    if args.worker:
        who, kind, path, name = args.worker
        if who == "pandas":
            figures = worker_pandas(kind, Path(path), name)
        else:
            figures = worker_fedtre(kind, Path(path), name, differencing=who == "agent")
        print(json.dumps(figures))
        return

    own = args.data is None
    data = Path(tempfile.mkdtemp(prefix="fedtre-bench-")) if own else args.data
    try:
        paths = prepare(data, args.rows)
        runs = []
        for kind in args.sources.split(","):
            for name in args.analyses.split(","):
                where = [kind, str(paths[kind]), name]
                ours = run_worker(["fedtre", *where])
                theirs = run_worker(["pandas", *where])
                agent = None if args.no_differencing else run_worker(["agent", *where])
                same = ours["result"] == theirs["result"] or _close(
                    ours["result"], theirs["result"]
                )
                runs.append(
                    {
                        "source": kind,
                        "analysis": name,
                        "fedtre": ours,
                        "pandas": theirs,
                        "agent_with_differencing": agent,
                        "same_figures": same,
                        "time_ratio": ours["compute_s"] / theirs["total_s"],
                    }
                )
                _print_row(runs[-1])
    finally:
        if own:
            shutil.rmtree(data, ignore_errors=True)
    figures = {
        "rows": args.rows,
        "memory_target_mb": MEMORY_TARGET_MB,
        "runs": runs,
        "machine": _machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {args.out}")


def _close(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if x[0] != y[0] or any(
            abs(u - v) > 1e-9 * max(1.0, abs(v)) for u, v in zip(x, y, strict=True)
        ):
            return False
    return True


_HEADER = False


def _print_row(run: dict) -> None:
    global _HEADER
    if not _HEADER:
        print(
            f"{'source':8} {'analysis':9} | {'fedtre s':>8} {'peak MB':>8} | {'pandas s':>8} "
            f"{'peak MB':>8} | {'ratio':>5} | {'agent+diff s':>12} {'peak MB':>8} | same"
        )
        _HEADER = True
    ours, theirs, agent = run["fedtre"], run["pandas"], run["agent_with_differencing"]
    agent_s = f"{agent['compute_s']:12.2f} {agent['peak_rss_mb']:8.0f}" if agent else " " * 21
    print(
        f"{run['source']:8} {run['analysis']:9} | {ours['compute_s']:8.2f} "
        f"{ours['peak_rss_mb']:8.0f} | {theirs['total_s']:8.2f} {theirs['peak_rss_mb']:8.0f} | "
        f"{run['time_ratio']:5.2f} | {agent_s} | {run['same_figures']}",
        flush=True,
    )


def _machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores (shared with other work), "
        f"{platform.python_implementation()} {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
