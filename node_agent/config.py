"""The agent's configuration: one TOML file, read once at start-up into a frozen AgentConfig."""

from __future__ import annotations

import json
import logging
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fedtre.analyses.base import COLUMN_TYPES, DatasetSchema
from fedtre.analyses.derived import check_features
from fedtre.analyses.expressions import FEATURES
from fedtre.catalogue.description import (
    DESCRIPTION_KEYS,
    ColumnDescription,
    DatasetDescription,
    column_toml,
    parse_column,
    parse_description,
)
from fedtre.disclosure import DisclosurePolicy
from fedtre.disclosure.cellkey import PTable
from fedtre.errors import InvalidRequest
from fedtre.files import write_private
from fedtre.identity.signing import VERIFY_KEY_FILE
from fedtre.ops_http import parse_listen
from node_agent.sovereignty import GovernanceConfig, parse_governance

logger = logging.getLogger(__name__)

DEFAULT_ANALYSES = ("count", "crosstab", "summary")
DEFAULT_STATE_DB = "agent-state.sqlite"
TLS_FILES = ("ca", "cert", "key")

# Dataset and column names travel to the coordinator and into SQL; keep them plain identifiers.
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# The node id is the certificate's CN; a DNS-label-like shape keeps it printable and unambiguous.
NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# A table or view, optionally schema-qualified ("research.cohort").
TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")

_TOP_KEYS = (
    "node_id", "coordinator", "state_db", "tls", "policy", "datasets", "metrics", "governance",
    "max_concurrent_tasks",
)  # fmt: skip
DEFAULT_MAX_CONCURRENT_TASKS = 2
MAX_CONCURRENT_TASKS = 64
_TLS_KEYS = ("ca", "cert", "key", "dir", "verify_key")
_POLICY_KEYS = (
    "threshold",
    "rounding_base",
    "rounding",
    "zeros_disclosive",
    "dominance_n",
    "dominance_k",
    "p_percent",
    "min_residual_df",
    "hold_for_review",
    "perturbation",
    "noise_deviation",
    "noise_variance",
    "magnitude_noise",
    "categorical_only_models",
    "projects",
    "derived",
    "analyses",
    # files: the TRE's cell-key secret and its own perturbation table (ONS CSV format)
    "cell_key_secret",
    "ptable",
)
_DATASET_KEYS = (
    "url", "table", "csv", "columns", "key", "parquet", "version", "grids", "engine",
    "spark_master", *DESCRIPTION_KEYS,
)  # fmt: skip
# The engines a CSV or Parquet dataset can be read by (DuckDB in the agent; Spark SQL).
FILE_ENGINES = ("duckdb", "spark")
# The masters Spark knows: local threads, a standalone cluster, YARN, Kubernetes.
SPARK_MASTER_RE = re.compile(r"^(local(\[(\d+|\*)(,\d+)?\])?|spark://\S+|yarn|k8s://\S+)$")
_METRICS_KEYS = ("listen",)


@dataclass(frozen=True)
class TlsConfig:
    """Paths of the network CA certificate and this agent's certificate and private key.

    verify_key: the network's job-verification key, pinned at enrolment
    (job-signing-pub.pem in the bundle); the agent refuses to start without it.
    """

    ca: Path
    cert: Path
    key: Path
    verify_key: Path | None = None

    @classmethod
    def from_bundle(cls, folder: Path) -> TlsConfig:
        """The files of an enrolment bundle as `fedtre ca issue-node` writes it."""
        return cls(
            folder / "ca.pem",
            folder / "cert.pem",
            folder / "key.pem",
            verify_key=folder / VERIFY_KEY_FILE,
        )


