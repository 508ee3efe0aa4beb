"""A multi-round glm job survives coordinator restarts between and inside rounds.

The coordinator's service and store run for real (SQLite and PostgreSQL, see conftest.py);
the agents' part is the glm analysis computed on SQLite files, with each round's
parameters taken from the job as the agent servicer sends them. Each "restart" drops the
service and the store and opens new ones on the same database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import statsmodels.api as sm
import statsmodels.formula.api as smf

from coordinator.domain import rounds
from coordinator.domain.model import Job, JobSpec, JobState, PauseChoice, TaskState
from coordinator.service import CoordinatorService
from coordinator.store.store import Store
from fedtre.analyses import DatasetSchema, DataSource, NodeOutput, get_analysis
from fedtre.analyses.iterative import with_round
from fedtre.disclosure import DisclosurePolicy

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SCHEMA = DatasetSchema("cohort", {"age": "integer", "smoking": "string", "died": "integer"})
PARAMS = {"outcome": "died", "family": "binomial", "covariates": ["age", "smoking"]}
EXACT = DisclosurePolicy(
    threshold=0, rounding_base=1, zeros_disclosive=False, dominance_n=0, p_percent=0
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def pooled_data(n: int = 600, seed: int = 17) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 90, n)
    smoking = rng.choice(["never", "former", "current"], n, p=[0.5, 0.3, 0.2])
    eta = -4.0 + 0.05 * age + 0.7 * (smoking == "current")
    died = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"age": age, "smoking": smoking, "died": died})


@pytest.fixture
def sources(tmp_path: Path):
    pooled = pooled_data()
    # tre-a holds never-smokers only: its design lacks the other levels
    parts = {
        "tre-a": pooled[pooled.smoking == "never"].head(120),
        "tre-b": pooled.drop(pooled[pooled.smoking == "never"].head(120).index),
    }
    made = {}
    for node, part in parts.items():
        engine = sa.create_engine(f"sqlite:///{tmp_path / node}.db")
        part.to_sql("cohort", engine, index=False)
        table = sa.Table("cohort", sa.MetaData(), autoload_with=engine)
        made[node] = DataSource(engine, table, SCHEMA)
    yield pooled, made
    for source in made.values():
        source.engine.dispose()


def agent_output(job: Job, node: str, source: DataSource) -> NodeOutput:
    """What node's agent returns for its task of the job's current round."""
    analysis = get_analysis(job.spec.analysis)
    params = with_round(analysis, analysis.validate(job.spec.params), rounds.task_round_params(job))
    return analysis.check(params, analysis.compute(params, source), EXACT)


def open_service(database_url: str, clock: Clock) -> tuple[Store, CoordinatorService]:
    store = Store(database_url)
    return store, CoordinatorService(store, clock=clock)


def test_glm_job_survives_restarts_and_equals_the_pooled_fit(database_url, sources) -> None:
    pooled, nodes = sources
    clock = Clock()
    store, service = open_service(database_url, clock)
    spec = JobSpec("glm", "cohort", PARAMS, tuple(nodes), "default", 600, PauseChoice.WAIT)
    job_id = store.approve_job(store.create_job(spec, "alice", clock()).id, "bob", clock()).id
    seen: list[rounds.Progress] = []
    restarts = 0

    for _ in range(30):
        job = store.get_job(job_id)
        if job.state is not JobState.RUNNING:
            break
        progress = rounds.progress(job)
        assert progress is not None
        seen.append(progress)
        queued = [t for t in job.tasks if t.state is TaskState.QUEUED]
        assert {t.node for t in queued} == set(nodes)
        assert {t.round for t in queued} == {job.round}
        if job.round % 2 == 1:
            # Odd rounds: every result goes through the service, which advances the job;
            # then the coordinator restarts between rounds.
            for task in queued:
                service.record_result(
                    task.node, task.task_id, agent_output(job, task.node, nodes[task.node])
                )
        else:
            # Even rounds: the results are stored and the coordinator crashes before it
            # combines them; the restarted one finds the round and finishes it.
            for task in queued:
                store.record_result(
                    task.node, task.task_id, agent_output(job, task.node, nodes[task.node]), clock()
                )
        store.close()
        store, service = open_service(database_url, clock)
        restarts += 1
        service.complete_leftovers()
    job = store.get_job(job_id)
    store.close()

    # Then the job finished after several rounds and restarts, with the pooled fit
    assert job.state is JobState.COMPLETED
    result = job.combined
    assert result is not None
    iterations = result["model"]["iterations"]
    assert iterations >= 4 and restarts >= 4
    assert job.round == iterations
    model = smf.glm("died ~ age + smoking", pooled, family=sm.families.Binomial())
    fit = model.fit(tol=1e-14, maxiter=100)
    terms = result["terms"]
    assert np.allclose(result["coef"], fit.params[terms], rtol=1e-8, atol=0)
    se = np.sqrt(np.diag(np.linalg.inv(-model.hessian(fit.params.to_numpy()))))
    order = [list(fit.params.index).index(t) for t in terms]
    assert np.allclose(result["std_err"], se[order], rtol=1e-8, atol=0)
    # the researcher's progress: round k of at most 25, with the deviance from round 2 on
    assert [p.round for p in seen] == list(range(1, iterations + 1))
    assert {p.max_rounds for p in seen} == {25}
    deviances = [p.figures.get("deviance") for p in seen[2:]]
    assert all(isinstance(d, float) for d in deviances)
    assert deviances == sorted(deviances, reverse=True)


def test_round_state_and_round_tasks_are_persisted(database_url, sources) -> None:
    pooled, nodes = sources
    clock = Clock()
    store, service = open_service(database_url, clock)
    spec = JobSpec("glm", "cohort", PARAMS, tuple(nodes), "default", 600, PauseChoice.WAIT)
    job = store.approve_job(store.create_job(spec, "alice", clock()).id, "bob", clock())
    for task in job.tasks:
        service.record_result(
            task.node, task.task_id, agent_output(job, task.node, nodes[task.node])
        )
    store.close()

    store = Store(database_url)
    job = store.get_job(job.id)
    store.close()

    assert job.state is JobState.RUNNING
    assert job.round == 2
    assert {t.round for t in job.tasks} == {2}
    assert {t.state for t in job.tasks} == {TaskState.QUEUED}
    state: dict[str, Any] = job.round_state or {}
    assert state["max_rounds"] == 25
    assert state["progress"] == {"iteration": 1}
    # round 2 carries the agreed design's levels (the union) and the first estimate
    params = rounds.task_round_params(job)
    assert params is not None
    assert params["levels"] == {"smoking": ["current", "former", "never"]}
    assert len(params["beta"]) == 4
