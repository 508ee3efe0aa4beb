"""Data sources: one fedtre DataSource per declared dataset, checked at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from fedtre.analyses.base import DataSource
from fedtre.disclosure.cellkey import keyed_source
from node_agent.config import AgentConfig, DatasetConfig
from node_agent.sources.duckdb_source import keyed_extract, open_file_source
from node_agent.sources.sql import open_sql_source

__all__ = ["cache_dir_for", "close_sources", "key_sources", "open_source", "open_sources"]


def cache_dir_for(config: AgentConfig) -> Path:
    """Return the agent's private folder for dataset files, next to the state db.

    A CSV or Parquet dataset's DuckDB database lives here, holding its keyed extract, as do
    the temporary files of a DuckDB query larger than its memory limit
    (node_agent.sources.duckdb_source).
    """
    return config.state_db.parent / f"{config.state_db.stem}-datasets"


def open_source(dataset: DatasetConfig, cache_dir: Path) -> DataSource:
    """Return a checked DataSource for one declared dataset (open_sql_source, open_file_source,
    open_spark_source), whose schema is the dataset's declaration (columns and grids)."""
    if dataset.engine == "spark":
        # Imported here: Spark is an optional extra (pip install 'fedtre[spark]').
        from node_agent.sources.spark_source import open_spark_source

        source = open_spark_source(dataset)
    elif dataset.file is not None:
        source = open_file_source(dataset, spill_dir=cache_dir)
    else:
        assert dataset.url is not None and dataset.table is not None
        source = open_sql_source(dataset.name, dataset.url, dataset.table, dataset.columns)
    return replace(source, schema=dataset.schema)


def open_sources(config: AgentConfig) -> dict[str, DataSource]:
    """Return a DataSource per declared dataset, by name.

    Raises NotFound or InvalidRequest, naming the dataset, when any dataset's database,
    table, column or file is missing; engines already opened are disposed first.
    """
    sources: dict[str, DataSource] = {}
    try:
        for name, dataset in config.datasets.items():
            sources[name] = open_source(dataset, cache_dir_for(config))
    except BaseException:
        close_sources(sources)
        raise
    return sources


def key_sources(
    sources: Mapping[str, DataSource], config: AgentConfig, secret: bytes
) -> dict[str, DataSource]:
    """Return the sources with their record keys and ids under the TRE's secret
    (cellkey.keyed_source); a file dataset's read by DuckDB are computed once, into its
    extract (duckdb_source.keyed_extract), instead of at every task (Spark hashes in SQL)."""
    keyed: dict[str, DataSource] = {}
    for name, source in sources.items():
        dataset = config.datasets[name]
        keyed[name] = keyed_source(source, secret, dataset.key)
        if dataset.file is not None and dataset.engine == "duckdb":
            keyed[name] = keyed_extract(keyed[name], dataset)
    return keyed


def close_sources(sources: Mapping[str, DataSource]) -> None:
    """Dispose of every source's engine (its pooled connections)."""
    for source in sources.values():
        source.engine.dispose()
