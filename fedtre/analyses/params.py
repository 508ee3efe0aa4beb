"""Checks of analysis parameters shared by the catalogue: keys, column names, column types."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fedtre.analyses.base import DatasetSchema
from fedtre.analyses.expressions import normalise_column
from fedtre.analyses.filters import filter_problems, validate_filter
from fedtre.errors import InvalidRequest
from fedtre.suggest import columns_hint


def check_keys(
    params: Any, *, analysis: str, required: Iterable[str], optional: Iterable[str], example: str
) -> Mapping[str, Any]:
    """Return `params` as a mapping; raise InvalidRequest if it is not one or has bad keys."""
    if not isinstance(params, Mapping):
        raise InvalidRequest(f"{analysis} parameters must be an object, e.g. {example}")
    required, optional = set(required), set(optional)
    unknown = sorted(str(k) for k in set(params) - required - optional)
    if unknown:
        known = ", ".join(sorted(required | optional))
        raise InvalidRequest(
            f"unknown {analysis} parameter(s) {unknown}; {analysis} takes {known}, e.g. {example}"
        )
    missing = sorted(required - set(params))
    if missing:
        raise InvalidRequest(f"{analysis} needs the parameter(s) {missing}, e.g. {example}")
    return params


def column_param(params: Mapping[str, Any], key: str, *, analysis: str, example: str) -> str | None:
    """Return the column under `key` (None when absent or null): a declared column's name, or
    a derived variable's canonical text (fedtre.analyses.expressions); raise if it is neither."""
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(
            f"{analysis} parameter {key!r} must be a column name or a derived variable such as "
            f"log(x) (a non-empty string), e.g. {example}"
        )
    return normalise_column(value, what=f"{analysis} parameter {key!r}")


def filter_param(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the validated filter under "filter", or None when absent or null."""
    value = params.get("filter")
    return None if value is None else validate_filter(value)


def complete_cohort(filter_: dict[str, Any] | None, columns: Iterable[str]) -> dict[str, Any]:
    """Return the filter narrowed to records with a value in every one of columns: the
    cohort an analysis describes (what differencing protection compares)."""
    parts = [filter_] if filter_ is not None else []
    parts += [{"col": c, "op": "not_null"} for c in dict.fromkeys(columns)]
    return parts[0] if len(parts) == 1 else {"and": parts}


def column_problems(
    name: str | None, *, role: str, schema: DatasetSchema, allowed: frozenset[str]
) -> list[str]:
    """Return why column `name` cannot serve as `role` in `schema` (empty when it can)."""
    if name is None:
        return []
    ctype = schema.columns.get(name)
    if ctype is None:
        return [
            f"{role} column {name!r} is not declared in dataset {schema.name!r}"
            + columns_hint(name, schema.columns)
        ]
    if ctype not in allowed:
        usable = sorted(c for c, t in schema.columns.items() if t in allowed)
        return [
            f"{role} column {name!r} is {ctype}, but it must be {' or '.join(sorted(allowed))}; "
            f"suitable columns in {schema.name!r}: {', '.join(usable) or '(none)'}"
        ]
    return []


def schema_filter_problems(f: Mapping[str, Any] | None, schema: DatasetSchema) -> list[str]:
    """Return the problems of an optional filter against `schema`."""
    return [] if f is None else filter_problems(f, schema)


def raise_problems(analysis: str, problems: list[str]) -> None:
    """Raise InvalidRequest listing `problems`, if there are any.

    compute() calls this as a second line of defence: the agent checks the schema
    before it computes, but a column lookup must never depend on that having happened.
    """
    if problems:
        raise InvalidRequest(f"cannot run {analysis}: " + "; ".join(problems))
