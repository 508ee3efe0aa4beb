"""A dataset's description as its TRE's operator writes it in agent.toml: the catalogue's source.

Everything here is declared by a person, never read from the data: title, abstract,
custodian, coverage, access rights, and per column a description, unit, value labels (a
codebook) and whether the column is sensitive. The agent advertises it with the schema;
the coordinator stores it; `fedtre catalogue` shows and exports it (fedtre.catalogue.hdruk).

No figure derived from the data (population size, frequencies, ranges) belongs here: it
would leave the TRE without the release stage. README.md "Discover" says why the
catalogue publishes no population size.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedtre.errors import InvalidRequest

# The dataset-level keys of [datasets.<name>] that describe it (the rest say where it is).
DESCRIPTION_KEYS = (
    "title", "abstract", "custodian", "custodian_id", "contact", "keywords", "temporal_coverage",
    "spatial_coverage", "access_rights",
)  # fmt: skip
REQUIRED_KEYS = (
    "title", "abstract", "custodian", "contact", "temporal_coverage", "spatial_coverage",
    "access_rights",
)  # fmt: skip
COLUMN_KEYS = ("type", "description", "unit", "labels", "sensitive")

# Lengths as the HDR UK 4.0.0 model bounds them, so every described dataset exports.
_LIMITS = {
    "title": (2, 150),
    "abstract": (5, 500),
    "custodian": (2, 150),
    "custodian_id": (2, 50),
    "spatial_coverage": (2, 1000),
    "access_rights": (2, 50000),
    "keyword": (2, 150),
    "description": (1, 20000),
    "unit": (1, 100),
    "label": (1, 20000),
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class ColumnDescription:
    """What the operator says about one declared column; labels: code -> meaning."""

    description: str = ""
    unit: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    sensitive: bool = False

    @property
    def empty(self) -> bool:
        return not (self.description or self.unit or self.labels or self.sensitive)

    def to_json(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "unit": self.unit,
            # pairs, so the operator's order survives any JSON store
            "labels": [[code, label] for code, label in self.labels.items()],
            "sensitive": self.sensitive,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ColumnDescription:
        return cls(
            description=str(raw.get("description", "")),
            unit=str(raw.get("unit", "")),
            labels={str(k): str(v) for k, v in raw.get("labels") or []},
            sensitive=bool(raw.get("sensitive", False)),
        )


@dataclass(frozen=True)
class DatasetDescription:
    """The dataset as its operator describes it; temporal_end None means ongoing."""

    title: str
    abstract: str
    custodian: str
    contact: str
    temporal_start: dt.date
    spatial_coverage: str
    access_rights: str
    keywords: tuple[str, ...] = ()
    temporal_end: dt.date | None = None
    # The custodian's identifier, e.g. its ROR id (https://ror.org/...); "" if not given.
    custodian_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "abstract": self.abstract,
            "custodian": self.custodian,
            "custodian_id": self.custodian_id,
            "contact": self.contact,
            "keywords": list(self.keywords),
            "temporal_start": self.temporal_start.isoformat(),
            "temporal_end": self.temporal_end.isoformat() if self.temporal_end else "",
            "spatial_coverage": self.spatial_coverage,
            "access_rights": self.access_rights,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DatasetDescription:
        end = raw.get("temporal_end") or ""
        return cls(
            title=str(raw["title"]),
            abstract=str(raw["abstract"]),
            custodian=str(raw["custodian"]),
            custodian_id=str(raw.get("custodian_id", "")),
            contact=str(raw["contact"]),
            keywords=tuple(str(k) for k in raw.get("keywords") or ()),
            temporal_start=dt.date.fromisoformat(str(raw["temporal_start"])),
            temporal_end=dt.date.fromisoformat(str(end)) if end else None,
            spatial_coverage=str(raw["spatial_coverage"]),
            access_rights=str(raw["access_rights"]),
        )

    def to_toml_lines(self) -> list[str]:
        """The keys of [datasets.<name>] that load back to this description."""
        lines = [
            f"{key} = {_toml(getattr(self, key))}"
            for key in ("title", "abstract", "custodian", "contact")
        ]
        if self.custodian_id:
            lines.append(f"custodian_id = {_toml(self.custodian_id)}")
        if self.keywords:
            lines.append(f"keywords = [{', '.join(_toml(k) for k in self.keywords)}]")
        end = f", end = {self.temporal_end.isoformat()}" if self.temporal_end else ""
        lines.append(f"temporal_coverage = {{ start = {self.temporal_start.isoformat()}{end} }}")
        lines.append(f"spatial_coverage = {_toml(self.spatial_coverage)}")
        lines.append(f"access_rights = {_toml(self.access_rights)}")
        return lines


def parse_description(raw: Mapping[str, Any]) -> DatasetDescription | None:
    """Return the description in a [datasets.<name>] table, or None when it has none.

    Raises InvalidRequest naming the key and how to fix it (the caller adds the file and
    table). A dataset is described wholly or not at all, so every description exports.
    """
    given = [k for k in DESCRIPTION_KEYS if k in raw]
    if not given:
        return None
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise InvalidRequest(
            f"a described dataset needs {', '.join(missing)} as well (it has {', '.join(given)}); "
            "add them, or remove the description keys"
        )
    contact = _text(raw, "contact", (3, 254))
    if not _EMAIL.match(contact):
        raise InvalidRequest(
            f'contact {contact!r} is not an email address; e.g. contact = "data@tre.example.org"'
        )
    start, end = _coverage(raw["temporal_coverage"])
    return DatasetDescription(
        title=_text(raw, "title"),
        abstract=_text(raw, "abstract"),
        custodian=_text(raw, "custodian"),
        custodian_id=_text(raw, "custodian_id") if "custodian_id" in raw else "",
        contact=contact,
        keywords=_keywords(raw.get("keywords", [])),
        temporal_start=start,
        temporal_end=end,
        spatial_coverage=_text(raw, "spatial_coverage"),
        access_rights=_text(raw, "access_rights"),
    )


def parse_column(name: str, raw: Any, types: tuple[str, ...]) -> tuple[str, ColumnDescription]:
    """Return a column's declared type and description from `col = "type"` or an inline table.

    Raises InvalidRequest naming the problem (the caller adds the file and table).
    """
    if isinstance(raw, str):
        typ, table = raw, {}
    elif isinstance(raw, dict):
        unknown = sorted(set(raw) - set(COLUMN_KEYS))
        if unknown:
            raise InvalidRequest(f"unknown key(s) {unknown}; known keys: {', '.join(COLUMN_KEYS)}")
        if "type" not in raw:
            raise InvalidRequest(
                f'give its type, e.g. {name} = {{ type = "integer", unit = "years" }}'
            )
        typ, table = raw["type"], raw
    else:
        raise InvalidRequest(f'must be a type name or a table, e.g. {name} = "integer"')
    if typ not in types:
        raise InvalidRequest(f"type {typ!r} is not one of {list(types)}")
    sensitive = table.get("sensitive", False)
    if not isinstance(sensitive, bool):
        raise InvalidRequest("sensitive must be true or false")
    labels = table.get("labels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(v, str) and _fits(v, "label") for v in labels.values()
    ):
        raise InvalidRequest(
            'labels must be a table of code = "meaning", e.g. labels = { F = "female", M = "male" }'
        )
    description = ColumnDescription(
        description=_text(table, "description", _LIMITS["description"])
        if "description" in table
        else "",
        unit=_text(table, "unit", _LIMITS["unit"]) if "unit" in table else "",
        labels={str(k): v for k, v in labels.items()},
        sensitive=sensitive,
    )
    return typ, description


def column_toml(typ: str, description: ColumnDescription | None) -> str:
    """The value of `col = ...` in [datasets.<name>.columns] that parse_column reads back."""
    if description is None or description.empty:
        return _toml(typ)
    parts = [f"type = {_toml(typ)}"]
    if description.description:
        parts.append(f"description = {_toml(description.description)}")
    if description.unit:
        parts.append(f"unit = {_toml(description.unit)}")
    if description.labels:
        labels = ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in description.labels.items())
        parts.append(f"labels = {{ {labels} }}")
    if description.sensitive:
        parts.append("sensitive = true")
    return "{ " + ", ".join(parts) + " }"


def _fits(value: str, limit: str) -> bool:
    low, high = _LIMITS[limit]
    return low <= len(value.strip()) and len(value) <= high


def _text(raw: Mapping[str, Any], key: str, limits: tuple[int, int] | None = None) -> str:
    low, high = limits or _LIMITS[key]
    value = raw[key]
    if not isinstance(value, str) or len(value.strip()) < low or len(value) > high:
        raise InvalidRequest(f"{key} must be a string of {low} to {high} characters")
    return value


def _keywords(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(k, str) and _fits(k, "keyword") for k in raw
    ):
        raise InvalidRequest(
            "keywords must be a list of words or phrases (2 to 150 characters each), "
            'e.g. keywords = ["primary care", "cardiovascular"]'
        )
    return tuple(raw)


def _date(value: Any, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidRequest(
        f"temporal_coverage {where} {value!r} is not a date; write e.g. 2015-01-01"
    )


def _coverage(raw: Any) -> tuple[dt.date, dt.date | None]:
    if not isinstance(raw, dict) or "start" not in raw or set(raw) - {"start", "end"}:
        raise InvalidRequest(
            "temporal_coverage must be a table with start and, unless ongoing, end; "
            "e.g. temporal_coverage = { start = 2015-01-01, end = 2024-12-31 }"
        )
    start = _date(raw["start"], "start")
    end = _date(raw["end"], "end") if "end" in raw else None
    if end is not None and end < start:
        raise InvalidRequest(f"temporal_coverage ends ({end}) before it starts ({start})")
    return start, end


def _toml(value: str) -> str:
    import json

    # JSON string escapes are valid TOML basic-string escapes, except a raw DEL.
    return json.dumps(value).replace("\x7f", "\\u007f")
