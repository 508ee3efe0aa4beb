"""The derived-variable language: what it reads, its one canonical text, and errors at the token."""

from __future__ import annotations

import pytest

from fedtre.analyses import CATALOGUE
from fedtre.analyses.base import DatasetSchema
from fedtre.analyses.derived import column_references, resolve_schema
from fedtre.analyses.expressions import (
    canonical,
    expression_type,
    features_of,
    normalise_column,
    parse_expression,
)
from fedtre.analyses.filters import parse_filter_text
from fedtre.errors import InvalidRequest

COLUMNS = {
    "age": "integer",
    "bmi": "float",
    "smoking": "string",
    "sex": "string",
    "smoker": "boolean",
    "born": "date",
}
SCHEMA = DatasetSchema("cohort", COLUMNS, {"bmi": 0.5})


@pytest.mark.parametrize(
    ("written", "canonical_text", "kind"),
    [
        ("log(bmi)", "log(bmi)", "float"),
        ("I(age**2)", "I(age ** 2)", "float"),
        ("I((age+1)*2)", "I((age + 1) * 2)", "float"),
        ("I(age - (1 - bmi))", "I(age - (1 - bmi))", "float"),
        ("I(3 * age ** 2)", "I(3 * age ** 2)", "float"),
        ("I((3 * age) ** 2)", "I((3 * age) ** 2)", "float"),
        ("age:bmi", "age:bmi", "float"),
        ("smoker:age", "smoker:age", "float"),
        ("sex:smoking", "sex:smoking", "string"),
        ("bands( age , [40, 60.0, 70.5] )", "bands(age, [40, 60, 70.5])", "string"),
        (
            "recode(smoking, {'former': 'ever', \"current\": 'ever'})",
            'recode(smoking, {"current": "ever", "former": "ever"})',
            "string",
        ),
        ("I(age >= 65)", "I(age >= 65)", "boolean"),
        ('I(born < "2000-01-01")', 'I(born < "2000-01-01")', "boolean"),
        ("years_between(born, '2020-01-01')", 'years_between(born, "2020-01-01")', "float"),
        ("exp(I(-bmi / 10))", "exp(I(-bmi / 10))", "float"),
        ("sqrt(I(bmi + -1))", "sqrt(I(bmi + -1))", "float"),
    ],
)
def test_an_expression_has_one_canonical_text_and_a_type(
    written: str, canonical_text: str, kind: str
) -> None:
    parsed = parse_expression(written)

    assert canonical(parsed.tree) == canonical_text
    assert canonical(parse_expression(canonical_text).tree) == canonical_text
    assert expression_type(parsed, COLUMNS, "cohort") == kind


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("age*2", 4, "write it inside I(), e.g. I(x * 2)"),
        ("I(age == 1) == 2", 13, "write it inside I()"),
        ("log(smoking)", 5, "log() takes a number; column 'smoking' is string"),
        ("log(weight)", 5, "column 'weight' is not declared in dataset 'cohort'"),
        ("np.log(bmi)", 3, "functions are called by their bare name"),
        ("logg(bmi)", 1, "unknown function 'logg'"),
        ("log(bmi", 8, "expected ')' to close the call of log()"),
        ("bands(age, [60, 40])", 17, "the edges of bands() must increase"),
        ("bands(age, 40)", 12, "bands() takes a list of 1 to 50 numbers"),
        ('recode(age, {1: "one"})', 17, "the values of this recode are integers"),
        ("I(bmi ** 2 ** 2)", 12, "the power after '**' is a whole number"),
        ('recode(smoking, {"a": "b", "a": "c"})', 28, "this value is recoded twice"),
        ("I(bmi ** 0.5)", 10, "the power after '**' is a whole number from 1 to 10"),
        ("years_between(age, born)", 15, "years_between() takes two dates"),
        ("I(born > 2000)", 8, "'>' cannot compare date with number"),
        ("smoking:bmi", 8, "':' multiplies two numeric (or boolean) variables"),
        ("I(3)", 1, "the expression uses no column"),
        ("log(bmi) ; drop", 10, "unexpected character ';'"),
    ],
)
def test_errors_point_at_the_offending_token(text: str, position: int, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        expression_type(parse_expression(text), COLUMNS, "cohort")

    error = str(caught.value)
    assert f"at position {position} of the expression: " in error
    assert message in error
    # the caret under the text marks the same place
    shown, caret = error.splitlines()[-2:]
    assert caret.index("^") - 2 == position - 1 and shown.strip() == text


def test_features_name_the_functions_and_operators_for_the_policy() -> None:
    tree = parse_expression("log(I(bmi * 2)):bands(age, [40])").tree
    assert features_of(tree) == {"log", "arithmetic", "interaction", "bands"}


def test_a_name_stays_a_name_and_c_is_for_covariates_only() -> None:
    assert normalise_column(" age", what="x") == " age"  # names are checked as before
    with pytest.raises(InvalidRequest, match="C\\(\\) marks a covariate"):
        normalise_column("C(age)", what="summary parameter 'by'")


def test_every_column_position_of_every_analysis_accepts_a_derived_variable() -> None:
    cases = {
        "count": {"filter": {"col": "bands(age,[40])", "op": "==", "value": "[40, inf)"}},
        "crosstab": {"rows": "bands(age,[40])", "columns": "sex:smoking"},
        "summary": {"column": "log(bmi)", "by": "I(age>=65)"},
        "correlation": {"columns": ["log(bmi)", "I(age**2)"]},
        "linear_regression": {"outcome": "log(bmi)", "covariates": ["C(bands(age,[40]))"]},
        "glm": {"outcome": "smoker", "covariates": ["age:bmi"], "family": "binomial"},
        "kaplan_meier": {"time": "bmi", "event": "smoker", "by": "bands(age,[40])"},
    }
    for name, params in cases.items():
        analysis = CATALOGUE[name]
        validated = analysis.validate(params)
        schema, problems = resolve_schema(validated, SCHEMA)
        assert problems == [], name
        derived = [c for c in column_references(validated) if c not in COLUMNS]
        assert derived, name
        assert analysis.schema_problems(validated, schema) == [], name


def test_the_filter_text_takes_a_derived_variable_in_backticks() -> None:
    f = parse_filter_text('`bands(age, [40,60])` == "[40, 60)" and `I(bmi/2)` > 12')
    assert f == {
        "and": [
            {"col": "bands(age, [40, 60])", "op": "==", "value": "[40, 60)"},
            {"col": "I(bmi / 2)", "op": ">", "value": 12},
        ]
    }


def test_a_covariate_keeps_statsmodels_names() -> None:
    params = CATALOGUE["linear_regression"].validate(
        {"outcome": "bmi", "covariates": ["C(age)", "I(age >= 65)", "log(bmi + 0)"]}
    )
    assert params["covariates"] == ["C(age)", "I(age >= 65)", "log(bmi + 0)"]


def test_sqlite_without_math_functions_gets_them_from_python(tmp_path) -> None:
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa

    from fedtre.analyses.base import DataSource
    from fedtre.analyses.derived import with_derived
    from fedtre.analyses.expression_sql import register_sqlite_math

    # Given a SQLite engine whose ln, exp and sqrt are Python's (as registered when the
    # SQLite build lacks its math functions; registering overrides the built-ins)
    frame = pd.DataFrame({"bmi": [20.0, 25.5, None, 31.0], "age": [30, 40, 50, 60]})
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'd.sqlite'}")
    frame.to_sql("cohort", engine, index=False)
    register_sqlite_math(engine)
    table = sa.Table("cohort", sa.MetaData(), autoload_with=engine)
    source = DataSource(engine, table, DatasetSchema("cohort", {"bmi": "float", "age": "integer"}))

    # When log, exp and sqrt are computed
    names = ["log(bmi)", "exp(I(age / 100))", "sqrt(I(bmi - 22))"]
    derived = with_derived(source, {"columns": names})
    with engine.connect() as conn:
        got = conn.execute(sa.select(*(derived.table.c[n] for n in names))).all()

    # Then they are numpy's, missing where undefined or missing
    expected = zip(
        np.log(frame.bmi),
        np.exp(frame.age / 100),
        np.sqrt((frame.bmi - 22).where(frame.bmi >= 22)),
        strict=True,
    )
    for row, want in zip(got, expected, strict=True):
        for value, reference in zip(row, want, strict=True):
            assert (value is None and np.isnan(reference)) or value == pytest.approx(reference)


