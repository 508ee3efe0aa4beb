"""Test helpers for models and survival: a cohort with outcomes, splits, a multi-round driver."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from analysis_testkit import EXACT, make_source, roundtrip

from fedtre.analyses import DatasetSchema, DataSource, NodeOutput, Outcome
from fedtre.analyses.iterative import IterativeAnalysis, with_round
from fedtre.disclosure import DisclosurePolicy

MODEL_SCHEMA = DatasetSchema(
    name="cohort",
    columns={
        "age": "integer",
        "bmi": "float",
        "sex": "string",
        "smoking": "string",
        "site": "integer",
        "diabetic": "boolean",
        "sbp": "float",
        "visits": "integer",
        "log_years": "float",
        "time": "float",
        "died": "integer",
        "arm": "string",
    },
)


def model_cohort(n: int, seed: int) -> pd.DataFrame:
    """A pooled cohort whose outcomes depend on the covariates, with NULLs in some columns."""
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 90, n).astype(float)
    bmi = rng.normal(27.0, 4.5, n)
    sex = rng.choice(["F", "M"], n)
    smoking = rng.choice(["never", "former", "current"], n, p=[0.5, 0.3, 0.2])
    site = rng.integers(1, 5, n)
    male = (sex == "M").astype(float)
    current = (smoking == "current").astype(float)
    former = (smoking == "former").astype(float)
    eta = -7.0 + 0.05 * age + 0.12 * bmi + 0.4 * male + 0.6 * current + 0.2 * former
    diabetic = rng.random(n) < 1.0 / (1.0 + np.exp(-eta))
    sbp = 95.0 + 0.45 * age + 0.6 * bmi + 3.0 * male + 2.0 * current + rng.normal(0, 12, n)
    years = rng.uniform(0.5, 6.0, n)
    rate = np.exp(-2.0 + 0.015 * age + 0.3 * current + 0.1 * (site == 3))
    visits = rng.poisson(rate * years)
    hazard = 0.03 * np.exp(0.02 * (age - 50) + 0.4 * current)
    event_time = rng.exponential(1.0 / hazard)
    censor_time = rng.uniform(2.0, 30.0, n)
    # Follow-up in whole months, so many records share a time (ties across nodes).
    time = np.ceil(np.minimum(event_time, censor_time) * 12.0) / 12.0
    died = (event_time <= censor_time).astype(int)
    frame = pd.DataFrame(
        {
            "age": age,
            "bmi": bmi,
            "sex": pd.Series(sex, dtype=object),
            "smoking": pd.Series(smoking, dtype=object),
            "site": site,
            "diabetic": diabetic,
            "sbp": sbp,
            "visits": visits,
            "log_years": np.log(years),
            "time": time,
            "died": died,
            "arm": pd.Series(rng.choice(["a", "b", "c"], n, p=[0.4, 0.35, 0.25]), dtype=object),
        }
    )
    frame.loc[rng.random(n) < 0.04, "age"] = np.nan
    frame.loc[rng.random(n) < 0.06, "bmi"] = np.nan
    frame.loc[rng.random(n) < 0.03, "sbp"] = np.nan
    return frame


def split_with_single_level(
    pooled: pd.DataFrame, sizes: Sequence[int], column: str, level: Any
) -> list[pd.DataFrame]:
    """Split `pooled` into parts of `sizes`; the first part holds only records with column == level.

    Together the parts hold every record once (the sizes must add up to len(pooled)).
    """
    assert sum(sizes) == len(pooled)
    only = pooled.index[pooled[column] == level]
    assert len(only) >= sizes[0]
    first = list(only[: sizes[0]])
    rest = pooled.drop(index=first)
    parts = [pooled.loc[first]]
    bounds = np.cumsum([0, *sizes[1:]])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        parts.append(rest.iloc[a:b])
    return [p.reset_index(drop=True) for p in parts]


def make_model_nodes(tmp_path: Path, parts: Sequence[pd.DataFrame]) -> dict[str, DataSource]:
    return {
        f"tre-{i}": make_source(tmp_path / f"node{i}.db", part, MODEL_SCHEMA)
        for i, part in enumerate(parts)
    }


@dataclasses.dataclass
class RoundsRun:
    """What a multi-round run produced: the result, every round's node outputs, progress."""

    result: dict[str, Any] | None
    rounds: list[dict[str, NodeOutput]]
    progress: list[dict[str, Any]]


def run_round_at_node(
    analysis: IterativeAnalysis,
    params: Mapping[str, Any],
    round_params: Mapping[str, Any],
    source: DataSource,
    policy: DisclosurePolicy,
) -> NodeOutput:
    """What an agent does with one round's task (node_agent.executor), then the wire."""
    p = with_round(analysis, analysis.validate(roundtrip(params)), round_params)
    assert analysis.schema_problems(p, source.schema) == []
    out = analysis.check(p, analysis.compute(p, source), policy)
    return dataclasses.replace(out, payload=roundtrip(out.payload))


def run_rounds(
    analysis: IterativeAnalysis,
    params: Mapping[str, Any],
    nodes: Mapping[str, DataSource],
    policy: DisclosurePolicy = EXACT,
) -> RoundsRun:
    """Drive an iterative analysis as the coordinator does, without a network.

    Each round's parameters and every node payload cross a Struct, as on the wire. Stops
    (result None) at the first round a node does not release.
    """
    validated = analysis.validate(roundtrip(params))
    state = analysis.initial_state(validated)
    rounds: list[dict[str, NodeOutput]] = []
    progress: list[dict[str, Any]] = []
    for _ in range(analysis.max_rounds(validated)):
        round_params = roundtrip({"r": analysis.round_params(validated, state)})["r"]
        outputs = {}
        for node, source in nodes.items():
            outputs[node] = run_round_at_node(analysis, params, round_params, source, policy)
        rounds.append(outputs)
        if any(o.outcome not in (Outcome.RELEASED, Outcome.SUPPRESSED) for o in outputs.values()):
            return RoundsRun(None, rounds, progress)
        step = analysis.advance(validated, state, outputs)
        state = roundtrip(step.state)
        progress.append(step.progress)
        if step.done:
            assert step.result is not None
            assert roundtrip(step.result) == step.result
            return RoundsRun(step.result, rounds, progress)
    raise AssertionError("the analysis ran past max_rounds without finishing")
