"""Conversions between fedtre.v1 messages and the shared types, used by every side of the wire."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from fedtre.analyses.base import DatasetSchema, NodeOutput, Outcome, RuleResult
from fedtre.catalogue.description import (
    ColumnDescription,
    DatasetDescription,
    parse_column,
    parse_description,
)
from fedtre.errors import InvalidRequest
from fedtre.v1 import common_pb2

OUTCOME_TO_PB = {
    Outcome.RELEASED: common_pb2.OUTCOME_RELEASED,
    Outcome.SUPPRESSED: common_pb2.OUTCOME_SUPPRESSED,
    Outcome.BLOCKED: common_pb2.OUTCOME_BLOCKED,
    Outcome.REFUSED: common_pb2.OUTCOME_REFUSED,
    Outcome.FAILED: common_pb2.OUTCOME_FAILED,
    Outcome.HELD: common_pb2.OUTCOME_HELD,
}
OUTCOME_FROM_PB = {v: k for k, v in OUTCOME_TO_PB.items()}


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """The Struct as plain values; InvalidRequest if it holds NaN or an infinity."""
    try:
        return json_format.MessageToDict(struct)
    except ValueError as exc:
        raise InvalidRequest(
            "numbers must be finite: the message holds NaN or an infinity"
        ) from exc


def dict_to_struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    """A Struct of values; InvalidRequest for what JSON cannot hold (NaN, infinities, objects)."""
    struct = struct_pb2.Struct()
    try:
        struct.update(values)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"values must be JSON-compatible: {exc}") from exc
    struct_to_dict(struct)
    return struct


def schema_to_pb(schema: DatasetSchema) -> common_pb2.DatasetSpec:
    spec = common_pb2.DatasetSpec(name=schema.name)
    for n, t in schema.columns.items():
        about = schema.column_descriptions.get(n, ColumnDescription())
        spec.columns.append(
            common_pb2.ColumnSpec(
                name=n,
                type=t,
                grid=schema.grids.get(n, 0.0),
                description=about.description,
                unit=about.unit,
                value_labels=[
                    common_pb2.ValueLabel(code=code, label=label)
                    for code, label in about.labels.items()
                ],
                sensitive=about.sensitive,
            )
        )
    if schema.description is not None:
        spec.description.CopyFrom(description_to_pb(schema.description))
    return spec


def description_to_pb(description: DatasetDescription) -> common_pb2.DatasetDescription:
    return common_pb2.DatasetDescription(**description.to_json())


def _description_from_pb(spec: common_pb2.DatasetSpec) -> DatasetDescription | None:
    if not spec.HasField("description"):
        return None
    d = spec.description
    # Checked by the rules an operator's agent.toml meets, so every stored one exports.
    raw: dict[str, Any] = {
        "title": d.title,
        "abstract": d.abstract,
        "custodian": d.custodian,
        "contact": d.contact,
        "keywords": list(d.keywords),
        "temporal_coverage": {"start": d.temporal_start}
        | ({"end": d.temporal_end} if d.temporal_end else {}),
        "spatial_coverage": d.spatial_coverage,
        "access_rights": d.access_rights,
    } | ({"custodian_id": d.custodian_id} if d.custodian_id else {})
    try:
        return parse_description(raw)
    except InvalidRequest as exc:
        raise InvalidRequest(f"dataset {spec.name!r}: its description is malformed: {exc}") from exc


def _column_description_from_pb(dataset: str, c: common_pb2.ColumnSpec) -> ColumnDescription:
    """The column's description, checked by the rules of agent.toml (its type is not)."""
    raw: dict[str, Any] = {"type": c.type, "labels": {v.code: v.label for v in c.value_labels}}
    raw |= {"sensitive": True} if c.sensitive else {}
    raw |= {"description": c.description} if c.description else {}
    raw |= {"unit": c.unit} if c.unit else {}
    try:
        return parse_column(c.name, raw, (c.type,))[1]
    except InvalidRequest as exc:
        raise InvalidRequest(
            f"dataset {dataset!r} column {c.name!r}: its description is malformed: {exc}"
        ) from exc


def schemas_from_pb(datasets: Iterable[common_pb2.DatasetSpec]) -> list[DatasetSchema]:
    """Advertised datasets as schemas; raise InvalidRequest for empty or duplicate names."""
    schemas: dict[str, DatasetSchema] = {}
    for d in datasets:
        if not d.name or d.name in schemas:
            raise InvalidRequest(f"dataset names must be non-empty and unique (got '{d.name}')")
        described = {c.name: _column_description_from_pb(d.name, c) for c in d.columns}
        schemas[d.name] = DatasetSchema(
            d.name,
            {c.name: c.type for c in d.columns},
            grids={c.name: c.grid for c in d.columns if c.grid > 0},
            description=_description_from_pb(d),
            column_descriptions={n: c for n, c in described.items() if not c.empty},
        )
    return list(schemas.values())


def rules_to_pb(output: NodeOutput) -> list[common_pb2.RuleCheck]:
    return [
        common_pb2.RuleCheck(rule=r.rule, passed=r.passed, detail=r.detail, setting=r.setting)
        for r in output.rules
    ]


def output_from_parts(
    outcome: int, rules: Iterable[common_pb2.RuleCheck], payload: struct_pb2.Struct, error: str
) -> NodeOutput:
    """A NodeOutput from the fields of a report or a task status; InvalidRequest if no outcome."""
    value = OUTCOME_FROM_PB.get(outcome)  # type: ignore[call-overload]
    if value is None:
        raise InvalidRequest("the output has no valid outcome")
    return NodeOutput(
        outcome=value,
        payload=struct_to_dict(payload),
        rules=tuple(RuleResult(r.rule, r.passed, r.detail, r.setting) for r in rules),
        error=error,
    )


def provenance_to_pb(provenance: Any) -> common_pb2.Provenance:
    """A fedtre.identity.provenance.Provenance as its message."""
    return common_pb2.Provenance(
        agent_version=provenance.agent_version,
        dataset_version=provenance.dataset_version,
        statement=provenance.statement,
        signature=provenance.signature,
        certificate=provenance.certificate,
    )


def provenance_from_pb(message: common_pb2.Provenance) -> Any:
    """The Provenance of a message, or None when it carries none."""
    from fedtre.identity.provenance import Provenance

    if not message.statement:
        return None
    return Provenance(
        agent_version=message.agent_version,
        dataset_version=message.dataset_version,
        statement=bytes(message.statement),
        signature=bytes(message.signature),
        certificate=bytes(message.certificate),
    )
