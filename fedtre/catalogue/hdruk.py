"""HDR UK dataset metadata 4.0.0 records (the Health Data Research Gateway's format).

One record per dataset per TRE, built only from what the TRE's operator declared
(fedtre.catalogue.description) and the dataset's declared schema: never from values.
HDR UK requires a population size; fedtre publishes none (-1, "not published") and no
observations, because any figure from the data leaves a TRE only through the release
stage of an approved job (README.md, "Discover").
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from functools import cache
from importlib import resources
from typing import Any

from fedtre.analyses.base import DatasetSchema
from fedtre.errors import InvalidRequest

FORMAT = "hdruk-4.0.0"
SCHEMA_FILE = "hdruk-dataset-4.0.0.schema.json"
# HDR UK's marker for a population size the publisher does not give.
NOT_PUBLISHED = -1
# Stable record identifiers: the same node and dataset always get the same one.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/fedtre/fedtre/catalogue")
ACCESS_SERVICE = (
    "Federated analysis through fedtre: an approved project's researchers submit "
    "analyses; the TRE's agent runs them inside the TRE and releases only aggregates "
    "that pass its disclosure control. Row-level data never leaves the TRE."
)


class NotDescribed(InvalidRequest):
    """The dataset has no description from its TRE's operator, so it has no record."""


@cache
def schema() -> dict[str, Any]:
    """Return the HDR UK 4.0.0 JSON Schema shipped with fedtre (fedtre/standards)."""
    text = resources.files("fedtre.standards").joinpath(SCHEMA_FILE).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def record_id(node: str, dataset: str) -> str:
    """Return the record's identifier, a UUID fixed by the node and dataset names."""
    return str(uuid.uuid5(_NAMESPACE, f"{node}/{dataset}"))


def record(node: str, dataset: DatasetSchema, issued: dt.datetime) -> dict[str, Any]:
    """Return the HDR UK 4.0.0 record of one node's dataset.

    issued: when the record is produced (UTC). Raises NotDescribed when the operator has
    not described the dataset.
    """
    about = dataset.description
    if about is None:
        raise NotDescribed(
            f"dataset {dataset.name!r} of node {node!r} is not described; its TRE's operator "
            f"adds title, abstract, custodian, ... to [datasets.{dataset.name}] in agent.toml"
        )
    stamp = issued.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "identifier": record_id(node, dataset.name),
        "version": "1.0.0",
        "revisions": [],
        "issued": stamp,
        "modified": stamp,
        "summary": {
            "title": about.title,
            "abstract": about.abstract,
            "dataCustodian": {
                "identifier": about.custodian_id or about.custodian[:50],
                "name": about.custodian,
                "contactPoint": about.contact,
            },
            "populationSize": NOT_PUBLISHED,
            "keywords": list(about.keywords) or None,
            "contactPoint": about.contact,
        },
        "documentation": {
            "description": f"{about.abstract}\n\nServed by node {node} of a fedtre network "
            f"as dataset {dataset.name}."
        },
        "coverage": {"spatial": about.spatial_coverage},
        "provenance": {
            "temporal": {
                # Not declared by the operator: HDR UK allows null for the frequency.
                "publishingFrequency": None,
                "startDate": about.temporal_start.isoformat(),
                "endDate": about.temporal_end.isoformat() if about.temporal_end else None,
                "timeLag": "Other",
            }
        },
        "accessibility": {
            "access": {
                "accessRights": about.access_rights,
                "accessServiceCategory": "TRE/SDE",
                "accessService": ACCESS_SERVICE,
            }
        },
        "observations": [],
        "structuralMetadata": {"tables": [_table(dataset)]},
    }


def _table(dataset: DatasetSchema) -> dict[str, Any]:
    columns = []
    for name, typ in dataset.columns.items():
        about = dataset.column_descriptions.get(name)
        text = about.description if about else ""
        if about and about.unit:
            text = f"{text} (unit: {about.unit})" if text else f"unit: {about.unit}"
        values = None
        if about and about.labels:
            values = [{"name": code, "description": label} for code, label in about.labels.items()]
        columns.append(
            {
                "name": name,
                "dataType": typ,
                "description": text or None,
                "sensitive": bool(about and about.sensitive),
                "values": values,
            }
        )
    return {"name": dataset.name, "description": None, "columns": columns}


def validate(document: dict[str, Any]) -> None:
    """Raise InvalidRequest listing where document breaks the HDR UK 4.0.0 schema."""
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema())
    validator = validator_class(schema(), format_checker=validator_class.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        problems = "; ".join(
            f"{'/'.join(map(str, e.absolute_path)) or '(record)'}: {e.message}" for e in errors[:5]
        )
        raise InvalidRequest(f"the record does not follow HDR UK 4.0.0: {problems}")
