"""The agent's process stays lean: what `fedtre agent run` imports, and DuckDB's threads.

bench/README.md ("Agent peak memory") measures the agent's peak; these guard the causes
found there: pandas was imported by every `fedtre` command (~35 MB of the agent's
memory), and each DuckDB worker thread adds its own buffers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

from node_agent.config import DatasetConfig
from node_agent.sources import open_source
from node_agent.sources.duckdb_source import THREADS

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "scipy", "statsmodels", "pyarrow", "matplotlib", "lifelines")


def test_the_agent_command_imports_no_heavy_library() -> None:
    # What `fedtre agent run` loads before it serves: the CLI's parser and the agent.
    code = (
        "import json, sys\n"
        "from fedtre.cli.main import build_parser\n"
        "build_parser()\n"
        "import node_agent.app\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=ROOT
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_each_duckdb_connection_runs_on_its_bounded_threads(tmp_path: Path) -> None:
    path = tmp_path / "cohort.parquet"
    duckdb.sql(f"COPY (SELECT range AS age FROM range(10)) TO '{path}' (FORMAT parquet)")
    source = open_source(DatasetConfig("cohort", {"age": "integer"}, parquet=path), tmp_path)
    try:
        with source.engine.connect() as conn:
            threads = conn.exec_driver_sql("SELECT current_setting('threads')").scalar_one()
    finally:
        source.engine.dispose()
    assert int(threads) == THREADS


def test_a_csv_line_nearly_as_long_as_the_reader_buffer_is_read(tmp_path: Path) -> None:
    # the agent's CSV buffer is small (CSV_BUFFER_BYTES); DuckDB still reads a line spanning it
    path = tmp_path / "cohort.csv"
    long_value = "x" * 1_900_000
    path.write_text("age,note\n" + "".join(f"{i},{long_value}\n" for i in range(3)))
    columns = {"age": "integer", "note": "string"}
    source = open_source(DatasetConfig("cohort", columns, csv=path), tmp_path)
    try:
        with source.engine.connect() as conn:
            found = conn.exec_driver_sql("SELECT count(*), max(length(note)) FROM cohort").one()
    finally:
        source.engine.dispose()
    assert tuple(found) == (3, len(long_value))
