"""Agent config: a good file loads with paths resolved; each kind of bad file names its fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fedtre.disclosure import DisclosurePolicy
from fedtre.errors import InvalidRequest
from node_agent.config import (
    DEFAULT_ANALYSES,
    AgentConfig,
    DatasetConfig,
    TlsConfig,
    load_config,
    write_config,
)

GOOD = """
node_id = "tre-a"
coordinator = "127.0.0.1:50051"
state_db = "state/agent-state.sqlite"

[tls]
dir = "bundle"

[policy]
threshold = 20
rounding_base = 10
analyses = ["count", "summary"]

[datasets.cohort]
url = "sqlite:///data/cohort.sqlite"
table = "cohort"
[datasets.cohort.columns]
age = "integer"
sex = "string"
bmi = "float"

[datasets.visits]
csv = "visits.csv"
[datasets.visits.columns]
seen_on = "date"
smoker = "boolean"
"""

MINIMAL = """
node_id = "tre-a"
coordinator = "localhost:50051"
[tls]
dir = "bundle"
[datasets.cohort]
url = "sqlite:////abs/cohort.sqlite"
table = "cohort"
[datasets.cohort.columns]
age = "integer"
"""


def test_good_file_loads_with_paths_resolved_against_its_folder(
    tmp_path: Path, write_toml: Callable[[str], Path]
) -> None:
    # Given a config using every section, with relative paths
    (tmp_path / "visits.csv").write_text("seen_on,smoker\n")
    path = write_toml(GOOD)

    # When it is loaded
    config = load_config(path)

    # Then every value is typed and every path is absolute, relative to the file
    assert config.node_id == "tre-a"
    assert config.coordinator == "127.0.0.1:50051"
    assert config.state_db == tmp_path / "state" / "agent-state.sqlite"
    assert config.tls == TlsConfig(
        ca=tmp_path / "bundle" / "ca.pem",
        cert=tmp_path / "bundle" / "cert.pem",
        key=tmp_path / "bundle" / "key.pem",
    )
    assert config.policy == DisclosurePolicy(threshold=20, rounding_base=10)
    assert config.analyses == ("count", "summary")
    cohort = config.datasets["cohort"]
    assert cohort.url == f"sqlite:///{tmp_path / 'data' / 'cohort.sqlite'}"
    assert cohort.table == "cohort" and cohort.csv is None
    assert dict(cohort.columns) == {"age": "integer", "sex": "string", "bmi": "float"}
    assert config.datasets["visits"].csv == tmp_path / "visits.csv"
    assert config.datasets["visits"].schema.columns == {"seen_on": "date", "smoker": "boolean"}


def test_defaults_apply_when_policy_and_state_db_are_omitted(
    tmp_path: Path, write_toml: Callable[[str], Path]
) -> None:
    config = load_config(write_toml(MINIMAL))

    assert config.policy == DisclosurePolicy(threshold=10, rounding_base=5)
    assert config.analyses == DEFAULT_ANALYSES == ("count", "crosstab", "summary")
    assert config.state_db == tmp_path / "agent-state.sqlite"
    assert config.datasets["cohort"].url == "sqlite:////abs/cohort.sqlite"


def test_tls_files_can_be_named_one_by_one(
    tmp_path: Path, write_toml: Callable[[str], Path]
) -> None:
    text = MINIMAL.replace(
        'dir = "bundle"', 'ca = "bundle/ca.pem"\ncert = "bundle/cert.pem"\nkey = "bundle/key.pem"'
    )
    config = load_config(write_toml(text))
    assert config.tls.key == tmp_path / "bundle" / "key.pem"


def test_non_sqlite_urls_are_kept_as_written(write_toml: Callable[[str], Path]) -> None:
    url = "postgresql+psycopg://reader:pw@db.tre.internal/research"
    text = MINIMAL.replace("sqlite:////abs/cohort.sqlite", url).replace(
        'table = "cohort"', 'table = "research.cohort"'
    )
    config = load_config(write_toml(text))
    assert config.datasets["cohort"].url == url
    assert config.datasets["cohort"].table == "research.cohort"


def test_write_config_round_trips(tmp_path: Path, tls_dir: Path) -> None:
    # Given a config built in code, as LocalNetwork and the demo do
    csv = tmp_path / "visits.csv"
    csv.write_text("seen_on\n")
    config = AgentConfig(
        node_id="tre-b",
        coordinator="127.0.0.1:6000",
        state_db=tmp_path / "b" / "state.sqlite",
        tls=TlsConfig(ca=tls_dir / "ca.pem", cert=tls_dir / "cert.pem", key=tls_dir / "key.pem"),
        datasets={
            "cohort": DatasetConfig(
                "cohort", {"age": "integer"}, url=f"sqlite:///{tmp_path}/c.sqlite", table="cohort"
            ),
            "visits": DatasetConfig("visits", {"seen_on": "date"}, csv=csv),
        },
        policy=DisclosurePolicy(threshold=15, rounding_base=5),
        analyses=("count",),
    )

    # When it is written and read back
    loaded = write_config(tmp_path / "nested.toml", config)

    # Then nothing changed on the way
    assert loaded == config
    assert load_config(tmp_path / "nested.toml") == config


def test_missing_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="agent config file .*nope.toml does not exist"):
        load_config(tmp_path / "nope.toml")


def test_invalid_toml_names_the_file(write_toml: Callable[[str], Path]) -> None:
    path = write_toml('node_id = "tre-a\n')
    with pytest.raises(InvalidRequest, match=r"agent.toml: not valid TOML .*line 1"):
        load_config(path)


BAD_CASES = [
    pytest.param(
        MINIMAL + '\n[extra]\ncolour = "blue"\n',
        r"top level: unknown key\(s\) \['extra'\]; known keys here: node_id",
        id="unknown-top-level-section",
    ),
    pytest.param(
        'nodeid = "x"\n' + MINIMAL,
        r"top level: unknown key\(s\) \['nodeid'\]",
        id="misspelt-top-level-key",
    ),
    pytest.param(
        MINIMAL.replace('node_id = "tre-a"', ""),
        "node_id: missing; this key is required",
        id="missing-node-id",
    ),
    pytest.param(
        MINIMAL.replace('"tre-a"', '"tre a!"'),
        "node_id: 'tre a!' is not a valid node id; .* CN of this agent's certificate",
        id="bad-node-id",
    ),
    pytest.param(
        MINIMAL.replace('"localhost:50051"', '"localhost"'),
        "coordinator: 'localhost' is not host:port",
        id="coordinator-without-port",
    ),
    pytest.param(
        MINIMAL.replace('"localhost:50051"', "50051"),
        "coordinator: must be a non-empty string",
        id="coordinator-not-a-string",
    ),
    pytest.param(
        MINIMAL.replace('[tls]\ndir = "bundle"\n', ""),
        r"\[tls\]: missing; add a \[tls\] section",
        id="missing-tls",
    ),
    pytest.param(
        MINIMAL.replace('dir = "bundle"', 'dir = "bundle"\nca = "ca.pem"'),
        r"\[tls\]: give either dir or ca/cert/key, not both",
        id="tls-dir-and-files",
    ),
    pytest.param(
        MINIMAL.replace('dir = "bundle"', 'ca = "bundle/ca.pem"\ncert = "bundle/cert.pem"'),
        r"\[tls\]: missing key 'key'",
        id="tls-missing-key",
    ),
    pytest.param(
        MINIMAL.replace('dir = "bundle"', 'dir = "elsewhere"'),
        r"\[tls\] ca: file .*elsewhere/ca.pem does not exist",
        id="tls-file-missing",
    ),
    pytest.param(
        MINIMAL.replace('dir = "bundle"', 'dir = "bundle"\npassword = "x"'),
        r"\[tls\]: unknown key\(s\) \['password'\]",
        id="tls-unknown-key",
    ),
    pytest.param(
        MINIMAL + "[policy]\nthreshold = -1\n",
        r"\[policy\]: policy threshold must be 0 or more",
        id="negative-threshold",
    ),
    pytest.param(
        MINIMAL + '[policy]\nthreshold = "ten"\n',
        r"\[policy\]: policy threshold must be a whole number",
        id="threshold-not-a-number",
    ),
    pytest.param(
        MINIMAL + "[policy]\nthreshhold = 10\n",
        r"\[policy\]: unknown key\(s\) \['threshhold'\]",
        id="policy-unknown-key",
    ),
    pytest.param(
        MINIMAL + "[policy]\nanalyses = []\n",
        r"\[policy\] analyses: must be a non-empty list",
        id="no-analyses",
    ),
    pytest.param(
        MINIMAL + '[policy]\nanalyses = ["count", "count"]\n',
        r"\[policy\] analyses: lists \['count'\] more than once",
        id="duplicate-analyses",
    ),
    pytest.param(
        MINIMAL.split("[datasets.cohort]")[0],
        r"\[datasets\]: missing; add a \[datasets\] section",
        id="no-datasets",
    ),
    pytest.param(
        MINIMAL.replace("[datasets.cohort]", "[datasets.cohort-2]").replace(
            "[datasets.cohort.columns]", '[datasets."cohort-2".columns]'
        ),
        r"\[datasets.cohort-2\]: dataset names must start with a letter",
        id="bad-dataset-name",
    ),
    pytest.param(
        MINIMAL.replace('table = "cohort"', 'tabel = "cohort"'),
        r"\[datasets.cohort\]: unknown key\(s\) \['tabel'\]; known keys here: url, table, csv",
        id="dataset-unknown-key",
    ),
    pytest.param(
        MINIMAL.replace('table = "cohort"\n', ""),
        r"\[datasets.cohort\]: needs url = .* and table = .*, or csv",
        id="url-without-table",
    ),
    pytest.param(
        MINIMAL.replace('table = "cohort"', 'table = "cohort; drop table x"'),
        r"\[datasets.cohort\] table: 'cohort; drop table x' is not a table or view name",
        id="bad-table-name",
    ),
    pytest.param(
        MINIMAL.replace('table = "cohort"', 'table = "cohort"\ncsv = "c.csv"'),
        r"\[datasets.cohort\]: give either csv or url \+ table, not both",
        id="csv-and-url",
    ),
    pytest.param(
        MINIMAL.replace('url = "sqlite:////abs/cohort.sqlite"\ntable = "cohort"', 'csv = "no.csv"'),
        r"\[datasets.cohort\] csv: file .*no.csv does not exist",
        id="csv-missing",
    ),
    pytest.param(
        MINIMAL.replace('table = "cohort"', 'table = "cohort"\nengine = "spark"'),
        r"\[datasets.cohort\]: engine and spark_master are for csv and parquet datasets",
        id="engine-on-url-dataset",
    ),
    pytest.param(
        MINIMAL.replace(
            'url = "sqlite:////abs/cohort.sqlite"\ntable = "cohort"',
            'csv = "no.csv"\nengine = "trino"',
        ),
        r"\[datasets.cohort\] engine: 'trino' is not an engine for files; use one of",
        id="unknown-file-engine",
    ),
    pytest.param(
        MINIMAL.replace(
            'url = "sqlite:////abs/cohort.sqlite"\ntable = "cohort"',
            'csv = "no.csv"\nspark_master = "local[2]"',
        ),
        r"\[datasets.cohort\] spark_master: is for engine = \"spark\" only",
        id="spark-master-without-spark",
    ),
    pytest.param(
        MINIMAL.replace(
            'url = "sqlite:////abs/cohort.sqlite"\ntable = "cohort"',
            'csv = "no.csv"\nengine = "spark"\nspark_master = "localhost"',
        ),
        r"\[datasets.cohort\] spark_master: 'localhost' is not a Spark master URL",
        id="bad-spark-master",
    ),
    pytest.param(
        MINIMAL.replace("sqlite:////abs/cohort.sqlite", "not a url"),
        r"\[datasets.cohort\] url: is not a SQLAlchemy URL",
        id="bad-url",
    ),
    pytest.param(
        MINIMAL.replace('[datasets.cohort.columns]\nage = "integer"\n', ""),
        r"\[datasets.cohort.columns\]: missing; add a \[datasets.cohort.columns\] section",
        id="no-columns-section",
    ),
    pytest.param(
        MINIMAL.replace('age = "integer"\n', ""),
        r"\[datasets.cohort.columns\]: declare at least one column",
        id="empty-columns",
    ),
    pytest.param(
        MINIMAL.replace('age = "integer"', 'age = "int"'),
        r"\[datasets.cohort.columns\] age: type 'int' is not one of \['integer', 'float'",
        id="bad-column-type",
    ),
    pytest.param(
        MINIMAL.replace('age = "integer"', '"age at entry" = "integer"'),
        r"\[datasets.cohort.columns\]: column name 'age at entry' must start with a letter",
        id="bad-column-name",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_CASES)
def test_bad_file_is_refused_naming_file_key_and_fix(
    text: str, message: str, write_toml: Callable[[str], Path]
) -> None:
    path = write_toml(text)
    with pytest.raises(InvalidRequest, match=message) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_spark_dataset_round_trips_and_may_be_a_folder(tmp_path: Path, tls_dir: Path) -> None:
    # Given a Parquet dataset read by Spark on a cluster: a folder of files, as Spark writes them
    folder = tmp_path / "cohort.parquet"
    folder.mkdir()
    config = AgentConfig(
        node_id="tre-b",
        coordinator="127.0.0.1:6000",
        state_db=tmp_path / "state.sqlite",
        tls=TlsConfig(ca=tls_dir / "ca.pem", cert=tls_dir / "cert.pem", key=tls_dir / "key.pem"),
        datasets={
            "cohort": DatasetConfig(
                "cohort",
                {"age": "integer"},
                parquet=folder,
                engine="spark",
                spark_master="spark://head:7077",
            ),
        },
    )

    # When it is written and read back, Then nothing changed on the way
    assert write_config(tmp_path / "agent.toml", config) == config
    assert 'engine = "spark"' in (tmp_path / "agent.toml").read_text()