def test_levels_name_a_derived_covariate_however_it_is_written() -> None:
    params = CATALOGUE["linear_regression"].validate(
        {
            "outcome": "bmi",
            "covariates": ["age", "bands(age, [40, 60])"],
            "levels": {"bands( age,[40,60.0])": ["[40, 60)", "(-inf, 40)", "[60, inf)"]},
        }
    )
    assert params["levels"] == {"bands(age, [40, 60])": ["[40, 60)", "(-inf, 40)", "[60, inf)"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Each log() names its argument twice in SQL: 30 of them would be 2**30 terms.
        ("log(" * 30 + "bmi" + ")" * 30, "nests functions and operators 90 deep"),
        ("I(" + "-" * 30 + "bmi)", "nests functions and operators 31 deep"),
        ("I((((bmi ** 10) ** 10) ** 10) ** 10)", "too large once written in SQL"),
        ("I(bmi * 1e309)", "beyond the range of a double"),
        ("bands(bmi, [" + "9" * 400 + "])", "whole numbers are at most 9007199254740992"),
        ("I(bmi > 99999999999999999999)", "whole numbers are at most"),
    ],
)
def test_expressions_beyond_what_an_engine_takes_are_refused_at_submit(
    text: str, message: str
) -> None:
    params = CATALOGUE["summary"].validate({"column": "age", "filter": None}) | {"by": text}
    with pytest.raises(InvalidRequest, match=message):
        CATALOGUE["summary"].validate(params)
    # The coordinator's schema check (resolve_schema) sees only the refused text, and
    # refuses it as a problem rather than failing.
    _, problems = resolve_schema({"column": text}, SCHEMA)
    assert problems and message.split()[0] in problems[0]


