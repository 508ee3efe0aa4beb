"""Attack: read the record keys a file dataset's extract stores beside its columns.

The agent's keyed extract (node_agent.sources.duckdb_source.keyed_extract) keeps each
record's cell key and differencing id in columns of the same table the analyses read. A
researcher who could group by, filter on, summarise or compute with them would learn which
keys the records of a cell carry, hence its cell key, hence the noise its count was given:
every count would become exact. Each way of naming them must be refused before anything
is computed, exactly as an undeclared column is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedtre.analyses import CATALOGUE, Outcome
from fedtre.disclosure import DisclosurePolicy
from fedtre.disclosure.cellkey import keyed_source
from node_agent.config import DatasetConfig
from node_agent.executor import Executor, TaskSpec
from node_agent.policy import LocalPolicy
from node_agent.sources.duckdb_source import ID_COLUMN, KEY_COLUMN, keyed_extract, open_file_source
from node_agent.state import AgentState

COLUMNS = {"age": "integer", "sex": "string", "bmi": "float"}

ATTEMPTS = {
    "filter on the key": ("count", {"filter": {"col": KEY_COLUMN, "op": "<", "value": 128}}),
    "table by the key": ("crosstab", {"rows": KEY_COLUMN}),
    "table by a band of the id": ("crosstab", {"rows": f"bands({ID_COLUMN}, [1000000])"}),
    "summary of the key": ("summary", {"column": KEY_COLUMN}),
    "summary of an expression of the key": ("summary", {"column": f"I({KEY_COLUMN} + 0)"}),
    "histogram of the id": ("histogram", {"column": ID_COLUMN, "width": 1000000}),
}


@pytest.fixture
def executor(tmp_path: Path):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, 400),
            "sex": rng.choice(["F", "M"], 400),
            "bmi": np.round(rng.normal(27, 4, 400), 1),
        }
    )
    frame.to_csv(tmp_path / "cohort.csv", index=False)
    dataset = DatasetConfig("cohort", COLUMNS, csv=tmp_path / "cohort.csv")
    opened = open_file_source(dataset, spill_dir=tmp_path / "private")
    source = keyed_extract(keyed_source(opened, b"a TRE's secret of thirty-two by.", None), dataset)
    names = ("count", "crosstab", "summary", "histogram")
    local = LocalPolicy(
        node_id="tre-a",
        analyses={name: CATALOGUE[name] for name in names},
        disclosure=DisclosurePolicy(),
        datasets={"cohort": source.schema},
    )
    yield Executor(local, {"cohort": source}, AgentState(tmp_path / "state.sqlite"))
    source.engine.dispose()


@pytest.mark.parametrize("attempt", sorted(ATTEMPTS))
def test_the_extracts_key_columns_cannot_be_named_in_any_analysis(executor, attempt: str) -> None:
    # Given an agent serving a CSV through its keyed extract
    analysis, params = ATTEMPTS[attempt]

    # When a researcher names the extract's key or id column in a task
    output = executor.run(TaskSpec(f"t-{attempt}", 1, "tre-a", analysis, "cohort", dict(params)))

    # Then it is refused as a column the dataset does not have, and nothing is released
    assert output.outcome is Outcome.REFUSED, output
    assert output.payload == {}
    assert KEY_COLUMN in output.error or ID_COLUMN in output.error
