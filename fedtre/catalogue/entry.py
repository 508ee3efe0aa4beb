"""One catalogue entry: a dataset as one node advertises it, and its views for people."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fedtre.analyses.base import DatasetSchema
from fedtre.catalogue import hdruk
from fedtre.catalogue.description import ColumnDescription, DatasetDescription


@dataclass(frozen=True)
class CatalogueEntry:
    """A dataset of one node: its declared schema and its operator's description.

    online: whether the node is connected, as the coordinator told a signed-in person;
    None for an entry of the public catalogue, which does not say.
    """

    node: str
    online: bool | None
    dataset: DatasetSchema

    @property
    def described(self) -> bool:
        return self.dataset.description is not None

    @property
    def title(self) -> str:
        return self.dataset.description.title if self.dataset.description else ""

    def public_json(self) -> dict[str, Any]:
        """What the TRE's operator declared, and nothing else: node, dataset, description,
        and each column's type and description (the coordinator's public /catalogue.json).
        No state of the node, no grid, nothing derived from the data."""
        about = self.dataset.description
        return {
            "node": self.node,
            "dataset": self.dataset.name,
            "description": about.to_json() if about else None,
            "columns": [
                {
                    "name": name,
                    "type": typ,
                    **(
                        self.dataset.column_descriptions[name].to_json()
                        if name in self.dataset.column_descriptions
                        else {}
                    ),
                }
                for name, typ in self.dataset.columns.items()
            ],
        }

    def to_json(self) -> dict[str, Any]:
        """Everything the entry says, as plain JSON (for `fedtre catalogue show --json`)."""
        declared = self.public_json()
        for column in declared["columns"]:
            column["grid"] = self.dataset.grids.get(column["name"])
        return {"online": self.online, **declared}

    @classmethod
    def from_public_json(cls, raw: Mapping[str, Any]) -> CatalogueEntry:
        """The entry public_json gave (its node's state unknown: online is None)."""
        columns = raw["columns"]
        about = raw.get("description")
        return cls(
            node=str(raw["node"]),
            online=None,
            dataset=DatasetSchema(
                str(raw["dataset"]),
                {str(c["name"]): str(c["type"]) for c in columns},
                description=DatasetDescription.from_json(about) if about else None,
                column_descriptions={
                    str(c["name"]): ColumnDescription.from_json(c)
                    for c in columns
                    if "description" in c
                },
            ),
        )

    def hdruk_record(self, issued: dt.datetime) -> dict[str, Any]:
        """Return the entry's HDR UK 4.0.0 record, checked against the schema.

        Raises hdruk.NotDescribed for an undescribed dataset; InvalidRequest if the record
        does not validate.
        """
        document = hdruk.record(self.node, self.dataset, issued)
        hdruk.validate(document)
        return document


def in_order(entries: Iterable[CatalogueEntry]) -> list[CatalogueEntry]:
    """The catalogue's order: by dataset, then node."""
    return sorted(entries, key=lambda e: (e.dataset.name, e.node))


def public_catalogue(entries: Iterable[CatalogueEntry]) -> bytes:
    """The public catalogue: the described entries only (describing a dataset is its
    operator's choice to publish it), in order, as served at /catalogue.json."""
    listed = [e.public_json() for e in in_order(entries) if e.described]
    return json.dumps({"entries": listed}, indent=2).encode()


def public_entries(body: bytes) -> list[CatalogueEntry]:
    """The entries of a public catalogue as public_catalogue wrote it."""
    return [CatalogueEntry.from_public_json(raw) for raw in json.loads(body)["entries"]]
