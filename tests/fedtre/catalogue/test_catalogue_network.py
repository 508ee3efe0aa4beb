"""The catalogue through a real network: operators describe datasets, researchers list and export.

Every exported record validates against the HDR UK 4.0.0 schema, and none holds an exact
count or a value of the data: the catalogue is built from declarations only.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.request
from dataclasses import replace
from importlib import resources
from typing import Any

import jsonschema
import numpy as np
import pytest

from fedtre.catalogue.description import ColumnDescription, DatasetDescription
from fedtre.catalogue.entry import public_entries
from fedtre.cli.main import main
from fedtre.synth import generate_cohort
from fedtre.testing import LocalNetwork
from node_agent.app import Agent
from node_agent.config import load_config, write_config

ROWS = {"tre-a": 173, "tre-b": 211, "tre-c": 97}
DESCRIBED = ("tre-a", "tre-b")  # tre-c's operator has not described its dataset
CODEBOOK = {
    "sex": ColumnDescription("Sex recorded at registration", labels={"F": "female", "M": "male"}),
    "age": ColumnDescription("Age at cohort entry", unit="years"),
    "diabetes": ColumnDescription("Diagnosed diabetes", labels={"0": "no", "1": "yes"}),
    "region": ColumnDescription("NHS region of residence", sensitive=True),
}


def description(node: str) -> DatasetDescription:
    return DatasetDescription(
        title=f"Synthetic primary care cohort ({node})",
        abstract="A synthetic cohort of adults registered with general practices, for "
        "testing federated analysis.",
        custodian=f"Trusted Research Environment {node.upper()}",
        contact=f"data@{node}.example.org",
        keywords=("primary care", "cardiovascular"),
        temporal_start=dt.date(2015, 1, 1),
        temporal_end=dt.date(2024, 12, 31) if node == "tre-a" else None,
        spatial_coverage="United Kingdom",
        access_rights="https://example.org/access: apply through the data access committee",
    )


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(15)
    return {node: generate_cohort(i, n, rng) for i, (node, n) in enumerate(ROWS.items())}


@pytest.fixture(scope="module")
def net(frames, tmp_path_factory):
    with LocalNetwork(
        {node: {"cohort": frame} for node, frame in frames.items()},
        directory=tmp_path_factory.mktemp("catalogue"),
        ping_interval=0.3,
        metrics=True,  # the ops HTTP server, for the public /catalogue.json
    ) as network:
        for node in DESCRIBED:  # each operator describes its dataset and restarts its agent
            path = network.directory / "nodes" / node / "agent.toml"
            network.stop_agent(node)
            config = load_config(path)
            cohort = replace(
                config.datasets["cohort"],
                description=description(node),
                column_descriptions=CODEBOOK,
            )
            config = write_config(path, replace(config, datasets={"cohort": cohort}))
            network.agents[node] = agent = Agent(config)
            agent.start()
        network.wait_until_online(list(ROWS))
        yield network


def cli(net, *args: str) -> list[str]:
    who = ["--coordinator", net.api_address, "--identity", str(net.identity("researcher"))]
    return [*args, *who]


def hdruk_schema() -> dict[str, Any]:
    text = (
        resources.files("fedtre.standards")
        .joinpath("hdruk-dataset-4.0.0.schema.json")
        .read_text("utf-8")
    )
    return json.loads(text)


def leaves(value: Any, key: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in leaves(v, k)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in leaves(v, key)]
    return [(key, value)]


def test_the_client_lists_each_node_dataset_with_its_declared_description(net):
    with net.client() as client:
        entries = {e.node: e for e in client.catalogue()}

    assert sorted(entries) == sorted(ROWS)
    a = entries["tre-a"].dataset
    assert a.description == description("tre-a")
    assert a.column_descriptions == CODEBOOK
    assert a.columns["age"] == "integer"
    assert entries["tre-c"].dataset.description is None
    assert entries["tre-c"].dataset.column_descriptions == {}


def test_list_and_show_print_the_description(net, capsys):
    assert main(cli(net, "catalogue", "list")) == 0
    listing = capsys.readouterr().out
    assert "Synthetic primary care cohort (tre-a)" in listing
    assert "(not described)" in listing  # tre-c

    assert main(cli(net, "catalogue", "show", "cohort", "--node", "tre-b")) == 0
    shown = capsys.readouterr().out
    assert "data@tre-b.example.org" in shown
    assert "2015-01-01 to ongoing" in shown
    assert "sex (string); Sex recorded at registration; codes: F = female, M = male" in shown
    assert "region (string); NHS region of residence; sensitive" in shown


def test_show_of_an_unknown_dataset_says_what_to_do(net, capsys):
    assert main(cli(net, "catalogue", "show", "nosuch")) == 2
    assert "fedtre catalogue list" in capsys.readouterr().err


def test_export_writes_one_valid_hdruk_record_per_described_dataset_per_tre(
    net, frames, tmp_path, capsys
):
    # When a researcher exports the catalogue into a folder
    out = tmp_path / "records"
    assert main(cli(net, "catalogue", "export", "--format", "hdruk-4.0.0", "--out", str(out))) == 0
    assert "skipped cohort on tre-c: not described" in capsys.readouterr().err

    # Then there is one record per described dataset per TRE, each private to its owner
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["tre-a--cohort.json", "tre-b--cohort.json"]
    assert out.stat().st_mode & 0o777 == 0o700
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    records = {f.name.split("--")[0]: json.loads(f.read_text()) for f in files}

    # and each validates against the HDR UK 4.0.0 JSON Schema
    validator = jsonschema.Draft202012Validator(
        hdruk_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for record in records.values():
        assert list(validator.iter_errors(record)) == []

    # and carries what the operator declared, structure included
    a = records["tre-a"]
    assert a["summary"]["title"] == "Synthetic primary care cohort (tre-a)"
    assert a["provenance"]["temporal"]["endDate"] == "2024-12-31"
    columns = {c["name"]: c for c in a["structuralMetadata"]["tables"][0]["columns"]}
    assert list(columns) == list(frames["tre-a"].columns)
    assert columns["age"]["description"] == "Age at cohort entry (unit: years)"
    assert columns["region"]["sensitive"] is True and columns["age"]["sensitive"] is False
    assert columns["sex"]["values"] == [
        {"name": "F", "description": "female"},
        {"name": "M", "description": "male"},
    ]
    assert records["tre-a"]["identifier"] != records["tre-b"]["identifier"]


def test_no_record_holds_an_exact_count_or_a_data_value(net, frames, capsys):
    assert main(cli(net, "catalogue", "export", "--format", "hdruk-4.0.0")) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == len(DESCRIBED)

    assert data_values_in(records, frames) == []
    # HDR UK's "not published" marker, not a figure from the data
    assert {r["summary"]["populationSize"] for r in records} == {-1}
    assert all(r["observations"] == [] for r in records)


def data_values_in(records: list[Any], frames: dict[str, Any]) -> list[tuple[str, Any]]:
    """(key, leaf) of every leaf of records that is a value of the data or an exact count.

    The operator's codebook may name codes; nothing else of the data may appear.
    """
    declared = {code for about in CODEBOOK.values() for code in about.labels}
    values: set[Any] = set()
    for frame in frames.values():
        for column in frame.columns:
            for value in frame[column].dropna().unique():
                values.add(value.item() if hasattr(value, "item") else value)
    forbidden_text = {str(v) for v in values} - declared
    forbidden_numbers = {v for v in values if isinstance(v, int | float)}
    exact = {n for n in ROWS.values()} | {sum(ROWS.values())}

    found = []
    for record in records:
        for key, leaf in leaves(record):
            if isinstance(leaf, bool) or leaf is None:
                continue
            if isinstance(leaf, int | float):
                if leaf in forbidden_numbers or leaf in exact:
                    found.append((key, leaf))
                continue
            if leaf in forbidden_text:
                found.append((key, leaf))
            if key != "identifier" and exact & {int(d) for d in re.findall(r"\d+", leaf)}:
                found.append((key, leaf))
    return found


def public_catalogue(net, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{net.coordinator.metrics_port}/catalogue.json"
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def test_the_public_catalogue_lists_described_datasets_without_a_token(net):
    # Anyone reads it from the coordinator's ops HTTP server, with no token
    status, content_type, body = public_catalogue(net)
    assert status == 200 and content_type.startswith("application/json")
    entries = json.loads(body)["entries"]

    # one entry per described dataset per node: tre-c's operator described nothing
    assert [(e["node"], e["dataset"]) for e in entries] == [
        ("tre-a", "cohort"),
        ("tre-b", "cohort"),
    ]
    a = entries[0]
    # only what the operator declared: no node state, no grid, no version
    assert set(a) == {"node", "dataset", "description", "columns"}
    assert a["description"]["contact"] == "data@tre-a.example.org"
    assert a["description"]["keywords"] == ["primary care", "cardiovascular"]
    assert a["description"]["temporal_end"] == "2024-12-31"
    columns = {c["name"]: c for c in a["columns"]}
    assert columns["age"] == {
        "name": "age", "type": "integer", "description": "Age at cohort entry", "unit": "years",
        "labels": [], "sensitive": False,
    }  # fmt: skip
    assert columns["sex"]["labels"] == [["F", "female"], ["M", "male"]]
    assert columns["region"]["sensitive"] is True
    assert all(set(c) <= {"name", "type", "description", "unit", "labels", "sensitive"}
               for e in entries for c in e["columns"])  # fmt: skip

    # and it reads back as the same catalogue entries a signed-in researcher gets
    with net.client() as client:
        signed_in = {(e.node, e.dataset.name): e.dataset for e in client.catalogue()}
    for entry in public_entries(body.encode()):
        assert entry.online is None
        full = signed_in[(entry.node, entry.dataset.name)]
        assert entry.dataset == replace(full, grids={})


def test_no_public_catalogue_entry_holds_an_exact_count_or_a_data_value(net, frames):
    bodies = [
        public_catalogue(net)[2],
        public_catalogue(net, {"Authorization": f"Bearer {net.tokens['admin']}"})[2],
    ]
    for body in bodies:
        entries = json.loads(body)["entries"]
        assert len(entries) == len(DESCRIBED)
        assert data_values_in(entries, frames) == []
        for secret in ("online", "last_seen", "version", "grid", *net.tokens.values()):
            assert secret not in body


def test_export_with_nothing_described_is_a_clear_error(tmp_path, capsys, frames):
    with LocalNetwork({"tre-x": {"cohort": frames["tre-c"]}}) as bare:
        assert main(cli(bare, "catalogue", "export", "--format", "hdruk-4.0.0")) == 2
    assert "nothing to export" in capsys.readouterr().err
