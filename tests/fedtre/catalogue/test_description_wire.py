"""A dataset's description crosses the wire unchanged, and a malformed one is refused on arrival."""

from __future__ import annotations

import datetime as dt

import pytest

from fedtre.analyses.base import DatasetSchema
from fedtre.catalogue.description import ColumnDescription, DatasetDescription
from fedtre.errors import InvalidRequest
from fedtre.wire import schema_to_pb, schemas_from_pb

DESCRIBED = DatasetSchema(
    "cohort",
    {"age": "integer", "sex": "string", "bmi": "float"},
    grids={"age": 5.0},
    description=DatasetDescription(
        title="Primary care cohort",
        abstract="Adults registered with general practices.",
        custodian="TRE A",
        contact="data@tre-a.example.org",
        keywords=("primary care",),
        temporal_start=dt.date(2015, 1, 1),
        temporal_end=None,
        spatial_coverage="England",
        access_rights="Apply to the committee",
        custodian_id="https://ror.org/053fq8t95",
    ),
    column_descriptions={
        "age": ColumnDescription("Age at entry", unit="years"),
        "sex": ColumnDescription(
            labels={"M": "male", "F": "female", "U": "unknown"}, sensitive=True
        ),
    },
)


def test_a_described_schema_round_trips():
    [back] = schemas_from_pb([schema_to_pb(DESCRIBED)])
    assert back == DESCRIBED
    # the codebook keeps the operator's order, which may carry meaning (ordinal codes)
    assert list(back.column_descriptions["sex"].labels) == ["M", "F", "U"]


def test_an_undescribed_schema_stays_undescribed():
    plain = DatasetSchema("cohort", {"age": "integer"})
    assert schemas_from_pb([schema_to_pb(plain)]) == [plain]


def test_a_malformed_description_is_refused_on_arrival():
    spec = schema_to_pb(DESCRIBED)
    spec.description.contact = "not an address"
    with pytest.raises(InvalidRequest, match="dataset 'cohort': .* not an email address"):
        schemas_from_pb([spec])
    spec = schema_to_pb(DESCRIBED)
    spec.columns[0].unit = "u" * 101
    with pytest.raises(InvalidRequest, match="column 'age': its description is malformed"):
        schemas_from_pb([spec])
