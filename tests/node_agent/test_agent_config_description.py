"""The operator's dataset description in agent.toml: a good one loads; each mistake names its fix."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from fedtre.catalogue.description import ColumnDescription
from fedtre.errors import InvalidRequest
from node_agent.config import load_config, write_config

DESCRIBED = """
node_id = "tre-a"
coordinator = "localhost:50051"
[tls]
dir = "bundle"
[datasets.cohort]
url = "sqlite:////abs/cohort.sqlite"
table = "cohort"
title = "Primary care cohort"
abstract = "Adults registered with general practices in the region."
custodian = "TRE A"
custodian_id = "https://ror.org/053fq8t95"
contact = "data@tre-a.example.org"
keywords = ["primary care", "cardiovascular"]
temporal_coverage = { start = 2015-01-01, end = "2024-12-31" }
spatial_coverage = "England"
access_rights = "Apply to the TRE A data access committee"
[datasets.cohort.columns]
age = { type = "integer", description = "Age at entry", unit = "years" }
sex = { type = "string", labels = { F = "female", M = "male" } }
nhs_region = { type = "string", sensitive = true }
bmi = "float"
"""


def test_a_described_dataset_loads_and_round_trips(
    tmp_path: Path, write_toml: Callable[[str], Path]
) -> None:
    config = load_config(write_toml(DESCRIBED))

    cohort = config.datasets["cohort"]
    about = cohort.description
    assert about is not None
    assert (about.title, about.custodian_id) == ("Primary care cohort", "https://ror.org/053fq8t95")
    assert (about.temporal_start, about.temporal_end) == (
        dt.date(2015, 1, 1),
        dt.date(2024, 12, 31),
    )
    assert about.keywords == ("primary care", "cardiovascular")
    assert dict(cohort.columns) == {
        "age": "integer", "sex": "string", "nhs_region": "string", "bmi": "float"
    }  # fmt: skip
    assert cohort.column_descriptions == {
        "age": ColumnDescription("Age at entry", unit="years"),
        "sex": ColumnDescription(labels={"F": "female", "M": "male"}),
        "nhs_region": ColumnDescription(sensitive=True),
    }
    assert cohort.schema.description == about
    assert write_config(tmp_path / "again.toml", config).datasets == config.datasets


def test_an_undescribed_dataset_has_no_description(write_toml: Callable[[str], Path]) -> None:
    text = "\n".join(
        line
        for line in DESCRIBED.splitlines()
        if line.split(" ")[0]
        not in ("title", "abstract", "custodian", "custodian_id", "contact", "keywords",
                "temporal_coverage", "spatial_coverage", "access_rights")
    )  # fmt: skip
    assert load_config(write_toml(text)).datasets["cohort"].description is None


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('title = "Primary care cohort"\n', "", "needs title as well"),
        ('"data@tre-a.example.org"', '"TRE A desk"', "is not an email address"),
        ('"2024-12-31"', "2014-12-31", "ends (2014-12-31) before it starts"),
        ('end = "2024-12-31"', 'end = "soon"', "'soon' is not a date"),
        ("{ start = 2015-01-01, ", "{ ", "must be a table with start"),
        ('title = "Primary care cohort"', 'title = "P"', "title must be a string of 2 to 150"),
        ('keywords = ["primary care", "cardiovascular"]', "keywords = [3]", "keywords must be"),
        ('unit = "years"', 'units = "years"', "unknown key(s) ['units']"),
        ('labels = { F = "female", M = "male" }', 'labels = ["F", "M"]', "labels must be a table"),
        ("sensitive = true", 'sensitive = "yes"', "sensitive must be true or false"),
        ('{ type = "integer", ', "{ ", "give its type"),
        ('bmi = "float"', 'bmi = "real"', "type 'real' is not one of"),
    ],
)
def test_each_mistake_names_the_key_and_the_fix(
    write_toml: Callable[[str], Path], old: str, new: str, message: str
) -> None:
    assert old in DESCRIBED
    with pytest.raises(InvalidRequest) as caught:
        load_config(write_toml(DESCRIBED.replace(old, new)))
    assert message in str(caught.value)
    assert "[datasets.cohort" in str(caught.value)
