"""The catalogue, each analysis's parameter and schema checks, and to_frame shapes."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from analysis_testkit import SCHEMA, cohort, make_source

import fedtre.analyses as catalogue
from fedtre.analyses import CATALOGUE, Analysis, get_analysis
from fedtre.errors import InvalidRequest, NotFound

ANALYSES = [
    "count",
    "crosstab",
    "summary",
    "histogram",
    "quantiles",
    "correlation",
    "linear_regression",
    "glm",
    "kaplan_meier",
    "cox",
]


def test_catalogue_lists_every_analysis() -> None:
    assert list(CATALOGUE) == ANALYSES
    for name, analysis in CATALOGUE.items():
        assert isinstance(analysis, Analysis)
        assert analysis.name == name and analysis.description


def test_unknown_analysis_names_the_catalogue() -> None:
    with pytest.raises(NotFound) as err:
        get_analysis("regression")
    assert str(err.value) == (
        f"unknown analysis 'regression'; the catalogue has: {', '.join(ANALYSES)}"
    )


def test_base_types_are_re_exported() -> None:
    for name in ("Analysis", "DataSource", "DatasetSchema", "NodeOutput", "Outcome", "RuleResult"):
        assert hasattr(catalogue, name)


@pytest.mark.parametrize(
    ("name", "params", "fragment"),
    [
        ("count", {"filters": {}}, "unknown count parameter(s) ['filters']; count takes filter"),
        ("count", ["filter"], "count parameters must be an object"),
        ("count", {"filter": {"col": "a", "op": "~"}}, "filter.op: unknown operator"),
        ("crosstab", {}, "crosstab needs the parameter(s) ['rows']"),
        ("crosstab", {"rows": None}, "crosstab needs a 'rows' column"),
        ("crosstab", {"rows": 3}, "'rows' must be a column name"),
        ("crosstab", {"rows": "sex", "columns": "sex"}, "both 'sex'"),
        ("crosstab", {"rows": "sex", "cols": "smoking"}, "unknown crosstab parameter(s) ['cols']"),
        ("summary", {"by": "sex"}, "summary needs the parameter(s) ['column']"),
        ("summary", {"column": ""}, "'column' must be a column name"),
        ("summary", {"column": "bmi", "by": "bmi"}, "both 'bmi'"),
        ("summary", {"column": "bmi", "dataset": "x"}, "unknown summary parameter(s) ['dataset']"),
    ],
)
def test_invalid_params_are_refused(name: str, params: Any, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        get_analysis(name).validate(params)
    assert fragment in str(err.value)


def test_validate_fills_optional_params() -> None:
    assert get_analysis("count").validate({}) == {"filter": None}
    assert get_analysis("crosstab").validate({"rows": "sex"}) == {
        "rows": "sex",
        "columns": None,
        "filter": None,
        "margins": False,
    }
    assert get_analysis("summary").validate({"column": "bmi", "by": None}) == {
        "column": "bmi",
        "by": None,
        "filter": None,
    }


@pytest.mark.parametrize(
    ("name", "params", "fragments"),
    [
        ("crosstab", {"rows": "bmi"}, ["rows column 'bmi' is float, but it must be boolean"]),
        (
            "crosstab",
            {"rows": "sex", "columns": "visit_date"},
            ["columns column 'visit_date' is date"],
        ),
        ("crosstab", {"rows": "postcode"}, ["rows column 'postcode' is not declared"]),
        (
            "summary",
            {"column": "sex"},
            ["summary column 'sex' is string, but it must be float or integer"],
        ),
        ("summary", {"column": "bmi", "by": "age2"}, ["by column 'age2' is not declared"]),
        (
            "summary",
            {"column": "nhs_number", "by": "bmi", "filter": {"col": "x", "op": "is_null"}},
            ["'nhs_number' is not declared", "by column 'bmi' is float", "column 'x', which"],
        ),
        ("count", {"filter": {"col": "sex", "op": ">", "value": 3}}, ["string column 'sex'"]),
    ],
)
def test_schema_problems(name: str, params: dict[str, Any], fragments: list[str]) -> None:
    problems = get_analysis(name).schema_problems(params, SCHEMA)
    assert len(problems) == len(fragments)
    for problem, fragment in zip(problems, fragments, strict=True):
        assert fragment in problem


def test_schema_problem_suggests_suitable_columns() -> None:
    [problem] = get_analysis("summary").schema_problems({"column": "sex"}, SCHEMA)
    assert problem.endswith("suitable columns in 'cohort': age, bmi, site")


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("count", {"filter": {"col": "nhs_number", "op": ">", "value": 0}}),
        ("crosstab", {"rows": "nhs_number"}),
        ("summary", {"column": "nhs_number"}),
        (
            "summary",
            {"column": "bmi", "by": "sex", "filter": {"col": "age", "op": ">", "value": "x"}},
        ),
    ],
)
def test_compute_refuses_what_the_schema_does_not_allow(tmp_path, name, params) -> None:
    # Even when the caller skipped schema_problems, an undeclared column is never read
    source = make_source(tmp_path / "n.db", cohort(50, seed=1))
    with pytest.raises(InvalidRequest, match="cannot run"):
        get_analysis(name).compute(params, source)


# ----------------------------------------------------------------------------- frames


def test_count_frame_is_its_one_n() -> None:
    frame = get_analysis("count").to_frame({}, {"n": 12})
    assert list(frame.columns) == ["n"] and list(frame.index) == ["all"]
    assert frame.loc["all", "n"] == 12
    # a withheld count is missing, not zero
    assert get_analysis("count").to_frame({}, {"n": None}).loc["all", "n"] is pd.NA


def test_one_way_crosstab_frame() -> None:
    payload = {
        "rows": "smoking",
        "columns": None,
        "cells": [["current", None, 20.0], ["never", None, None], [None, None, 15.0]],
    }
    frame = get_analysis("crosstab").to_frame({"rows": "smoking"}, payload)
    assert list(frame.columns) == ["n"]
    assert frame.index.name == "smoking"
    assert list(frame.index) == ["current", "never", None]
    assert frame.loc["current", "n"] == 20
    assert pd.isna(frame.loc["never", "n"])
    assert frame["n"].iloc[2] == 15


def test_two_way_crosstab_frame_has_zero_for_absent_and_nan_for_withheld() -> None:
    payload = {
        "rows": "sex",
        "columns": "site",
        "cells": [["F", "1", 30], ["F", "10", None], ["M", "2", 25], [None, "1", 12]],
    }
    frame = get_analysis("crosstab").to_frame({"rows": "sex", "columns": "site"}, payload)
    assert frame.shape == (3, 3)
    assert (frame.index.name, frame.columns.name) == ("sex", "site")
    assert list(frame.index) == ["F", "M", None]
    assert list(frame.columns) == ["1", "2", "10"]  # numeric labels in numeric order
    assert frame.loc["F", "1"] == 30
    assert pd.isna(frame.loc["F", "10"])
    assert frame.loc["F", "2"] == 0  # absent everywhere
    assert frame.loc["M", "1"] == 0 and frame.loc["M", "2"] == 25
    assert frame.iloc[2].tolist() == [12, 0, 0]


def test_grouped_summary_frame() -> None:
    payload = {
        "column": "bmi",
        "by": "sex",
        "groups": [["F", 40.0, 26.5, 4.0], ["M", None, None, None], [None, 1.0, 30.0, None]],
    }
    frame = get_analysis("summary").to_frame({"column": "bmi", "by": "sex"}, payload)
    assert list(frame.columns) == ["n", "mean", "sd"]
    assert frame.index.name == "sex"
    assert list(frame.index) == ["F", "M", None]
    assert frame.loc["F"].tolist() == [40, 26.5, 4.0]
    assert frame.loc["M"].isna().all()
    assert frame.iloc[2, 0] == 1 and pd.isna(frame.iloc[2, 2])


def test_ungrouped_summary_frame_is_one_row_labelled_all() -> None:
    payload = {"column": "bmi", "by": None, "groups": [[None, 120.0, 27.25, 5.5]]}
    frame = get_analysis("summary").to_frame({"column": "bmi"}, payload)
    expected = pd.DataFrame({"n": [120], "mean": [27.25], "sd": [5.5]}, index=["all"])
    expected = expected.astype({"n": "Int64"})
    pd.testing.assert_frame_equal(frame, expected, check_index_type=False)