@dataclass(frozen=True)
class DatasetConfig:
    """One declared dataset: a SQLAlchemy url + table/view, or a CSV or Parquet file.

    columns maps each analysable column to its declared type; nothing else exists to the network.
    """

    name: str
    columns: Mapping[str, str]
    url: str | None = None
    table: str | None = None
    csv: Path | None = None
    # A Parquet file, read in place through DuckDB like a CSV (node_agent.sources.duckdb_source),
    # or by Spark (engine below).
    parquet: Path | None = None
    # A column identifying records, used only for differencing protection (never
    # advertised or analysable unless also declared); url datasets only.
    key: str | None = None
    # The version of the data the operator declares (e.g. "extract 2026-03"); every
    # released output carries it, signed (node_agent.provenance).
    version: str = ""
    # Per numeric column, the finest grid width of released bounds (histogram, quantile and
    # survival intervals); a column without one has no released bounds.
    grids: Mapping[str, float] = field(default_factory=dict)
    # What the operator writes about the dataset and its columns, for the catalogue
    # (fedtre.catalogue.description); None: not described.
    description: DatasetDescription | None = None
    column_descriptions: Mapping[str, ColumnDescription] = field(default_factory=dict)
    # What reads a CSV or Parquet dataset: "duckdb" (in the agent) or "spark" (Spark SQL,
    # node_agent.sources.spark_source), and Spark's master URL (None: local[2]).
    engine: str = "duckdb"
    spark_master: str | None = None

    @property
    def file(self) -> Path | None:
        """The dataset's CSV or Parquet file (None for a url dataset)."""
        return self.csv if self.csv is not None else self.parquet

    @property
    def schema(self) -> DatasetSchema:
        """Return the dataset as advertised: its name, declared columns, grids and the
        operator's description, never values."""
        return DatasetSchema(
            name=self.name,
            columns=dict(self.columns),
            grids=dict(self.grids),
            description=self.description,
            column_descriptions=dict(self.column_descriptions),
        )


