"""Job time against rows per node, fedtre through the network vs the engine's own query.

Run with `make bench-rows` (or `nice -n 10 .venv/bin/python bench/rows.py --rows
100000,1000000`). For each size, three agents (separate processes of the CLI, as
deployed) each serve one synthetic table of that many rows under the default disclosure
policy (threshold 10: cell keys, dominance, the differencing sketch); the jobs are
`count` with a two-condition filter, `crosstab` (sex x smoking), `summary` (sbp by
smoking) and `histogram` (age, width 10), each timed from submit to the combined result
(median of --jobs, after one warm-up). In the same run, the engine itself runs the same
aggregate (no disclosure control) over the three nodes' tables together: DuckDB over the
three Parquet files, or PostgreSQL over the three tables (--source postgres). Agent peak
memory: the largest VmHWM of the three agents, reset before each analysis, and before the
first reset the largest peak since each agent started (imports, opening and checking the
dataset). --source csv or sqlite serves the same rows as CSV files (DuckDB) or SQLite
databases, against DuckDB's or SQLite's own query over the three.

Prints a table and writes bench/results/rows.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

NODES = ["tre-a", "tre-b", "tre-c"]
COLUMNS = {"age": "integer", "sex": "string", "smoking": "string", "sbp": "float"}
GRIDS = {"age": 5.0, "sbp": 5.0}
GENERATE = """
SELECT CAST(18 + floor(random() * 72) AS BIGINT) AS age,
       CASE WHEN random() < 0.51 THEN 'F' ELSE 'M' END AS sex,
       CASE WHEN r < 0.17 THEN 'current' WHEN r < 0.42 THEN 'former' ELSE 'never' END
           AS smoking,
       CASE WHEN random() < 0.03 THEN NULL
            ELSE round(100 + 0.4 * (18 + r * 72) + 14 * (random() + random() - 1.0), 0)
       END AS sbp
FROM (SELECT random() AS r FROM range({rows}))
"""
FILTER = {
    "and": [
        {"col": "age", "op": ">=", "value": 50},
        {"col": "smoking", "op": "==", "value": "current"},
    ]
}
# analysis, its parameters, the engine's own query over "t" (the three tables together)
CASES: dict[str, tuple[dict[str, Any], str]] = {
    "count": ({"filter": FILTER}, "SELECT count(*) FROM t WHERE age >= 50 AND smoking = 'current'"),
    "crosstab": (
        {"rows": "sex", "columns": "smoking"},
        "SELECT sex, smoking, count(*) FROM t GROUP BY sex, smoking",
    ),
    "summary": (
        {"column": "sbp", "by": "smoking"},
        "SELECT smoking, count(sbp), avg(sbp), stddev_samp(sbp), min(sbp), max(sbp) "
        "FROM t GROUP BY smoking",
    ),
    "histogram": (
        {"column": "age", "width": 10},
        "SELECT floor(age / 10.0), count(*) FROM t GROUP BY 1",
    ),
}


def _timed(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def write_parquet(home: Path, rows: int) -> dict[str, Path]:
    import duckdb

    files = {}
    for i, node in enumerate(NODES):
        path = home / f"{node}-{rows}.parquet"
        if not path.exists():
            con = duckdb.connect()
            con.execute(f"SELECT setseed({0.1 * (i + 1)})")
            con.execute(f"COPY ({GENERATE.format(rows=rows)}) TO '{path}' (FORMAT PARQUET)")
            con.close()
        files[node] = path
    return files


def write_csv(files: dict[str, Path]) -> dict[str, Path]:
    """Each node's Parquet file as a CSV beside it (header, empty fields for missing)."""
    import duckdb

    out = {}
    for node, path in files.items():
        csv = path.with_suffix(".csv")
        if not csv.exists():
            duckdb.sql(f"COPY (SELECT * FROM read_parquet('{path}')) TO '{csv}' (HEADER true)")
        out[node] = csv
    return out


def write_sqlite(files: dict[str, Path]) -> dict[str, Path]:
    """Each node's Parquet file as a SQLite database beside it (table t, declared types)."""
    import duckdb

    out = {}
    for node, path in files.items():
        db = path.with_suffix(".sqlite")
        if not db.exists():
            partial = db.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            conn = sqlite3.connect(partial)
            conn.execute("CREATE TABLE t (age INTEGER, sex TEXT, smoking TEXT, sbp REAL)")
            result = duckdb.connect().execute(f"SELECT * FROM read_parquet('{path}')")
            while batch := result.fetchmany(100_000):
                conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", batch)
            conn.commit()
            conn.close()
            partial.rename(db)
        out[node] = db
    return out


