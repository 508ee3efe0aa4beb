"""The `spark` SQLAlchemy dialect: Spark SQL text with bound `?` markers, and its DBAPI shim."""

from __future__ import annotations

import sqlalchemy as sa

from node_agent.sources.spark_dialect import SparkDialect

TABLE = sa.Table(
    "cohort",
    sa.MetaData(),
    sa.Column("age", sa.Integer),
    sa.Column("Sex", sa.String),
    sa.Column("log(bmi)", sa.Double),
)


def _sql(statement: sa.ClauseElement) -> str:
    return str(statement.compile(dialect=SparkDialect()))


def test_values_are_bound_markers_never_text() -> None:
    statement = sa.select(sa.func.count()).where(TABLE.c.Sex == "x'; DROP TABLE cohort; --")
    compiled = statement.compile(dialect=SparkDialect())

    assert "DROP" not in str(compiled) and "`Sex` = ?" in str(compiled)
    assert list(compiled.params.values()) == ["x'; DROP TABLE cohort; --"]


def test_spark_names_quoting_types_and_true_division() -> None:
    statement = sa.select(
        sa.cast(TABLE.c.age, sa.String),
        sa.cast(TABLE.c.age, sa.Double),
        sa.cast(TABLE.c.age, sa.BigInteger),
        TABLE.c.age / TABLE.c.age,
        TABLE.c["log(bmi)"],
    )
    sql = _sql(statement)

    assert "CAST(cohort.age AS STRING)" in sql
    assert "CAST(cohort.age AS DOUBLE)" in sql
    assert "CAST(cohort.age AS BIGINT)" in sql
    assert "cohort.age / cohort.age" in sql  # Spark's / divides integers exactly
    assert "cohort.`log(bmi)`" in sql


def test_each_call_gets_its_own_limit_from_a_cached_statement(spark_master: str) -> None:
    from pyspark.sql import SparkSession

    from node_agent.sources.spark_dialect import create_spark_engine

    session = SparkSession.builder.getOrCreate().newSession()
    session.range(10).createOrReplaceTempView("numbers")
    engine = create_spark_engine(session)
    numbers = sa.table("numbers", sa.column("id"))
    with engine.connect() as conn:
        got = [
            conn.execute(sa.select(numbers.c.id).order_by(numbers.c.id).limit(n).offset(1))
            .scalars()
            .all()
            for n in (2, 4)
        ]
        chosen = conn.execute(
            sa.select(sa.func.count()).select_from(numbers).where(numbers.c.id.in_([1, 2, 30]))
        ).scalar_one()
    assert got == [[1, 2], [1, 2, 3, 4]]
    assert chosen == 2
