"""The filter language: validation, schema problems, compilation to SQL and the text form."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from analysis_testkit import roundtrip

from fedtre.analyses import DatasetSchema
from fedtre.analyses.filters import (
    MAX_DEPTH,
    MAX_IN_ITEMS,
    MAX_NODES,
    MAX_STRING,
    compile_filter,
    filter_columns,
    filter_problems,
    parse_filter_text,
    validate_filter,
)
from fedtre.errors import InvalidRequest, NotFound

AGE40 = {"col": "age", "op": ">=", "value": 40}
SCHEMA = DatasetSchema(
    "cohort",
    {
        "rid": "integer",
        "age": "integer",
        "sex": "string",
        "bmi": "float",
        "diabetic": "boolean",
        "visit": "date",
        "visit_text": "date",
    },
)


# ----------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory):
    """A SQLite file with NULLs in every filterable column, and an undeclared column."""
    rng = np.random.default_rng(3)
    n = 300
    age = rng.integers(18, 90, n).astype(float)
    age[rng.random(n) < 0.1] = np.nan
    bmi = np.round(rng.normal(27, 5, n), 1)
    bmi[rng.random(n) < 0.1] = np.nan
    sex = pd.Series(rng.choice(["F", "M", "X", None], n), dtype=object)
    diabetic = pd.array(rng.choice([True, False, None], n), dtype="boolean")
    days = rng.integers(0, 2000, n)
    visit = [dt.date(2016, 1, 1) + dt.timedelta(days=int(d)) for d in days]
    visit[5] = None
    df = pd.DataFrame(
        {
            "rid": np.arange(n),
            "age": age,
            "sex": sex,
            "bmi": bmi,
            "diabetic": diabetic,
            "visit": visit,
            "visit_text": [None if v is None else v.isoformat() for v in visit],
            "secret": rng.integers(0, 10**6, n),
        }
    )
    engine = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('filters') / 'f.db'}")
    df.to_sql("records", engine, index=False)
    table = sa.Table(
        "records", sa.MetaData(), autoload_with=engine, include_columns=list(SCHEMA.columns)
    )
    yield df, engine, table
    engine.dispose()


def selected(db, f: Any) -> set[int]:
    _, engine, table = db
    query = sa.select(table.c.rid).where(compile_filter(f, table))
    with engine.connect() as conn:
        return set(conn.execute(query).scalars())


def expected(df: pd.DataFrame, mask: pd.Series) -> set[int]:
    return set(df.rid[mask.fillna(False).astype(bool)])


# Each case: the filter, and the rows it should select written with pandas. A comparison
# on a missing value is false, so != and not_in leave missing values out.
def _cases() -> dict[str, tuple[Any, Any]]:
    has = pd.Series.notna
    return {
        "==": ({"col": "sex", "op": "==", "value": "F"}, lambda d: d.sex == "F"),
        "!=": ({"col": "sex", "op": "!=", "value": "F"}, lambda d: has(d.sex) & (d.sex != "F")),
        "<": ({"col": "age", "op": "<", "value": 30}, lambda d: d.age < 30),
        "<=": ({"col": "age", "op": "<=", "value": 30}, lambda d: d.age <= 30),
        ">": ({"col": "bmi", "op": ">", "value": 30.5}, lambda d: d.bmi > 30.5),
        ">=": ({"col": "bmi", "op": ">=", "value": 30.5}, lambda d: d.bmi >= 30.5),
        "in": (
            {"col": "sex", "op": "in", "value": ["F", "X"]},
            lambda d: d.sex.isin(["F", "X"]),
        ),
        "not_in": (
            {"col": "sex", "op": "not_in", "value": ["F", "X"]},
            lambda d: has(d.sex) & ~d.sex.isin(["F", "X"]),
        ),
        "is_null": ({"col": "age", "op": "is_null"}, lambda d: d.age.isna()),
        "not_null": ({"col": "age", "op": "not_null"}, lambda d: d.age.notna()),
        "boolean ==": (
            {"col": "diabetic", "op": "==", "value": True},
            lambda d: d.diabetic == True,  # noqa: E712 - pandas elementwise comparison
        ),
        "boolean !=": (
            {"col": "diabetic", "op": "!=", "value": True},
            lambda d: d.diabetic == False,  # noqa: E712
        ),
        "date column >=": (
            {"col": "visit", "op": ">=", "value": "2018-06-30"},
            lambda d: d.visit.map(lambda v: v is not None and v >= dt.date(2018, 6, 30)),
        ),
        "date as text <": (
            {"col": "visit_text", "op": "<", "value": "2017-02-01"},
            lambda d: d.visit_text.map(lambda v: isinstance(v, str) and v < "2017-02-01"),
        ),
        "date in": (
            {"col": "visit", "op": "in", "value": ["2016-01-01", "2016-01-02", "2019-03-04"]},
            lambda d: d.visit.isin([dt.date(2016, 1, 1), dt.date(2016, 1, 2), dt.date(2019, 3, 4)]),
        ),
        "and": (
            {"and": [AGE40, {"col": "sex", "op": "==", "value": "F"}]},
            lambda d: (d.age >= 40) & (d.sex == "F"),
        ),
        "or": (
            {"or": [{"col": "age", "op": "<", "value": 25}, {"col": "bmi", "op": "is_null"}]},
            lambda d: (d.age < 25) | d.bmi.isna(),
        ),
        "not includes missing": (
            {"not": {"col": "age", "op": ">", "value": 40}},
            lambda d: ~(d.age > 40),
        ),
        "not over or": (
            {
                "not": {
                    "or": [
                        {"col": "age", "op": ">", "value": 40},
                        {"col": "sex", "op": "==", "value": "F"},
                    ]
                }
            },
            lambda d: ~((d.age > 40) | (d.sex == "F")),
        ),
        "double not": (
            {"not": {"not": {"col": "sex", "op": "==", "value": "M"}}},
            lambda d: d.sex == "M",
        ),
        "not not_in": (
            {"not": {"col": "sex", "op": "not_in", "value": ["M"]}},
            lambda d: ~(has(d.sex) & (d.sex != "M")),
        ),
        "nested": (
            {
                "or": [
                    {"and": [AGE40, {"not": {"col": "sex", "op": "in", "value": ["M"]}}]},
                    {
                        "and": [
                            {"col": "bmi", "op": "<", "value": 22},
                            {"col": "age", "op": "is_null"},
                        ]
                    },
                ]
            },
            lambda d: ((d.age >= 40) & ~d.sex.isin(["M"])) | ((d.bmi < 22) & d.age.isna()),
        ),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_filter_selects_what_pandas_selects(db, name: str) -> None:
    df = db[0]
    f, mask = CASES[name]
    want = expected(df, mask(df))
    assert 0 < len(want) < len(df)  # the case discriminates
    assert selected(db, f) == want


@pytest.mark.parametrize("name", list(CASES))
def test_filter_survives_struct_round_trip(db, name: str) -> None:
    f, _ = CASES[name]
    assert validate_filter(roundtrip({"f": f})["f"]) == validate_filter(f)
    assert selected(db, roundtrip({"f": f})["f"]) == selected(db, f)


def test_not_is_an_exact_complement(db) -> None:
    df = db[0]
    f = {"or": [{"col": "age", "op": ">", "value": 40}, {"col": "sex", "op": "!=", "value": "F"}]}
    assert selected(db, f) | selected(db, {"not": f}) == set(df.rid)
    assert selected(db, f) & selected(db, {"not": f}) == set()


def test_compiled_filter_uses_only_bound_parameters(db) -> None:
    _, engine, table = db
    value = "F' OR '1'='1"
    expr = compile_filter(
        {
            "and": [
                {"col": "sex", "op": "==", "value": value},
                {"col": "age", "op": ">=", "value": 40},
            ]
        },
        table,
    )
    compiled = expr.compile(engine)
    assert value not in str(compiled) and "40" not in str(compiled)
    assert set(compiled.params.values()) == {value, 40}


def test_hostile_value_is_data_not_sql(db) -> None:
    df, engine, table = db
    f = {"col": "sex", "op": "==", "value": "x'); DROP TABLE records; --"}
    assert selected(db, f) == set()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == len(df)


def test_hostile_column_name_is_rejected_and_table_survives(db) -> None:
    df, engine, table = db
    f = {"col": "age; DROP TABLE records", "op": ">=", "value": 40}

    problems = filter_problems(f, SCHEMA)
    with pytest.raises(NotFound, match="declared columns: age, bmi"):
        compile_filter(f, table)

    assert len(problems) == 1 and "is not declared in dataset 'cohort'" in problems[0]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == len(df)


def test_undeclared_column_in_the_file_is_unreachable(db) -> None:
    _, _, table = db
    with pytest.raises(NotFound, match="'secret'"):
        compile_filter({"col": "secret", "op": ">", "value": 0}, table)


# ----------------------------------------------------------------------------- validation


def test_validate_normalises_struct_numbers_and_tuples() -> None:
    f = {"and": ({"col": "age", "op": "in", "value": (40.0, 41.5)}, {"col": "x", "op": "is_null"})}
    assert validate_filter(f) == {
        "and": [{"col": "age", "op": "in", "value": [40, 41.5]}, {"col": "x", "op": "is_null"}]
    }
    assert isinstance(validate_filter(f)["and"][0]["value"][0], int)


@pytest.mark.parametrize(
    ("f", "fragment"),
    [
        ("age >= 40", "filter: expected a filter such as"),
        ([AGE40], "filter: expected a filter such as"),
        ({}, "unknown key(s)"),
        ({"where": AGE40}, "unknown key(s) 'where'"),
        ({"and": []}, "filter.and: expected a non-empty list"),
        ({"and": AGE40}, "filter.and: expected a non-empty list"),
        ({"or": [AGE40, "x"]}, "filter.or[1]: expected a filter"),
        ({"and": [AGE40], "or": [AGE40]}, "unexpected key(s) 'or'"),
        ({"not": [AGE40]}, "filter.not: expected a filter"),
        ({"not": AGE40, "col": "a"}, "unexpected key(s) 'col'"),
        ({"col": "age", "op": "=", "value": 1}, "did you mean '=='"),
        ({"col": "age", "op": "like", "value": 1}, "unknown operator 'like'; use one of =="),
        ({"col": "age", "op": "not in", "value": [1]}, "did you mean 'not_in'"),
        ({"col": "age", "value": 1}, "filter.op: expected an operator"),
        ({"op": "==", "value": 1}, "filter.col: expected a column name"),
        ({"col": "", "op": "==", "value": 1}, "filter.col: expected a column name"),
        ({"col": 3, "op": "==", "value": 1}, "filter.col: expected a column name"),
        ({"col": "age", "op": ">="}, "'>=' needs a 'value'"),
        ({"col": "age", "op": "is_null", "value": 1}, "'is_null' takes no value"),
        ({"col": "age", "op": "==", "value": 1, "extra": 2}, "unexpected key(s) 'extra'"),
        ({"col": "age", "op": "==", "value": None}, "use the operator 'is_null'"),
        ({"col": "age", "op": "==", "value": [1]}, "filter.value: '==' compares with a number"),
        ({"col": "age", "op": "==", "value": {"a": 1}}, "got an object"),
        ({"col": "age", "op": "==", "value": float("nan")}, "must be finite"),
        ({"col": "age", "op": "in", "value": []}, "non-empty list of values"),
        ({"col": "age", "op": "in", "value": 3}, "non-empty list of values"),
        ({"col": "age", "op": "in", "value": [1, "a"]}, "all be of one kind"),
        ({"col": "age", "op": "in", "value": [1, None]}, "filter.value[1]: null"),
        ({"col": "sex", "op": "==", "value": "x" * (MAX_STRING + 1)}, "at most 1000 characters"),
        ({"col": "sex", "op": "in", "value": list(range(MAX_IN_ITEMS + 1))}, "at most 1000 values"),
    ],
)
def test_invalid_filters_are_refused_with_a_pointed_message(f: Any, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        validate_filter(f)
    assert fragment in str(err.value)


def nested_nots(levels: int) -> dict[str, Any]:
    f: dict[str, Any] = dict(AGE40)
    for _ in range(levels - 1):
        f = {"not": f}
    return f


def test_depth_limit() -> None:
    assert validate_filter(nested_nots(MAX_DEPTH))
    with pytest.raises(InvalidRequest, match=f"more than {MAX_DEPTH} levels deep"):
        validate_filter(nested_nots(MAX_DEPTH + 1))


def test_very_deep_filter_is_refused_without_recursion_error() -> None:
    with pytest.raises(InvalidRequest, match="levels deep"):
        validate_filter(nested_nots(50_000))


def test_node_limit() -> None:
    assert validate_filter({"or": [AGE40] * (MAX_NODES - 1)})
    with pytest.raises(InvalidRequest, match=f"more than {MAX_NODES} parts"):
        validate_filter({"or": [AGE40] * MAX_NODES})


def test_filter_columns() -> None:
    f = {"or": [AGE40, {"not": {"and": [{"col": "sex", "op": "is_null"}, AGE40]}}]}
    assert filter_columns(f) == {"age", "sex"}


# ----------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("f", "fragment"),
    [
        (
            {"col": "height", "op": ">", "value": 1},
            "'height', which is not declared in dataset 'cohort'",
        ),
        ({"col": "age", "op": ">=", "value": "40"}, "integer column 'age' with the string '40'"),
        ({"col": "bmi", "op": "in", "value": [True]}, "float column 'bmi' with a boolean"),
        ({"col": "sex", "op": "==", "value": 1}, "string column 'sex' with a number; quote"),
        ({"col": "diabetic", "op": "<", "value": True}, "booleans take only ==, !=, in and not_in"),
        ({"col": "diabetic", "op": "==", "value": 1}, "write true or false"),
        ({"col": "visit", "op": ">=", "value": "01/02/2020"}, 'write dates as "YYYY-MM-DD"'),
        ({"col": "visit", "op": ">=", "value": "2021-02-30"}, 'write dates as "YYYY-MM-DD"'),
        ({"col": "visit", "op": "==", "value": 2020}, 'write dates as "YYYY-MM-DD"'),
    ],
)
def test_filter_problems_against_the_schema(f: Any, fragment: str) -> None:
    problems = filter_problems(f, SCHEMA)
    assert len(problems) == 1
    assert fragment in problems[0]


def test_undeclared_column_problem_lists_declared_columns() -> None:
    [problem] = filter_problems({"col": "height", "op": "is_null"}, SCHEMA)
    assert "declared columns: age, bmi, diabetic, rid, sex, visit, visit_text" in problem


def test_well_typed_filter_has_no_problems() -> None:
    f = {
        "and": [
            {"col": "age", "op": ">=", "value": 40.5},
            {"col": "sex", "op": "<", "value": "M"},
            {"col": "diabetic", "op": "in", "value": [True, False]},
            {"col": "visit", "op": "<=", "value": "2020-12-31"},
            {"col": "bmi", "op": "not_null"},
        ]
    }
    assert filter_problems(f, SCHEMA) == []


def test_each_problem_is_reported_once_and_all_are_reported() -> None:
    f = {"or": [{"col": "height", "op": "is_null"}] * 2 + [{"col": "sex", "op": "==", "value": 1}]}
    assert len(filter_problems(f, SCHEMA)) == 2


# ----------------------------------------------------------------------------- text form


def cond(col: str, op: str, value: Any = None) -> dict[str, Any]:
    return (
        {"col": col, "op": op}
        if op in ("is_null", "not_null")
        else {"col": col, "op": op, "value": value}
    )


def test_parse_the_documented_example() -> None:
    text = 'age >= 40 and sex == "F" and not (smoking in ("current", "former")) or bmi is null'
    assert parse_filter_text(text) == {
        "or": [
            {
                "and": [
                    cond("age", ">=", 40),
                    cond("sex", "==", "F"),
                    {"not": cond("smoking", "in", ["current", "former"])},
                ]
            },
            cond("bmi", "is_null"),
        ]
    }


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "a == 1 or b == 2 and c == 3",
            {"or": [cond("a", "==", 1), {"and": [cond("b", "==", 2), cond("c", "==", 3)]}]},
        ),
        (
            "(a == 1 or b == 2) and c == 3",
            {"and": [{"or": [cond("a", "==", 1), cond("b", "==", 2)]}, cond("c", "==", 3)]},
        ),
        ("not a == 1 and b == 2", {"and": [{"not": cond("a", "==", 1)}, cond("b", "==", 2)]}),
        ("not not a == 1", {"not": {"not": cond("a", "==", 1)}}),
        ("((a != 'x'))", cond("a", "!=", "x")),
        ("a < -1.5", cond("a", "<", -1.5)),
        ("a <= 2e3", cond("a", "<=", 2000)),
        ("a > .5", cond("a", ">", 0.5)),
        ("a>=0", cond("a", ">=", 0)),
        (
            "flag == true or flag == FALSE",
            {"or": [cond("flag", "==", True), cond("flag", "==", False)]},
        ),
        ("s == 'it''s'", None),  # adjacent strings are not concatenated: an error
        (r"s == 'it\'s \"q\" \\'", cond("s", "==", 'it\'s "q" \\')),
        ('s == "a and b"', cond("s", "==", "a and b")),
        ("x NOT IN (1, 2,)", cond("x", "not_in", [1, 2])),
        ("x in ('a')", cond("x", "in", ["a"])),
        ("bmi IS NOT NULL", cond("bmi", "not_null")),
        ("`date of birth` >= '1950-01-01'", cond("date of birth", ">=", "1950-01-01")),
        ("And_x == 1", cond("And_x", "==", 1)),
    ],
)
def test_parse_text(text: str, want: Any) -> None:
    if want is None:
        with pytest.raises(InvalidRequest):
            parse_filter_text(text)
    else:
        assert parse_filter_text(text) == want


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("", 1, "the filter is empty"),
        ("age >= ", 8, "expected a value after '>='"),
        ("age = 40", 5, "use '==' to test equality"),
        ("age >= 40 and", 14, "expected a condition"),
        ("(age > 1", 9, "expected ')' to close the '(' at position 1"),
        ("sex == 'F", 8, "never closed"),
        ("age > null", 7, "'is null' or 'is not null'"),
        ("smoking in 'a'", 12, "in parentheses"),
        ("age 40", 5, "expected an operator after column 'age'"),
        ("age >= 40 40", 11, "expected 'and', 'or' or the end"),
        ("sex == F", 8, "quote strings"),
        ("age > 1 && sex == 'F'", 9, "use 'and'"),
        ("x not 3", 7, "expected 'in' after 'x not'"),
        ("x is 3", 6, "expected 'null' after 'is'"),
        ("s == 'a\\q'", 8, "unknown escape"),
        ("40 <= age", 1, "expected a condition such as age >= 40"),
    ],
)
def test_parse_errors_say_where(text: str, position: int, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_filter_text(text)
    message = str(err.value)
    assert f"at position {position}:" in message
    assert fragment in message
    caret_line = message.splitlines()[-1]
    assert caret_line.index("^") - 2 == position - 1  # the caret sits under the problem


def test_parse_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        parse_filter_text("(" * 5000 + "a == 1" + ")" * 5000)
    with pytest.raises(InvalidRequest, match="levels deep"):
        parse_filter_text("not " * (MAX_DEPTH + 1) + "a == 1")


def test_parsed_text_selects_the_same_rows_as_the_dict(db) -> None:
    text = "age >= 40 and not (sex in ('M', 'X')) or bmi is null and visit >= '2018-01-01'"
    f = {
        "or": [
            {"and": [AGE40, {"not": cond("sex", "in", ["M", "X"])}]},
            {"and": [cond("bmi", "is_null"), cond("visit", ">=", "2018-01-01")]},
        ]
    }
    assert parse_filter_text(text) == f
    assert selected(db, parse_filter_text(text)) == selected(db, f)