def load_postgres(url: str, schema: str, files: dict[str, Path]) -> dict[str, str]:
    """Copy each node's Parquet file into its own PostgreSQL table; return node -> table."""
    import duckdb
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    tables = {}
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        for node, path in files.items():
            table = node.replace("-", "_")
            conn.execute(
                sa.text(
                    f'CREATE TABLE "{schema}"."{table}" (age BIGINT, sex TEXT, smoking TEXT, '
                    "sbp DOUBLE PRECISION)"
                )
            )
            csv = path.with_suffix(".csv")
            duckdb.sql(f"COPY (SELECT * FROM read_parquet('{path}')) TO '{csv}' (HEADER false)")
            raw = conn.connection.dbapi_connection
            with raw.cursor() as cur, open(csv, "rb") as handle:  # type: ignore[union-attr]
                with cur.copy(f'COPY "{schema}"."{table}" FROM STDIN (FORMAT csv)') as copy:
                    while chunk := handle.read(1 << 20):
                        copy.write(chunk)
            csv.unlink()
            tables[node] = table
        conn.execute(sa.text(f'ANALYZE "{schema}".tre_a'))
    engine.dispose()
    return tables


@contextmanager
def deployed(home: Path, datasets: dict[str, Any]) -> Iterator[tuple[Any, list[int]]]:
    """The coordinator and three agents as CLI processes; yields (client, agents' pids)."""
    from network import coordinator_process, set_up_project, stop

    from fedtre.client import Client
    from fedtre.demo import spawn, wait_for_nodes
    from fedtre.disclosure import DisclosurePolicy
    from fedtre.identity.ca import init_network
    from node_agent.config import AgentConfig, TlsConfig, write_config

    init_network(home / "pki", NODES)
    with coordinator_process(home, f"sqlite:///{home / 'coordinator.sqlite'}") as (
        coordinator,
        address,
        api,
    ):
        agents = []
        try:
            for node in NODES:
                config = home / f"{node}.toml"
                write_config(
                    config,
                    AgentConfig(
                        node_id=node,
                        coordinator=address,
                        state_db=home / f"{node}-state.sqlite",
                        tls=TlsConfig.from_bundle(home / "pki" / "nodes" / node),
                        datasets={"cohort": datasets[node]},
                        policy=DisclosurePolicy(),
                        analyses=tuple(CASES),
                    ),
                )
                agents.append(
                    spawn(
                        # INFO: the agent logs its extract's build time (extract_seconds)
                        ["agent", "run", "--config", str(config), "--log-level", "INFO"],
                        home / f"{node}.log",
                    )
                )
            with Client(api, home / "admin") as admin:
                # Each agent extracts its file (its records' keys) before it registers.
                token = set_up_project(admin, "default", NODES, list(CASES), wait_s=1800)
                wait_for_nodes(admin, NODES, [coordinator, *agents], home, timeout_s=1800)
            ca = home / "pki" / "ca" / "ca.pem"
            with Client(api, token=token, ca=ca) as client:
                yield client, [a.pid for a in agents]
        finally:
            stop(agents)


def extract_seconds(home: Path) -> list[float]:
    """Each agent's keyed-extract build time at start-up, read from its log."""
    found = []
    for node in NODES:
        log = home / f"{node}.log"
        text = log.read_text() if log.exists() else ""
        found += [
            float(s)
            for s in re.findall(r"keyed extract of \w+ built \(\d+ records, ([\d.]+) s\)", text)
        ]
    return found


