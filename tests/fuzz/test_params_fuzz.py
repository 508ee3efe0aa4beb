"""Random parameters for every analysis of the catalogue: only InvalidRequest comes out.

Parameters of the wrong JSON type (an object where a list goes, a number where a column
goes), derived-variable expressions stitched from the language's tokens (deep nesting,
huge and non-finite numbers, unicode and control characters, backticked names), and
filters go first through each analysis's validate() and schema checks in-process, then
through a real coordinator's SubmitJob over mutual TLS, where they must be refused with
INVALID_ARGUMENT (or accepted), never INTERNAL.
"""

from __future__ import annotations

import os

import grpc
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtre.analyses import CATALOGUE
from fedtre.analyses.base import DatasetSchema
from fedtre.analyses.derived import resolve_schema
from fedtre.analyses.expression_sql import compile_expression
from fedtre.analyses.expressions import expression_type, normalise_column, parse_expression
from fedtre.credentials import person_credentials
from fedtre.errors import InvalidRequest
from fedtre.testing import LocalNetwork
from fedtre.v1 import jobs_pb2, jobs_pb2_grpc
from fedtre.wire import dict_to_struct

FUZZ = settings(
    max_examples=int(os.environ.get("FEDTRE_FUZZ_EXAMPLES", "40")),
    # the same examples every run unless asked (FEDTRE_FUZZ_RANDOM=1, e.g. with more
    # FEDTRE_FUZZ_EXAMPLES when hunting): a red CI run then names a real regression
    derandomize=not os.environ.get("FEDTRE_FUZZ_RANDOM"),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PARAM_KEYS = (
    "by column columns covariates edges event exposure family filter levels margins max_iter "
    "offset origin outcome probs rows stratified ties time tol width"
).split()
TOKENS = (
    "log( exp( sqrt( I( C( bands( recode( years_between( ( ) [ ] { } , : + - * / ** == >= < "
    "age bmi sex died dob fedtre_derived_0 true 1 0.5 -0 2 10 11 1e309 1e-320 "
    "99999999999999999999999 "
).split() + [
    "9" * 400,
    '"F"',
    '"2020-01-01"',
    "`a b`",
    "`fedtre_derived_0`",
    "`é\x00\n`",
    "é",
    "\x07",
    "'a\"b'",
    '"\u2028"',
    "'x\ty'",
]

expressions = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=60).map("".join) | st.builds(
    lambda funcs, inner: "".join(f + "(" for f in funcs) + inner + ")" * len(funcs),
    st.lists(st.sampled_from(["log", "exp", "sqrt", "I"]), max_size=40),
    st.sampled_from(["age", "bmi", "I(age ** 10)", "I(-age)", "I(age + bmi)"]),
)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["age", "bmi", "sex", "died", "dob", "gaussian", "binomial", "poisson"])
    | expressions
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["col", "op", "value", "and", "or", "not"]), inner, max_size=3
        )
        | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=20,
)
filters = st.recursive(
    st.fixed_dictionaries(
        {
            "col": expressions | st.sampled_from(["age", "sex"]),
            "op": st.sampled_from([">=", "==", "in", "is_null"]),
            "value": leaves | st.lists(leaves, max_size=3),
        }
    ),
    lambda inner: (
        st.dictionaries(st.sampled_from(["and", "or"]), st.lists(inner), max_size=1)
        | st.builds(lambda f: {"not": f}, inner)
    ),
    max_leaves=30,
)
params = st.dictionaries(
    st.sampled_from(PARAM_KEYS), json_values | expressions | filters, max_size=6
) | st.just(["not", "an", "object"])
SCHEMA = DatasetSchema(
    name="cohort",
    columns={"age": "integer", "bmi": "float", "sex": "string", "died": "boolean", "dob": "date"},
)


@FUZZ
@given(analysis=st.sampled_from(sorted(CATALOGUE)), p=params)
def test_validate_raises_only_invalid_request(analysis, p):
    impl = CATALOGUE[analysis]
    try:
        normalised = impl.validate(p)
        schema, _ = resolve_schema(normalised, SCHEMA)
        impl.schema_problems(normalised, schema)
        impl.cohort_filter(normalised)
        impl.groupings(normalised)
    except InvalidRequest:
        pass


@FUZZ
@given(text=expressions)
def test_the_canonical_text_reads_back_as_itself(text):
    """Parameters are validated again after they are normalised (agent, differencing
    memory), so the canonical text of an expression must parse to the same text."""
    try:
        once = normalise_column(text, what="column")
    except InvalidRequest:
        return
    assert normalise_column(once, what="column") == once


@pytest.fixture(scope="module")
def sqlite_table():
    engine = sa.create_engine("sqlite://")
    table = sa.Table(
        "cohort",
        sa.MetaData(),
        sa.Column("age", sa.Integer),
        sa.Column("bmi", sa.Float),
        sa.Column("sex", sa.String),
        sa.Column("died", sa.Boolean),
        sa.Column("dob", sa.Date),
    )
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"age": 50, "bmi": 2.5, "sex": "F", "died": True}])
    return engine, table


@settings(FUZZ, deadline=5000)
@given(text=expressions)
def test_an_accepted_expression_runs_on_sqlite(sqlite_table, text):
    """What the coordinator accepts, an agent's engine runs: no parser stack overflow in
    SQLite and no SQL that grows exponentially with the nesting (a hang at the agent)."""
    engine, table = sqlite_table
    try:
        parsed = parse_expression(text)
        expression_type(parsed, SCHEMA.columns, "cohort")
    except InvalidRequest:
        return
    value = compile_expression(parsed, table, SCHEMA.columns).label("v")
    with engine.connect() as conn:
        conn.execute(sa.select(value)).all()


@pytest.fixture(scope="module")
def network():
    frame = pd.DataFrame(
        {
            "age": [30, 40, 50, 60] * 10,
            "bmi": [20.5, 25.0, 30.1, 22.2] * 10,
            "sex": ["F", "M"] * 20,
            "died": [True, False, False, False] * 10,
        }
    )
    with LocalNetwork(
        {"tre-a": {"cohort": frame}},
        policy={"threshold": 0, "rounding_base": 1, "perturbation": "rounding"},
    ) as net:
        yield net


@FUZZ
@given(analysis=st.sampled_from(sorted(CATALOGUE)), p=params.filter(lambda p: isinstance(p, dict)))
def test_submit_refuses_bad_parameters_with_invalid_argument(network, analysis, p):
    jobs = jobs_pb2_grpc.JobServiceStub(
        grpc.secure_channel(
            network.address, person_credentials(network.pki.joinpath("users", "researcher"))
        )
    )
    try:
        struct = dict_to_struct(p)
    except (ValueError, TypeError, InvalidRequest):
        # not expressible in a Struct (a huge integer), or refused by the client itself (NaN,
        # an infinity): never reaches a server
        return
    spec = jobs_pb2.JobSpec(analysis=analysis, dataset="cohort", params=struct, project="default")
    try:
        jobs.SubmitJob(jobs_pb2.SubmitJobRequest(spec=spec, dry_run=True), timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
