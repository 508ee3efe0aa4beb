"""A file dataset's keyed extract: keys computed once, kept private, following the file.

The agent copies a CSV or Parquet dataset into a table of its private DuckDB database with
each record's cell key and differencing id (node_agent.sources.duckdb_source.keyed_extract).
These tests check what that must never change: the answers (the same keys and sketches as
the engines hashing in SQL, test_agent_sources_agree), the file followed without a restart,
nothing about a bad file told to the researcher, and the copy private to the agent.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedtre.analyses import CATALOGUE, Outcome
from fedtre.analyses.base import DataSource
from fedtre.disclosure import DisclosurePolicy
from fedtre.disclosure.cellkey import keyed_source
from fedtre.disclosure.differencing import measure_cohort
from fedtre.errors import InvalidRequest
from node_agent.config import DatasetConfig
from node_agent.executor import DATASET_UNAVAILABLE, Executor, TaskSpec
from node_agent.policy import LocalPolicy
from node_agent.sources.duckdb_source import keyed_extract, open_file_source
from node_agent.sources.sql import open_sql_source
from node_agent.state import AgentState

COLUMNS = {"age": "integer", "sex": "string", "bmi": "float"}
SECRET = b"a TRE's secret of thirty-two by."
BUILT = "keyed extract"


def _frame(rows: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, rows),
            "sex": rng.choice(["F", "M"], rows),
            "bmi": np.round(rng.normal(27, 4, rows), 1),
        }
    )


def _extracted(dataset: DatasetConfig, folder: Path, secret: bytes = SECRET) -> DataSource:
    source = open_file_source(dataset, spill_dir=folder)
    return keyed_extract(keyed_source(source, secret, None), dataset)


@pytest.fixture
def csv_dataset(tmp_path: Path) -> DatasetConfig:
    _frame(300).to_csv(tmp_path / "cohort.csv", index=False)
    return DatasetConfig("cohort", COLUMNS, csv=tmp_path / "cohort.csv")


def _executor(tmp_path: Path, source: DataSource) -> Executor:
    local = LocalPolicy(
        node_id="tre-a",
        analyses={"count": CATALOGUE["count"]},
        disclosure=DisclosurePolicy(),
        datasets={"cohort": source.schema},
    )
    return Executor(local, {"cohort": source}, AgentState(tmp_path / "state.sqlite"))


def _count(executor: Executor, task_id: str, **params: object) -> object:
    return executor.run(TaskSpec(task_id, 1, "tre-a", "count", "cohort", dict(params)))


def test_the_extract_sketches_and_keys_records_as_sql_hashing_does(
    tmp_path: Path, csv_dataset: DatasetConfig
) -> None:
    # Given the same records as a CSV read through its extract and as a SQLite table
    # hashed in SQL, keyed by the same secret
    _frame(300).to_sql("cohort", f"sqlite:///{tmp_path / 'c.sqlite'}", index=False)
    hashed = keyed_source(
        open_sql_source("cohort", f"sqlite:///{tmp_path / 'c.sqlite'}", "cohort", COLUMNS),
        SECRET,
        None,
    )
    extracted = _extracted(csv_dataset, tmp_path / "private")
    try:
        # When each measures a filtered cohort with groups, and counts it
        measured = [
            measure_cohort(
                source,
                {"col": "age", "op": ">=", "value": 40},
                None,
                filtered=True,
                groupings=[("sex",)],
            )
            for source in (hashed, extracted)
        ]
        params = CATALOGUE["count"].validate({"filter": {"col": "age", "op": ">=", "value": 40}})
        counts = [CATALOGUE["count"].compute(params, s) for s in (hashed, extracted)]
    finally:
        hashed.engine.dispose()
        extracted.engine.dispose()

    # Then the sketches, group sketches and cell keys are the same
    assert measured[0].digest == measured[1].digest and measured[0].size == measured[1].size
    assert [g.labels for g in measured[0].groups] == [g.labels for g in measured[1].groups]
    for a, b in zip(measured[0].groups, measured[1].groups, strict=True):
        assert np.array_equal(a.sketch, b.sketch)
    assert counts[0] == counts[1]


def test_a_changed_file_is_extracted_again_before_the_next_task(
    tmp_path: Path, csv_dataset: DatasetConfig, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an agent serving a CSV through its extract, which answered once
    source = _extracted(csv_dataset, tmp_path / "private")
    executor = _executor(tmp_path, source)
    try:
        with caplog.at_level(logging.INFO, logger="node_agent.sources.duckdb_source"):
            before = _count(executor, "t-1")
            again = _count(executor, "t-2", filter={"col": "age", "op": ">=", "value": 40})
            builds_unchanged = sum(BUILT in r.getMessage() for r in caplog.records)

            # When the operator replaces the file with 200 more records
            _frame(500, seed=4).to_csv(csv_dataset.csv, index=False)
            after = _count(executor, "t-3")
    finally:
        source.engine.dispose()

    # Then the unchanged file was not extracted again, and the changed one was, at once
    assert before.outcome is Outcome.RELEASED and again.outcome is Outcome.RELEASED
    assert builds_unchanged == 0  # built once, when the agent started
    assert sum(BUILT in r.getMessage() for r in caplog.records) == 1
    assert after.outcome is Outcome.RELEASED
    assert before.payload["n"] < 320 and after.payload["n"] > 480  # noise is at most a few


def test_a_changed_file_that_does_not_fit_fails_tasks_and_tells_only_the_operator(
    tmp_path: Path, csv_dataset: DatasetConfig, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an agent serving a CSV through its extract
    source = _extracted(csv_dataset, tmp_path / "private")
    executor = _executor(tmp_path, source)
    try:
        assert _count(executor, "t-1").outcome is Outcome.RELEASED
        # When the file is replaced by one whose ages are not whole numbers
        bad = _frame(300).astype({"age": str})
        bad.loc[7, "age"] = "seventy-one"
        bad.to_csv(csv_dataset.csv, index=False)
        with caplog.at_level(logging.ERROR, logger="node_agent.executor"):
            output = _count(executor, "t-2")
    finally:
        source.engine.dispose()

    # Then the task fails with fixed words: no path, value, row or count for the researcher
    assert output.outcome is Outcome.FAILED
    assert output.error == DATASET_UNAVAILABLE
    assert output.payload == {}
    # while the operator's log says what is wrong
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "'age'" in logged and "not whole numbers" in logged and "seventy" not in logged


def test_a_restarted_agent_reuses_its_extract_unless_the_keys_changed(
    tmp_path: Path, csv_dataset: DatasetConfig, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "private"
    with caplog.at_level(logging.INFO, logger="node_agent.sources.duckdb_source"):
        # Given an extract built by an agent that then stopped
        _extracted(csv_dataset, folder).engine.dispose()
        # When the agent starts again with the same file and secret, then with another secret
        same = _extracted(csv_dataset, folder)
        same.engine.dispose()
        reused = sum(BUILT in r.getMessage() for r in caplog.records)
        other = _extracted(csv_dataset, folder, secret=b"another secret, thirty-two bytes")
        other.engine.dispose()

    # Then the first restart reused the extract and the new secret rebuilt it
    assert reused == 1
    assert sum(BUILT in r.getMessage() for r in caplog.records) == 2


def test_the_extract_is_private_and_its_key_columns_are_not_columns(
    tmp_path: Path, csv_dataset: DatasetConfig
) -> None:
    # Given a built extract
    folder = tmp_path / "private"
    source = _extracted(csv_dataset, folder)
    executor = _executor(tmp_path, source)
    try:
        # When a task names the extract's key column as if it were a column
        output = _count(
            executor, "t-1", filter={"col": "fedtre_record_key", "op": "==", "value": 3}
        )
    finally:
        source.engine.dispose()

    # Then it is refused as an unknown column, and only the declared columns exist
    assert output.outcome is Outcome.REFUSED
    assert "fedtre_record_key" in output.error
    assert list(source.table.c.keys()) == list(COLUMNS)
    # And the folder and every file in it are the agent's alone
    assert folder.stat().st_mode & 0o777 == 0o700
    files = list(folder.iterdir())
    assert files and all(f.stat().st_mode & 0o777 == 0o600 for f in files if f.is_file())


def test_a_column_named_like_the_extracts_keys_is_refused_at_start(tmp_path: Path) -> None:
    frame = _frame(20).rename(columns={"bmi": "fedtre_record_id"})
    frame.to_csv(tmp_path / "cohort.csv", index=False)
    dataset = DatasetConfig(
        "cohort", {"age": "integer", "fedtre_record_id": "float"}, csv=tmp_path / "cohort.csv"
    )
    with pytest.raises(InvalidRequest, match=r"\['fedtre_record_id'\] are reserved"):
        _extracted(dataset, tmp_path / "private")