def run_size(args: argparse.Namespace, rows: int, data: Path) -> list[dict[str, Any]]:
    import duckdb
    import sqlalchemy as sa

    from node_agent.config import DatasetConfig

    files = write_parquet(data, rows)
    if args.source == "postgres":
        schema = f"bench_rows_{rows}"
        tables = load_postgres(args.postgres, schema, files)
        datasets = {
            node: DatasetConfig(
                name="cohort",
                columns=COLUMNS,
                url=args.postgres,
                table=f"{schema}.{tables[node]}",
                grids=GRIDS,
            )
            for node in NODES
        }
        engine = sa.create_engine(args.postgres)
        union = " UNION ALL ".join(f'SELECT * FROM "{schema}"."{t}"' for t in tables.values())

        def reference(sql: str) -> None:
            with engine.connect() as conn:
                conn.execute(sa.text(sql.replace("FROM t", f"FROM ({union}) AS t"))).all()
    elif args.source == "sqlite":
        dbs = write_sqlite(files)
        datasets = {
            node: DatasetConfig(
                name="cohort", columns=COLUMNS, url=f"sqlite:///{path}", table="t", grids=GRIDS
            )
            for node, path in dbs.items()
        }

        def reference(sql: str) -> None:
            # SQLite's own query over the three files together (attached)
            conn = sqlite3.connect(dbs[NODES[0]])
            for i, node in enumerate(NODES[1:], start=1):
                conn.execute(f"ATTACH DATABASE '{dbs[node]}' AS n{i}")
            union = " UNION ALL ".join(
                ["SELECT * FROM main.t"] + [f"SELECT * FROM n{i}.t" for i in range(1, len(NODES))]
            )
            # SQLite has no stddev_samp: the same figure from the sums
            sql = sql.replace(
                "stddev_samp(sbp)",
                "sqrt((sum(sbp * sbp) - sum(sbp) * sum(sbp) / count(sbp)) / (count(sbp) - 1))",
            )
            conn.execute(sql.replace("FROM t", f"FROM ({union}) AS t")).fetchall()
            conn.close()
    else:
        if args.source == "csv":
            files = write_csv(files)
        kind = args.source
        datasets = {
            node: DatasetConfig(name="cohort", columns=COLUMNS, grids=GRIDS, **{kind: path})
            for node, path in files.items()
        }
        con = duckdb.connect()
        listed = ", ".join(f"'{p}'" for p in files.values())
        con.execute(f"CREATE VIEW t AS SELECT * FROM read_{kind}([{listed}])")

        def reference(sql: str) -> None:
            con.execute(sql).fetchall()

    results = []
    with tempfile.TemporaryDirectory() as tmp, deployed(Path(tmp), datasets) as (client, pids):
        extract_s = extract_seconds(Path(tmp))
        if extract_s:
            print(
                f"{args.source:8s} {rows:>11,} keyed extract at start-up: "
                + ", ".join(f"{s:.1f} s" for s in extract_s),
                flush=True,
            )
            results.append({"source": args.source, "rows_per_node": rows, "extract_s": extract_s})
        # Each agent's peak from its start (imports, opening and checking the dataset)
        # to now, before the first reset: what the process really reached at start-up.
        startup = max(_peak_mb(pid) for pid in pids)
        print(f"{args.source:8s} {rows:>11,} agent peak at start-up {startup:5.0f} MB", flush=True)
        results.append(
            {"source": args.source, "rows_per_node": rows, "agent_startup_peak_mb": round(startup)}
        )
        for name, (params, sql) in CASES.items():
            engine_s = _timed(lambda sql=sql: reference(sql), 5)
            for pid in pids:
                _reset_peak(pid)

            def job(name: str = name, params: dict[str, Any] = params) -> None:
                result = client.submit(name, dataset="cohort", params=params).result(timeout=3600)
                assert result.state == "completed", result.state

            job()  # warm up (and the first description in each agent's memory)
            fedtre_s = _timed(job, args.jobs)
            peak = max(_peak_mb(pid) for pid in pids)
            row = {
                "source": args.source,
                "rows_per_node": rows,
                "analysis": name,
                "fedtre_s": round(fedtre_s, 4),
                "engine_s": round(engine_s, 4),
                "ratio": round(fedtre_s / engine_s, 1),
                "agent_peak_mb": round(peak),
            }
            print(
                f"{args.source:8s} {rows:>11,} {name:9s} fedtre {fedtre_s:8.3f} s  "
                f"engine {engine_s:7.3f} s  ({fedtre_s / engine_s:6.1f}x)  "
                f"agent peak {peak:5.0f} MB",
                flush=True,
            )
            results.append(row)
    if args.source == "postgres":
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="rows per node, comma-separated")
    parser.add_argument(
        "--source", choices=("parquet", "csv", "sqlite", "postgres"), default="parquet"
    )
    parser.add_argument("--postgres", default="postgresql+psycopg://127.0.0.1:5432/test")
    parser.add_argument("--jobs", type=int, default=3, help="timed jobs per analysis")
    parser.add_argument("--data", type=Path, help="folder for the generated data (kept)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rows.json")
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="fedtre-bench-rows-"))
    data.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in [int(r) for r in args.rows.split(",")]:
        results += run_size(args, rows, data)
    args.out.write_text(
        json.dumps(
            {
                "command": " ".join(sys.argv),
                "machine": platform.platform(),
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
