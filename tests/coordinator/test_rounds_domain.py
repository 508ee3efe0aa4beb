"""What follows a glm round (coordinator.domain.rounds.next_step), for each mix of node outcomes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from coordinator.domain import rounds
from coordinator.domain.model import Job, JobSpec, JobState, Task, TaskState
from fedtre.analyses import DatasetSchema, DataSource, NodeOutput, Outcome, RuleResult, get_analysis
from fedtre.analyses.iterative import with_round
from fedtre.disclosure import DisclosurePolicy

T0 = datetime(2026, 12, 1, tzinfo=UTC)
SCHEMA = DatasetSchema("cohort", {"age": "integer", "died": "integer"})
PARAMS = get_analysis("glm").validate(
    {"outcome": "died", "family": "binomial", "covariates": ["age"], "max_iter": 4}
)
EXACT = DisclosurePolicy(
    threshold=0, rounding_base=1, zeros_disclosive=False, dominance_n=0, p_percent=0
)
BLOCKED = NodeOutput(Outcome.BLOCKED, {}, (RuleResult("residual_df", False, "too few"),))
REFUSED = NodeOutput(Outcome.REFUSED, {}, error="this TRE does not serve glm")
FAILED = NodeOutput(Outcome.FAILED, {}, error="the database is down")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DataSource]:
    rng = np.random.default_rng(4)
    made = {}
    for node, n in (("tre-a", 150), ("tre-b", 250), ("tre-c", 90)):
        age = rng.integers(20, 90, n)
        died = (rng.random(n) < 1 / (1 + np.exp(-(-3 + 0.04 * age)))).astype(int)
        engine = sa.create_engine(f"sqlite:///{Path(tmp_path_factory.mktemp(node)) / 'n.db'}")
        pd.DataFrame({"age": age, "died": died}).to_sql("cohort", engine, index=False)
        made[node] = DataSource(
            engine, sa.Table("cohort", sa.MetaData(), autoload_with=engine), SCHEMA
        )
    return made


def job_in_round(round_no: int, round_state: dict | None, outputs: dict[str, NodeOutput]) -> Job:
    spec = JobSpec("glm", "cohort", PARAMS, tuple(outputs), "default")
    tasks = tuple(
        Task(f"t-{node}-{round_no}", 1, node, TaskState.DONE, output, round=round_no)
        for node, output in outputs.items()
    )
    return Job(
        1,
        spec,
        JobState.RUNNING,
        "alice",
        T0,
        T0,
        tasks=tasks,
        round=round_no,
        round_state=round_state,
    )


def released(job: Job, sources: dict[str, DataSource], node: str) -> NodeOutput:
    analysis = get_analysis("glm")
    params = with_round(analysis, PARAMS, rounds.task_round_params(job) or {})
    return analysis.check(params, analysis.compute(params, sources[node]), EXACT)


def round_one(sources, outcomes: dict[str, NodeOutput | None]) -> Job:
    """A round-1 job whose nodes answered with `outcomes` (None: computed and released)."""
    blank = job_in_round(1, None, {n: BLOCKED for n in outcomes})
    outputs = {n: o if o is not None else released(blank, sources, n) for n, o in outcomes.items()}
    return job_in_round(1, None, outputs)


def test_round_one_refused_or_failed_nodes_are_left_out_and_the_fit_goes_on(sources) -> None:
    job = round_one(sources, {"tre-a": None, "tre-b": REFUSED, "tre-c": FAILED})

    step = rounds.next_step(job)

    assert isinstance(step, rounds.NextRound)
    assert step.round == 2
    assert step.nodes == ("tre-a",)
    assert step.round_state["excluded"] == {"tre-b": "refused", "tre-c": "failed"}
    assert step.round_state["progress"] == {"iteration": 1}


def test_a_node_blocking_round_one_ends_the_job_partial_with_nothing_released(sources) -> None:
    job = round_one(sources, {"tre-a": None, "tre-b": None, "tre-c": BLOCKED})

    step = rounds.next_step(job)

    assert isinstance(step, rounds.Finished)
    assert step.state is JobState.PARTIAL
    assert "coef" not in step.combined and "terms" not in step.combined
    assert "node 'tre-c' blocked its output (residual_df: too few)" in step.combined["error"]
    assert step.combined["nodes"] == {
        "included": ["tre-a", "tre-b"],
        "excluded": {"tre-c": "blocked"},
    }


@pytest.mark.parametrize(
    ("late", "state"),
    [(BLOCKED, JobState.PARTIAL), (FAILED, JobState.FAILED), (REFUSED, JobState.FAILED)],
)
def test_a_node_dropping_out_after_round_one_ends_the_job(sources, late, state) -> None:
    # Given round 1 combined over three nodes
    first = rounds.next_step(round_one(sources, {"tre-a": None, "tre-b": None, "tre-c": None}))
    assert isinstance(first, rounds.NextRound)
    second = job_in_round(2, first.round_state, {n: BLOCKED for n in first.nodes})
    outputs = {n: released(second, sources, n) for n in ("tre-a", "tre-b")}

    # When one node does not release round 2
    step = rounds.next_step(job_in_round(2, first.round_state, {**outputs, "tre-c": late}))

    # Then the job ends: a model is never fitted on fewer nodes than it started with
    assert isinstance(step, rounds.Finished)
    assert step.state is state
    assert step.combined["error"].startswith("round 2: node 'tre-c'")
    assert "coef" not in step.combined


def test_the_fit_ends_completed_within_its_rounds(sources) -> None:
    job = round_one(sources, {"tre-a": None, "tre-b": None})
    seen = []
    for _ in range(10):
        step = rounds.next_step(job)
        if isinstance(step, rounds.Finished):
            break
        seen.append(
            rounds.progress(
                dataclasses.replace(job, round=step.round, round_state=step.round_state)
            )
        )
        blank = job_in_round(step.round, step.round_state, {n: BLOCKED for n in step.nodes})
        job = job_in_round(
            step.round, step.round_state, {n: released(blank, sources, n) for n in step.nodes}
        )

    assert isinstance(step, rounds.Finished)
    assert step.state is JobState.COMPLETED
    assert step.combined["model"]["iterations"] == job.round <= 4
    assert [p.round for p in seen] == list(range(2, job.round + 1))
    assert {p.max_rounds for p in seen} == {4}
    # round 1 starts from the data, not from an estimate: deviances follow from round 2 on
    assert seen[0].figures == {"iteration": 1}
    assert all(set(p.figures) == {"iteration", "deviance"} for p in seen[1:])