def test_a_declared_column_named_like_a_derived_label_keeps_its_values(tmp_path) -> None:
    import pandas as pd
    import sqlalchemy as sa

    from fedtre.analyses.base import DataSource
    from fedtre.analyses.derived import with_derived

    # Given a TRE whose table declares a column named as with_derived labels its columns
    frame = pd.DataFrame({"fedtre_derived_0": [1.0, 2.0], "bmi": [20.0, 30.0]})
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'd.sqlite'}")
    frame.to_sql("cohort", engine, index=False)
    table = sa.Table("cohort", sa.MetaData(), autoload_with=engine)
    columns = {"fedtre_derived_0": "float", "bmi": "float"}
    source = DataSource(engine, table, DatasetSchema("cohort", columns))

    # When a derived variable is added next to it
    derived = with_derived(source, {"columns": ["fedtre_derived_0", "I(bmi * 2)"]})
    with engine.connect() as conn:
        got = conn.execute(
            sa.select(derived.table.c["fedtre_derived_0"], derived.table.c["I(bmi * 2)"])
        ).all()

    # Then both keep their own values
    assert [tuple(r) for r in got] == [(1.0, 40.0), (2.0, 60.0)]


@pytest.mark.parametrize(
    "text", ["I(sex == 'a\"b')", 'recode(sex, {\'x"\': "y"})', 'I(sex == "it\'s")']
)
def test_the_canonical_text_of_a_quoted_string_reads_back_as_itself(text: str) -> None:
    # Normalised parameters are validated again (agent, differencing memory).
    once = normalise_column(text, what="by")
    assert normalise_column(once, what="by") == once


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('I(sex == "a\nb")', "strings in expressions take no control characters"),
        ("I(sex == 'a\u202eb')", "strings in expressions take no control characters"),
        ("I(`bmi\r` > 1)", "column names in expressions take no control characters"),
    ],
)
def test_control_characters_never_reach_a_canonical_text(text: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        normalise_column(text, what="by")


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
def test_an_integer_compared_with_a_decimal_is_not_rounded(engine_name, tmp_path, request) -> None:
    import sqlalchemy as sa

    from fedtre.analyses.expression_sql import compile_expression

    # Given ages 40 and 41 in SQLite and in PostgreSQL (which casts a bound value to the
    # type it is bound with)
    url = (
        f"sqlite:///{tmp_path / 'd.sqlite'}"
        if engine_name == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = sa.create_engine(url)
    table = sa.Table("ages", sa.MetaData(), sa.Column("age", sa.Integer))
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"age": 40}, {"age": 41}])

    # When integer ages are compared with decimals
    got = {}
    for text in ("I(age == 40.4)", "I(age <= 40.6)", "I(age > 40.5)"):
        value = compile_expression(parse_expression(text), table, {"age": "integer"})
        with engine.connect() as conn:
            got[text] = [r[0] for r in conn.execute(sa.select(value).order_by(table.c.age))]
    engine.dispose()

    # Then the decimals are compared as they are, on every engine
    assert got == {
        "I(age == 40.4)": [False, False],
        "I(age <= 40.6)": [True, False],
        "I(age > 40.5)": [False, True],
    }
