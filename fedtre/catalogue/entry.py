"""One catalogue entry: a dataset as one node advertises it, and its views for people."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from fedtre.analyses.base import DatasetSchema
from fedtre.catalogue import hdruk


@dataclass(frozen=True)
class CatalogueEntry:
    """A dataset of one node: its declared schema and its operator's description."""

    node: str
    online: bool
    dataset: DatasetSchema

    @property
    def described(self) -> bool:
        return self.dataset.description is not None

    @property
    def title(self) -> str:
        return self.dataset.description.title if self.dataset.description else ""

    def to_json(self) -> dict[str, Any]:
        """Everything the entry says, as plain JSON (for `fedtre catalogue show --json`)."""
        about = self.dataset.description
        return {
            "node": self.node,
            "online": self.online,
            "dataset": self.dataset.name,
            "description": about.to_json() if about else None,
            "columns": [
                {
                    "name": name,
                    "type": typ,
                    "grid": self.dataset.grids.get(name),
                    **(
                        self.dataset.column_descriptions[name].to_json()
                        if name in self.dataset.column_descriptions
                        else {}
                    ),
                }
                for name, typ in self.dataset.columns.items()
            ],
        }

    def hdruk_record(self, issued: dt.datetime) -> dict[str, Any]:
        """Return the entry's HDR UK 4.0.0 record, checked against the schema.

        Raises hdruk.NotDescribed for an undescribed dataset; InvalidRequest if the record
        does not validate.
        """
        document = hdruk.record(self.node, self.dataset, issued)
        hdruk.validate(document)
        return document