@dataclass(frozen=True)
class AgentConfig:
    """Everything a node agent needs, with every path absolute.

    coordinator: the coordinator's agent address, host:port; with several coordinator
    replicas, every one of them, comma-separated ("a:50051,b:50051"): the agent moves to
    the next one each time its stream is lost.
    """

    node_id: str
    coordinator: str
    state_db: Path
    tls: TlsConfig
    datasets: Mapping[str, DatasetConfig]
    policy: DisclosurePolicy = field(default_factory=DisclosurePolicy)
    analyses: tuple[str, ...] = DEFAULT_ANALYSES
    # The functions and operators derived variables may use ([policy] derived): all by
    # default; () switches derived variables off (fedtre.analyses.expressions.FEATURES).
    derived: tuple[str, ...] = FEATURES
    # host:port of the plain-HTTP /metrics, /livez and /readyz endpoint; None serves none.
    metrics_listen: str | None = None
    # The projects served, and whether the TRE's operator approves them (node_agent.sovereignty).
    governance: GovernanceConfig = field(default_factory=GovernanceConfig)
    # The most tasks this agent runs at once; more wait in its queue (backpressure).
    max_concurrent_tasks: int = DEFAULT_MAX_CONCURRENT_TASKS
    # The TRE's cell-key secret (created 0600 at first start when absent; never leaves
    # the TRE) and its own perturbation table, if any.
    cell_key_secret: Path | None = None
    ptable: Path | None = None

    @property
    def secret_path(self) -> Path:
        """Return the cell-key secret's file: as configured, else beside the state db."""
        if self.cell_key_secret is not None:
            return self.cell_key_secret
        return self.state_db.parent / f"{self.state_db.stem}-cell-key-secret"

    def to_toml(self) -> str:
        """Return this config as TOML text that load_config reads back to an equal config."""
        lines = [
            f"node_id = {_toml_str(self.node_id)}",
            f"coordinator = {_toml_str(self.coordinator)}",
            f"state_db = {_toml_str(str(self.state_db))}",
            *(
                [f"max_concurrent_tasks = {self.max_concurrent_tasks}"]
                if self.max_concurrent_tasks != DEFAULT_MAX_CONCURRENT_TASKS
                else []
            ),
            "",
            "[tls]",
            *(f"{k} = {_toml_str(str(getattr(self.tls, k)))}" for k in TLS_FILES),
            *(
                [f"verify_key = {_toml_str(str(self.tls.verify_key))}"]
                if self.tls.verify_key is not None
                else []
            ),
            "",
            "[governance]",
            *self.governance.to_toml_lines(),
            "",
            "[policy]",
            *self.policy.to_toml_lines(),
            f"analyses = [{', '.join(_toml_str(a) for a in self.analyses)}]",
            *(
                [f"derived = [{', '.join(_toml_str(f) for f in self.derived)}]"]
                if self.derived != FEATURES
                else []
            ),
            *(
                [f"cell_key_secret = {_toml_str(str(self.cell_key_secret))}"]
                if self.cell_key_secret is not None
                else []
            ),
            *([f"ptable = {_toml_str(str(self.ptable))}"] if self.ptable is not None else []),
            *self.policy.project_toml_tables(),
        ]
        if self.metrics_listen is not None:
            lines += ["", "[metrics]", f"listen = {_toml_str(self.metrics_listen)}"]
        for name, ds in self.datasets.items():
            lines += ["", f"[datasets.{name}]"]
            if ds.csv is not None:
                lines.append(f"csv = {_toml_str(str(ds.csv))}")
            elif ds.parquet is not None:
                lines.append(f"parquet = {_toml_str(str(ds.parquet))}")
            else:
                lines.append(f"url = {_toml_str(ds.url or '')}")
                lines.append(f"table = {_toml_str(ds.table or '')}")
                if ds.key is not None:
                    lines.append(f"key = {_toml_str(ds.key)}")
            if ds.engine != "duckdb":
                lines.append(f"engine = {_toml_str(ds.engine)}")
            if ds.spark_master is not None:
                lines.append(f"spark_master = {_toml_str(ds.spark_master)}")
            if ds.version:
                lines.append(f"version = {_toml_str(ds.version)}")
            if ds.grids:
                grids = ", ".join(f"{col} = {width!r}" for col, width in ds.grids.items())
                lines.append(f"grids = {{ {grids} }}")
            if ds.description is not None:
                lines += ds.description.to_toml_lines()
            lines.append(f"[datasets.{name}.columns]")
            lines += [
                f"{col} = {column_toml(typ, ds.column_descriptions.get(col))}"
                for col, typ in ds.columns.items()
            ]
        return "\n".join(lines) + "\n"


def write_config(path: str | Path, config: AgentConfig) -> AgentConfig:
    """Write config as TOML to path and return it as load_config reads it back.

    Raises InvalidRequest when the written file does not load (so a generated config is
    checked by exactly the rules an operator's hand-written one is).
    """
    path = Path(path)
    write_private(path, config.to_toml())
    return load_config(path)


