"""The release stage's cost at scale: cell keys, dominance and the differencing sketch, in the engine.

Run with `make bench-release` (or `nice -n 10 .venv/bin/python bench/release.py --rows
10000000`). On one Parquet file read through DuckDB, as an agent reads it, for each
analysis this measures in the same run:

- `duckdb`: DuckDB's own aggregate for the same figures, no disclosure control (the
  reference: what the engine's query costs);
- `compute+release`: the analysis's local computation (its aggregate SQL, now with one
  cell key per group and, for magnitudes, the largest contributions) and its release
  stage (threshold, cell-key perturbation, dominance, magnitude noise, sealing);
- `sketch`: the differencing memory's measure of the cohort and its groups (one
  GROUP BY per sketch part, in the engine);
- `executor`: the whole task as the agent runs it (policy, sketch, memory check,
  computation, release, state), on a fresh state file.

Each figure is the median of --repeat runs; peak resident memory is the process's
(VmHWM, reset before each analysis). Prints a table and writes bench/results/release.json.
Also measures the sketch's decoding: the share of differences of threshold - 1 records
that fail to decode (--decode-trials).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLUMNS = {"age": "integer", "sex": "string", "smoking": "string", "bmi": "float"}
GENERATE = """
COPY (
SELECT CAST(18 + floor(random() * 72) AS BIGINT) AS age,
       CASE WHEN random() < 0.51 THEN 'F' ELSE 'M' END AS sex,
       CASE WHEN r < 0.17 THEN 'current' WHEN r < 0.42 THEN 'former' ELSE 'never' END
           AS smoking,
       round(27 + 4.8 * (random() + random() + random() + random() - 2.0) * 1.7, 1) AS bmi
FROM (SELECT random() AS r FROM range({rows}))
) TO '{path}' (FORMAT PARQUET)
"""
FILTER = {
    "and": [
        {"col": "age", "op": ">=", "value": 50},
        {"col": "smoking", "op": "==", "value": "current"},
    ]
}
CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "count": (
        "count",
        {"filter": FILTER},
        "SELECT count(*) FROM t WHERE age >= 50 AND smoking = 'current'",
    ),
    "crosstab": (
        "crosstab",
        {"rows": "sex", "columns": "smoking"},
        "SELECT sex, smoking, count(*) FROM t GROUP BY sex, smoking",
    ),
    "summary": (
        "summary",
        {"column": "bmi", "by": "sex"},
        "SELECT sex, count(bmi), avg(bmi), stddev_samp(bmi) FROM t GROUP BY sex",
    ),
}


def _rss_peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _timed(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def decode_failures(trials: int, threshold: int = 10) -> dict[str, Any]:
    """Share of random differences of threshold - 1 records the sketch fails to list."""
    from fedtre.disclosure.cellkey import ID_PRIME
    from fedtre.disclosure.differencing import sketch_of_ids, symmetric_difference

    rng = random.Random(2026)
    d = threshold - 1
    failed = 0
    for _ in range(trials):
        ids = [rng.randrange(1, ID_PRIME) for _ in range(d)]
        k = rng.randint(0, d)
        found = symmetric_difference(
            sketch_of_ids(ids[:k]), sketch_of_ids(ids[k:]), limit=threshold
        )
        failed += found != d
    return {"difference": d, "trials": trials, "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--decode-trials", type=int, default=200_000)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()

    import duckdb
    import sqlalchemy as sa

    from fedtre.analyses import CATALOGUE
    from fedtre.disclosure import DisclosurePolicy
    from fedtre.disclosure.cellkey import keyed_source, secret_tag
    from fedtre.disclosure.differencing import measure_cohort
    from node_agent.config import DatasetConfig
    from node_agent.executor import Executor
    from node_agent.policy import LocalPolicy
    from node_agent.sources.duckdb_source import open_file_source
    from node_agent.state import AgentState
    from node_agent.task import TaskSpec

    home = args.data or Path(tempfile.mkdtemp(prefix="fedtre-bench-release-"))
    home.mkdir(parents=True, exist_ok=True)
    parquet = home / f"cohort-{args.rows}.parquet"
    if not parquet.exists():
        print(f"generating {args.rows:,} rows into {parquet} ...", flush=True)
        duckdb.sql(GENERATE.format(rows=args.rows, path=parquet))
    secret = b"bench-secret-0123456789abcdef!!"
    dataset = DatasetConfig(name="cohort", columns=COLUMNS, parquet=parquet)
    source = keyed_source(open_file_source(dataset), secret, None)
    policy = DisclosurePolicy().keyed(secret_tag=secret_tag(secret))
    reference = duckdb.connect()
    reference.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{parquet}')")

    rows: list[dict[str, Any]] = []
    for label, (name, given, sql) in CASES.items():
        analysis = CATALOGUE[name]
        params = analysis.validate(given)
        _reset_peak()
        engine_s = _timed(lambda sql=sql: reference.execute(sql).fetchall(), args.repeat)

        def compute_release(analysis: Any = analysis, params: Any = params) -> None:
            analysis.check(params, analysis.compute(params, source), policy)

        release_s = _timed(compute_release, args.repeat)

        def sketch(analysis: Any = analysis, params: Any = params) -> None:
            measure_cohort(
                source,
                analysis.cohort_filter(params),
                analysis.universe_filter(params),
                filtered=params.get("filter") is not None,
                groupings=analysis.groupings(params),
            )

        sketch_s = _timed(sketch, args.repeat)
        runs: list[float] = []
        for i in range(args.repeat):
            state = AgentState(home / f"state-{label}-{i}-{time.time_ns()}.sqlite")
            local = LocalPolicy(
                node_id="bench",
                analyses={name: analysis},
                disclosure=policy,
                datasets={"cohort": dataset.schema},
            )
            executor = Executor(local, {"cohort": source}, state)
            task = TaskSpec(
                task_id=f"t-{label}-{i}",
                job_id=i + 1,
                node="bench",
                analysis=name,
                dataset="cohort",
                params=given,
            )
            started = time.perf_counter()
            output = executor.run(task)
            runs.append(time.perf_counter() - started)
            state.close()
        peak = _rss_peak_mb()
        rows.append(
            {
                "analysis": label,
                "rows": args.rows,
                "duckdb_s": engine_s,
                "compute_release_s": release_s,
                "sketch_s": sketch_s,
                "executor_s": statistics.median(runs),
                "outcome": output.outcome.value,
                "executor_vs_duckdb": statistics.median(runs) / engine_s,
                "peak_rss_mb": peak,
            }
        )
        print(
            f"{label:9s} duckdb {engine_s:7.3f} s  compute+release {release_s:7.3f} s  "
            f"sketch {sketch_s:7.3f} s  executor {statistics.median(runs):7.3f} s "
            f"({statistics.median(runs) / engine_s:5.1f}x)  peak {peak:7.0f} MB  "
            f"[{output.outcome.value}]",
            flush=True,
        )
    decoding = decode_failures(args.decode_trials) if args.decode_trials else {}
    if decoding:
        print(
            f"sketch decoding: {decoding['failed']} of {decoding['trials']:,} differences of "
            f"{decoding['difference']} records failed to list",
            flush=True,
        )
    out = ROOT / "bench" / "results" / "release.json"
    out.write_text(
        json.dumps(
            {
                "command": f"bench/release.py --rows {args.rows} --repeat {args.repeat}",
                "machine": platform.platform(),
                "results": rows,
                "sketch_decoding": decoding,
                "engine": sa.__version__,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
