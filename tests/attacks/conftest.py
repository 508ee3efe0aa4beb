"""Shared fixtures of the adversarial suite (issue 13, item 7).

Every attack runs as an authorised but malicious researcher against a real agent
executor under the DEFAULT disclosure policy (DisclosurePolicy(): threshold 10,
cell-key perturbation with D = 3, V = 2, NK 2/90, p 10%): a real AgentState SQLite
file, a real SQLite data source keyed by the TRE's secret (as node_agent.app keys it),
and tasks built as the coordinator sends them. What the attacker sees is
`release.public_output(output)` with the payload passed through
`release.researcher_view` (model statistics stay with the coordinator), and, for
models, the coordinator's combination of that node's output.

The synthetic cohort (make_frame) holds N people with quasi-identifiers (age, sex,
region) the attacker is assumed to know for a target, and attributes the attacker wants
to learn (diabetic, sbp, income, visits, time/event). A "target" is a person whose
(age, sex, region) is unique in the data, so a filter can single them out.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fedtre.analyses import CATALOGUE, NodeOutput, Outcome
from fedtre.analyses.base import DatasetSchema, DataSource
from fedtre.analyses.iterative import is_iterative
from fedtre.disclosure import DisclosurePolicy, release
from fedtre.disclosure.cellkey import keyed_source, secret_tag
from node_agent.executor import Executor, TaskSpec
from node_agent.policy import LocalPolicy
from node_agent.sources.sql import open_sql_source
from node_agent.state import AgentState

N = 600
DATASET = "cohort"
NODE = "tre-a"
COLUMNS = {
    "age": "integer",
    "sex": "string",
    "region": "string",
    "postcode": "string",
    "diabetic": "integer",
    "sbp": "float",
    "income": "float",
    "visits": "integer",
    "time": "float",
    "event": "integer",
}
# The TRE's declared grids: released bounds are multiples of these, never records' values.
GRIDS = {"age": 1.0, "sbp": 1.0, "income": 1000.0, "visits": 1.0, "time": 1.0}
REGIONS = tuple("ABCDEFGHIJ")
QI = ("age", "sex", "region")
# The default policy: every attack must fail against it.
DEFAULT = DisclosurePolicy()
_task_ids = itertools.count(1)


def make_frame(n: int = N, seed: int = 13) -> pd.DataFrame:
    """A synthetic cohort of n people; values are never on the declared grids.

    sbp lies in [100, 180) and time in (0, 20] for everyone, with fractional parts that
    are never grid points, so a released bound equal to a record's value is detectable.
    """
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "pid": [f"p{i:04d}" for i in range(n)],
            "age": rng.integers(20, 90, n),
            "sex": rng.choice(["F", "M"], n),
            "region": rng.choice(list(REGIONS), n),
            "postcode": rng.choice(["AB1", "CD2", "EF3", "GH4"], n),
            "diabetic": (rng.random(n) < 0.3).astype(int),
            "sbp": np.floor(rng.uniform(100, 179, n)) + rng.choice([0.13, 0.37, 0.61, 0.89], n),
            "income": np.floor(rng.uniform(20_000, 40_000, n)) + 0.5,
            "visits": rng.integers(0, 12, n),
            "time": np.floor(rng.uniform(0, 19, n)) + rng.choice([0.21, 0.43, 0.77], n),
            "event": (rng.random(n) < 0.4).astype(int),
        }
    )
    return frame


def unique_targets(frame: pd.DataFrame, *, sex: str | None = None) -> list[int]:
    """Row indices of people whose quasi-identifiers (age, sex, region) are unique."""
    sizes = frame.groupby(list(QI))["age"].transform("size")
    mask = sizes == 1
    if sex is not None:
        mask &= frame["sex"] == sex
    return [int(i) for i in frame.index[mask]]


def qi_filter(frame: pd.DataFrame, row: int) -> dict[str, Any]:
    """The filter selecting exactly the person at `row` by their quasi-identifiers."""
    person = frame.loc[row]
    return {
        "and": [
            {"col": "age", "op": "==", "value": int(person["age"])},
            {"col": "sex", "op": "==", "value": str(person["sex"])},
            {"col": "region", "op": "==", "value": str(person["region"])},
        ]
    }


def everyone_but(base: Mapping[str, Any] | None, *excluded: Mapping[str, Any]) -> dict[str, Any]:
    """base AND NOT(e1) AND NOT(e2) ..."""
    parts: list[Any] = [] if base is None else [dict(base)]
    parts += [{"not": dict(e)} for e in excluded]
    return parts[0] if len(parts) == 1 else {"and": parts}


@dataclass
class Agent:
    """One TRE's agent as the attacker meets it: ask() returns what the researcher sees."""

    executor: Executor
    state: AgentState
    source: DataSource
    policy: DisclosurePolicy
    outputs: list[NodeOutput] = field(default_factory=list)

    def run(
        self,
        analysis: str,
        project: str = "p1",
        *,
        job_id: int | None = None,
        round_params: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> NodeOutput:
        """Run one task; return the agent's full output (rules with details: TRE-only)."""
        task = TaskSpec(
            task_id=f"t-{next(_task_ids)}",
            job_id=job_id if job_id is not None else next(_task_ids),
            node=NODE,
            analysis=analysis,
            dataset=DATASET,
            params=json.loads(json.dumps(params)),
            project=project,
            round=None if round_params is None else json.loads(json.dumps(round_params)),
        )
        output = self.executor.run(task)
        self.outputs.append(output)
        return output

    def ask(self, analysis: str, project: str = "p1", **params: Any) -> NodeOutput:
        """Run one task; return what the researcher receives of this node's output."""
        return seen(analysis, self.run(analysis, project, **params))

    def combined(self, analysis: str, project: str = "p1", **params: Any) -> dict[str, Any]:
        """Run a single-round task and return the coordinator's combination of it."""
        output = self.run(analysis, project, **params)
        return combine(analysis, params, output)

    def fit_rounds(
        self, analysis: str, project: str = "p1", **params: Any
    ) -> tuple[list[NodeOutput], dict[str, Any] | None]:
        """Drive an iterative analysis as the coordinator does; return each round's output
        (as the researcher sees it) and the combined result (None if a round did not release)."""
        entry = CATALOGUE[analysis]
        assert is_iterative(entry)
        validated = entry.validate(params)
        state = entry.initial_state(validated)
        job_id = next(_task_ids)
        views: list[NodeOutput] = []
        for _ in range(entry.max_rounds(validated)):
            round_params = entry.round_params(validated, state)
            output = self.run(analysis, project, job_id=job_id, round_params=round_params, **params)
            views.append(seen(analysis, output))
            if output.outcome not in (Outcome.RELEASED, Outcome.SUPPRESSED):
                return views, None
            step = entry.advance(validated, state, {NODE: _wire(output)})
            state = step.state
            if step.done:
                return views, step.result
        return views, None


def _wire(output: NodeOutput) -> NodeOutput:
    """The output as the coordinator holds it after the wire (JSON numbers)."""
    return NodeOutput(
        output.outcome, json.loads(json.dumps(output.payload)), output.rules, output.error
    )


def seen(analysis: str, output: NodeOutput) -> NodeOutput:
    """What the researcher receives of one node's output."""
    public = release.public_output(output)
    payload = release.researcher_view(analysis, public.payload) if public.payload else {}
    return NodeOutput(public.outcome, json.loads(json.dumps(payload)), public.rules, public.error)


def combine(analysis: str, params: Mapping[str, Any], output: NodeOutput) -> dict[str, Any]:
    """The coordinator's combined result of one node's output (what the researcher gets)."""
    entry = CATALOGUE[analysis]
    validated = entry.validate(json.loads(json.dumps(params)))
    result = entry.combine(validated, {NODE: _wire(output)})
    return json.loads(json.dumps(result, default=str))


def numbers(value: Any) -> list[float]:
    """Every number anywhere in a JSON-like value (booleans excluded)."""
    found: list[float] = []
    if isinstance(value, bool) or value is None:
        return found
    if isinstance(value, int | float):
        if math.isfinite(value):
            found.append(float(value))
    elif isinstance(value, Mapping):
        for v in value.values():
            found += numbers(v)
    elif isinstance(value, list | tuple):
        for v in value:
            found += numbers(v)
    return found


def view_text(output: NodeOutput | Mapping[str, Any]) -> str:
    """All text a researcher receives of an output: payload, rules' words, error."""
    if isinstance(output, NodeOutput):
        return json.dumps(
            {
                "outcome": output.outcome.value,
                "payload": output.payload,
                "rules": [[r.rule, r.passed, r.detail] for r in output.rules],
                "error": output.error,
            }
        )
    return json.dumps(output, default=str)


def public_view(output: NodeOutput) -> tuple[Any, ...]:
    """A hashable form of what the researcher sees, to compare two outputs."""
    return (
        output.outcome,
        json.dumps(output.payload, sort_keys=True),
        tuple((r.rule, r.passed, r.detail) for r in output.rules),
        output.error,
    )


def assert_generic_block(output: NodeOutput, *, forbidden: Sequence[str] = ()) -> None:
    """A blocked output as the researcher sees it: no payload, only failed rule families in
    fixed words, the generic error, no digit and none of the forbidden strings."""
    assert output.outcome is Outcome.BLOCKED
    assert output.payload == {}
    assert output.error == release.GENERIC_BLOCKED
    assert output.rules, "a blocked output names the rule family that failed"
    for rule in output.rules:
        assert rule.passed is False, f"a blocked output shows a passed rule: {rule}"
        assert rule.detail in release.PLAIN_WORDS.values(), rule.detail
    text = view_text(output)
    assert not re.search(r"\d", text.replace(Outcome.BLOCKED.value, "")), text
    for word in forbidden:
        assert word not in text, f"{word!r} appears in {text}"


def count_of(output: NodeOutput) -> int | None:
    """The released n of a count output, or None when nothing was released."""
    if output.outcome not in (Outcome.RELEASED, Outcome.SUPPRESSED):
        return None
    n = output.payload.get("n")
    return None if n is None else int(n)


def secret_for(seed: str) -> bytes:
    """The TRE's cell-key secret in a test (fixed, so a run is reproducible; unknown to
    the attacker, who never uses it)."""
    return hashlib.sha256(f"fedtre attack suite {seed}".encode()).digest()


def write_source(frame: pd.DataFrame, path: Path) -> DataSource:
    """Write frame to a SQLite file and open it as an agent opens a SQL dataset."""
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        frame.to_sql(DATASET, conn, index=False)
    engine.dispose()
    source = open_sql_source(DATASET, f"sqlite:///{path}", DATASET, COLUMNS)
    return replace(source, schema=DatasetSchema(DATASET, dict(COLUMNS), dict(GRIDS)))


class Factory:
    """Builds agents on data sources; disposes of them at the end of the test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self._n = itertools.count()
        self._states: list[AgentState] = []
        self._sources: list[DataSource] = []

    def source(
        self, frame: pd.DataFrame, *, seed: str = "tre-a", key: str | None = "pid"
    ) -> DataSource:
        raw = write_source(frame, self.tmp / f"data-{next(self._n)}.sqlite")
        self._sources.append(raw)
        return keyed_source(raw, secret_for(seed), key)

    def agent(
        self,
        source: DataSource,
        *,
        policy: DisclosurePolicy = DEFAULT,
        seed: str = "tre-a",
        key: str | None = "pid",
        analyses: Sequence[str] | None = None,
    ) -> Agent:
        """A fresh agent (new state: an empty differencing memory) on source."""
        keyed_policy = policy.keyed(secret_tag=secret_tag(secret_for(seed)))
        local = LocalPolicy(
            node_id=NODE,
            analyses={n: CATALOGUE[n] for n in (analyses or CATALOGUE)},
            disclosure=keyed_policy,
            datasets={DATASET: source.schema},
            keys={DATASET: key} if key else {},
        )
        state = AgentState(self.tmp / f"state-{next(self._n)}.sqlite")
        self._states.append(state)
        return Agent(
            Executor(local, {DATASET: source}, state, retry_delays=()), state, source, keyed_policy
        )

    def close(self) -> None:
        for state in self._states:
            state.close()
        for source in self._sources:
            source.engine.dispose()


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[Factory]:
    f = Factory(tmp_path)
    yield f
    f.close()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_frame()