def load_config(path: str | Path) -> AgentConfig:
    """Read and check an agent config file; relative paths resolve against its directory.

    Raises InvalidRequest naming the file, the key and how to fix it.
    """
    path = Path(path).resolve()
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise InvalidRequest(
            f"agent config file {path} does not exist; pass the path of the agent's TOML config"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(f"{path}: not valid TOML ({exc}); fix the syntax") from exc
    except OSError as exc:
        raise InvalidRequest(f"agent config file {path} cannot be read ({exc.strerror})") from exc
    return _Parser(path).parse(raw)


class _Parser:
    """Turns the parsed TOML document into an AgentConfig, with errors in the file's terms."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def error(self, where: str, problem: str) -> InvalidRequest:
        return InvalidRequest(f"{self.path}: {where}: {problem}")

    def parse(self, raw: dict[str, Any]) -> AgentConfig:
        self.reject_unknown("top level", raw, _TOP_KEYS)
        node_id = self.string(raw, "node_id", "node_id")
        if not NODE_ID_RE.match(node_id):
            raise self.error(
                "node_id",
                f"{node_id!r} is not a valid node id; use letters, digits, '.', '_' or '-' "
                "(at most 63 characters), exactly as in the CN of this agent's certificate",
            )
        coordinator = self.string(raw, "coordinator", "coordinator")
        self.check_address(coordinator)
        state_db = self.path_value(raw.get("state_db", DEFAULT_STATE_DB), "state_db")
        policy_raw = self.table(raw, "policy", section="policy") or {}
        policy, analyses = self.parse_policy(policy_raw)
        secret = ptable = None
        if "cell_key_secret" in policy_raw:
            secret = self.path_value(policy_raw["cell_key_secret"], "[policy] cell_key_secret")
        if "ptable" in policy_raw:
            ptable = self.path_value(policy_raw["ptable"], "[policy] ptable")
            try:
                policy = policy.keyed(custom_ptable=PTable.from_csv(ptable))
            except InvalidRequest as exc:
                raise self.error("[policy] ptable", str(exc)) from exc
        workers = raw.get("max_concurrent_tasks", DEFAULT_MAX_CONCURRENT_TASKS)
        if (
            isinstance(workers, bool)
            or not isinstance(workers, int)
            or not 1 <= workers <= MAX_CONCURRENT_TASKS
        ):
            raise self.error(
                "max_concurrent_tasks",
                f"{workers!r} is not a whole number from 1 to {MAX_CONCURRENT_TASKS}; "
                "e.g. max_concurrent_tasks = 4",
            )
        return AgentConfig(
            node_id=node_id,
            coordinator=coordinator,
            state_db=state_db,
            tls=self.parse_tls(self.required_table(raw, "tls", section="tls")),
            datasets=self.parse_datasets(self.required_table(raw, "datasets", section="datasets")),
            policy=policy,
            analyses=analyses,
            derived=self.parse_derived(policy_raw.get("derived", True)),
            metrics_listen=self.parse_metrics(self.table(raw, "metrics", section="metrics") or {}),
            governance=self.parse_governance(
                self.table(raw, "governance", section="governance") or {}
            ),
            max_concurrent_tasks=workers,
            cell_key_secret=secret,
            ptable=ptable,
        )

    def parse_governance(self, raw: dict[str, Any]) -> GovernanceConfig:
        try:
            return parse_governance(raw)
        except InvalidRequest as exc:
            raise self.error("[governance]", str(exc)) from exc

    def parse_metrics(self, raw: dict[str, Any]) -> str | None:
        """Return [metrics] listen checked to be HOST:PORT, or None when not given."""
        self.reject_unknown("[metrics]", raw, _METRICS_KEYS)
        if "listen" not in raw:
            return None
        listen = self.string(raw, "listen", "[metrics] listen")
        try:
            parse_listen(listen)
        except InvalidRequest as exc:
            raise self.error("[metrics] listen", str(exc)) from exc
        return listen

    def parse_tls(self, raw: dict[str, Any]) -> TlsConfig:
        self.reject_unknown("[tls]", raw, _TLS_KEYS)
        verify_key: Path | None = None
        if "verify_key" in raw:
            verify_key = self.path_value(raw["verify_key"], "[tls] verify_key")
            if not verify_key.is_file():
                raise self.error(
                    "[tls] verify_key",
                    f"file {verify_key} does not exist; it is {VERIFY_KEY_FILE} in this "
                    "node's enrolment bundle",
                )
        if "dir" in raw:
            if set(raw) & set(TLS_FILES):
                raise self.error(
                    "[tls]", "give either dir or ca/cert/key, not both; remove one of them"
                )
            bundle = self.path_value(raw["dir"], "[tls] dir")
            paths = {k: bundle / f"{k}.pem" for k in TLS_FILES}
            if verify_key is None and (bundle / VERIFY_KEY_FILE).is_file():
                verify_key = bundle / VERIFY_KEY_FILE
        else:
            paths = {}
            for key in TLS_FILES:
                if key not in raw:
                    raise self.error(
                        "[tls]",
                        f"missing key {key!r}; give ca, cert and key (PEM files), "
                        "or dir = a folder holding ca.pem, cert.pem and key.pem",
                    )
                paths[key] = self.path_value(raw[key], f"[tls] {key}")
        for key, file in paths.items():
            if not file.is_file():
                raise self.error(
                    f"[tls] {key}",
                    f"file {file} does not exist; issue this agent's certificate "
                    "or correct the path",
                )
        return TlsConfig(**paths, verify_key=verify_key)

    def parse_policy(self, raw: dict[str, Any]) -> tuple[DisclosurePolicy, tuple[str, ...]]:
        self.reject_unknown("[policy]", raw, _POLICY_KEYS)
        settings: dict[str, Any] = {
            k: v
            for k, v in raw.items()
            if k not in ("analyses", "cell_key_secret", "ptable", "derived")
        }
        try:
            policy = DisclosurePolicy.from_mapping(settings)
        except (InvalidRequest, TypeError) as exc:
            raise self.error("[policy]", str(exc)) from exc
        looser = policy.looser_than(DisclosurePolicy())
        if looser:
            logger.warning(
                "disclosure policy is looser than fedtre's defaults: %s",
                "; ".join(looser),
                extra={"threshold": policy.threshold, "rounding_base": policy.rounding_base},
            )
        analyses = raw.get("analyses", list(DEFAULT_ANALYSES))
        if (
            not isinstance(analyses, list)
            or not analyses
            or not all(isinstance(a, str) and a for a in analyses)
        ):
            raise self.error(
                "[policy] analyses",
                'must be a non-empty list of analysis names, e.g. ["count", "crosstab"]',
            )
        duplicates = sorted({a for a in analyses if analyses.count(a) > 1})
        if duplicates:
            raise self.error("[policy] analyses", f"lists {duplicates} more than once")
        return policy, tuple(analyses)

    def parse_derived(self, raw: Any) -> tuple[str, ...]:
        """[policy] derived: true (every function), false (none) or a list of functions."""
        if isinstance(raw, bool):
            return FEATURES if raw else ()
        if not isinstance(raw, list) or not all(isinstance(f, str) for f in raw):
            raise self.error(
                "[policy] derived",
                'must be true, false or a list of functions, e.g. derived = ["log", "bands"]',
            )
        try:
            return check_features(raw, where="[policy] derived")
        except InvalidRequest as exc:
            raise self.error("[policy] derived", str(exc)) from exc

    def parse_datasets(self, raw: dict[str, Any]) -> dict[str, DatasetConfig]:
        if not raw:
            raise self.error(
                "[datasets]",
                "no dataset is declared; add a [datasets.<name>] table with url + table "
                "or csv, and its [datasets.<name>.columns]",
            )
        return {name: self.parse_dataset(name, value) for name, value in raw.items()}

    def parse_dataset(self, name: str, raw: Any) -> DatasetConfig:
        dataset = self._parse_dataset(name, raw)
        if isinstance(raw, dict) and "version" in raw:
            version = self.string(raw, "version", f"[datasets.{name}] version")
            dataset = replace(dataset, version=version)
        if isinstance(raw, dict) and "grids" in raw:
            dataset = replace(dataset, grids=self.parse_grids(name, raw["grids"], dataset.columns))
        try:
            description = parse_description(raw)
        except InvalidRequest as exc:
            raise self.error(f"[datasets.{name}]", str(exc)) from exc
        return replace(
            dataset,
            description=description,
            column_descriptions=self.parse_column_descriptions(name, raw["columns"]),
        )

    def parse_column_descriptions(
        self, dataset: str, raw: dict[str, Any]
    ) -> dict[str, ColumnDescription]:
        """The described columns of [datasets.<name>.columns] (checked by parse_columns)."""
        described = {}
        for column, value in raw.items():
            _, description = parse_column(column, value, COLUMN_TYPES)
            if not description.empty:
                described[column] = description
        return described

    def parse_grids(self, dataset: str, raw: Any, columns: Mapping[str, str]) -> dict[str, float]:
        where = f"[datasets.{dataset}] grids"
        if not isinstance(raw, dict):
            raise self.error(where, "must be a table of column = width, e.g. { age = 5 }")
        grids: dict[str, float] = {}
        for column, width in raw.items():
            if columns.get(column) not in ("integer", "float"):
                raise self.error(
                    where, f"{column!r} is not a declared numeric column; grids are for numbers"
                )
            if (
                isinstance(width, bool)
                or not isinstance(width, int | float)
                or not math.isfinite(width)
                or width <= 0
            ):
                raise self.error(
                    f"{where} {column}",
                    f"{width!r} is not a positive width; e.g. {column} = 5 releases bounds "
                    "on multiples of 5 only",
                )
            grids[column] = float(width)
        return grids

    def _parse_dataset(self, name: str, raw: Any) -> DatasetConfig:
        where = f"[datasets.{name}]"
        if not NAME_RE.match(name):
            raise self.error(
                where,
                "dataset names must start with a letter or '_' and contain only letters, "
                "digits and '_' (at most 63 characters); rename the dataset",
            )
        if not isinstance(raw, dict):
            raise self.error(where, "must be a table with url + table or csv, and columns")
        self.reject_unknown(where, raw, _DATASET_KEYS)
        columns = self.parse_columns(
            name, self.required_table(raw, "columns", section=f"datasets.{name}.columns")
        )
        if "csv" in raw and "parquet" in raw:
            raise self.error(where, "give either csv or parquet, not both")
        for kind in ("csv", "parquet"):
            if kind not in raw:
                continue
            if "url" in raw or "table" in raw:
                raise self.error(where, f"give either {kind} or url + table, not both")
            file = self.path_value(raw[kind], f"{where} {kind}")
            engine, master = self.parse_file_engine(where, raw)
            # Spark also reads a directory of files (a partitioned Parquet dataset).
            if not (file.is_file() or (engine == "spark" and file.is_dir())):
                raise self.error(f"{where} {kind}", f"file {file} does not exist; correct the path")
            if "key" in raw:
                raise self.error(
                    f"{where} key",
                    f"a key column is for url datasets only; {kind.upper()} records are "
                    "identified by their declared values (docs/disclosure.md); remove key",
                )
            if kind == "csv":
                return DatasetConfig(
                    name=name, columns=columns, csv=file, engine=engine, spark_master=master
                )
            return DatasetConfig(
                name=name, columns=columns, parquet=file, engine=engine, spark_master=master
            )
        if "engine" in raw or "spark_master" in raw:
            raise self.error(
                where,
                "engine and spark_master are for csv and parquet datasets; a url dataset's "
                "engine is its URL's database",
            )
        if "url" not in raw or "table" not in raw:
            raise self.error(
                where,
                'needs url = "<SQLAlchemy URL>" and table = "<table or view>", '
                'or csv = "<file.csv>", or parquet = "<file.parquet>"',
            )
        url = self.string(raw, "url", f"{where} url")
        table = self.string(raw, "table", f"{where} table")
        if not TABLE_RE.match(table):
            raise self.error(
                f"{where} table",
                f"{table!r} is not a table or view name; use name or schema.name",
            )
        url = self.resolve_url(url, where)
        key = None
        if "key" in raw:
            key = self.string(raw, "key", f"{where} key")
            if not NAME_RE.match(key):
                raise self.error(
                    f"{where} key", f"{key!r} is not a column name; give the record id column"
                )
        return DatasetConfig(name=name, columns=columns, url=url, table=table, key=key)

    def parse_file_engine(self, where: str, raw: dict[str, Any]) -> tuple[str, str | None]:
        """Return (engine, Spark master or None) of a CSV or Parquet dataset."""
        engine = self.string(raw, "engine", f"{where} engine") if "engine" in raw else "duckdb"
        if engine not in FILE_ENGINES:
            raise self.error(
                f"{where} engine",
                f"{engine!r} is not an engine for files; use one of {list(FILE_ENGINES)}",
            )
        if "spark_master" not in raw:
            return engine, None
        if engine != "spark":
            raise self.error(f"{where} spark_master", 'is for engine = "spark" only')
        master = self.string(raw, "spark_master", f"{where} spark_master")
        if not SPARK_MASTER_RE.match(master):
            raise self.error(
                f"{where} spark_master",
                f'{master!r} is not a Spark master URL; e.g. "local[2]", '
                '"spark://host:7077", "yarn" or "k8s://https://host:443"',
            )
        return engine, master

    def parse_columns(self, dataset: str, raw: dict[str, Any]) -> dict[str, str]:
        where = f"[datasets.{dataset}.columns]"
        if not raw:
            raise self.error(where, 'declare at least one column, e.g. age = "integer"')
        types = {}
        for column, value in raw.items():
            if not NAME_RE.match(column):
                raise self.error(
                    where,
                    f"column name {column!r} must start with a letter or '_' and contain only "
                    "letters, digits and '_' (at most 63 characters); declare a view that "
                    "renames it",
                )
            try:
                types[column], _ = parse_column(column, value, COLUMN_TYPES)
            except InvalidRequest as exc:
                raise self.error(f"{where} {column}", str(exc)) from exc
        return types

    def resolve_url(self, url: str, where: str) -> str:
        """Return url, with a relative SQLite file path made relative to the config file."""
        try:
            parsed = sa.make_url(url)
        except (sa.exc.ArgumentError, ValueError) as exc:
            raise self.error(
                f"{where} url",
                "is not a SQLAlchemy URL, e.g. sqlite:///cohort.sqlite or "
                "postgresql+psycopg://user@host/db",
            ) from exc
        database = parsed.database
        if (
            parsed.get_backend_name() == "sqlite"
            and database
            and database != ":memory:"
            and not database.startswith("file:")
            and not Path(database).is_absolute()
        ):
            parsed = parsed.set(database=str((self.base / database).resolve()))
            return parsed.render_as_string(hide_password=False)
        return url

    def check_address(self, address: str) -> None:
        for one in address.split(","):
            host, _, port = one.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise self.error(
                    "coordinator",
                    f"{one.strip()!r} is not host:port; give the coordinator's agent address, "
                    'e.g. coordinator = "coordinator.example.org:50051", or, with several '
                    'replicas, each of them: coordinator = "c1.example.org:50051,'
                    'c2.example.org:50051"',
                )

    def reject_unknown(self, where: str, raw: Mapping[str, Any], known: tuple[str, ...]) -> None:
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise self.error(
                where,
                f"unknown key(s) {unknown}; known keys here: {', '.join(known)}",
            )

    def table(self, raw: Mapping[str, Any], key: str, *, section: str) -> dict[str, Any] | None:
        """Return raw[key] checked to be a TOML table, or None when absent."""
        if key not in raw:
            return None
        value = raw[key]
        if not isinstance(value, dict):
            raise self.error(f"[{section}]", "must be a table (a [section]), not a single value")
        return value

    def required_table(self, raw: Mapping[str, Any], key: str, *, section: str) -> dict[str, Any]:
        value = self.table(raw, key, section=section)
        if value is None:
            raise self.error(f"[{section}]", f"missing; add a [{section}] section")
        return value

    def string(self, raw: Mapping[str, Any], key: str, where: str) -> str:
        if key not in raw:
            raise self.error(where, "missing; this key is required")
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(where, "must be a non-empty string in double quotes")
        return value

    def path_value(self, value: Any, where: str) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise self.error(where, "must be a non-empty path string in double quotes")
        return (self.base / Path(value).expanduser()).resolve()


def _toml_str(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes, except a raw DEL.
    return json.dumps(value).replace("\x7f", "\\u007f")
