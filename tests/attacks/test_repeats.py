"""Attack class 2: repeats and averaging.

Perturbation that changed with every request could be averaged away. The cell-key method
gives the same records the same answer, however the question is asked.
"""

from __future__ import annotations

import pandas as pd

from fedtre.analyses import Outcome

from .conftest import Factory, count_of

OLDER = {"col": "age", "op": ">=", "value": 40}
# The same records as OLDER, written differently (age is never NULL, sex is F or M).
EQUIVALENT = [
    OLDER,
    {"not": {"col": "age", "op": "<", "value": 40}},
    {"col": "age", "op": ">", "value": 39},
    {"col": "age", "op": "in", "value": list(range(40, 90))},
    {
        "or": [
            {"and": [OLDER, {"col": "sex", "op": "==", "value": "F"}]},
            {"and": [OLDER, {"col": "sex", "op": "==", "value": "M"}]},
        ]
    },
    {"and": [OLDER, {"col": "age", "op": "<", "value": 1000}]},
    {"and": [OLDER, {"col": "region", "op": "not_in", "value": ["no such region"]}]},
]


def test_the_same_query_twenty_times_gives_one_answer(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """count(age >= 40) asked 20 times, in 4 projects.

    Nothing learned beyond one answer: all 20 released values are identical, so their
    mean is the single perturbed answer (averaging does not approach the true count).
    """
    agent = factory.agent(factory.source(frame))
    answers = [count_of(agent.ask("count", f"p{i % 4}", filter=OLDER)) for i in range(20)]
    assert None not in answers
    assert len(set(answers)) == 1


def test_logically_equivalent_filters_give_one_answer(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """Seven syntactically different filters selecting the same records, asked as count,
    one-way crosstab and summary.

    Nothing learned beyond one answer: per analysis, every released value is the same
    (a filter may be blocked, never answered differently), so averaging the variants
    gives the single perturbed answer.
    """
    agent = factory.agent(factory.source(frame))
    counts, cells, means = set(), set(), set()
    for f in EQUIVALENT:
        n = count_of(agent.ask("count", filter=f))
        if n is not None:
            counts.add(n)
        table = agent.ask("crosstab", rows="sex", filter=f)
        if table.outcome in (Outcome.RELEASED, Outcome.SUPPRESSED):
            cells.add(tuple(tuple(c) for c in table.payload["cells"]))
        summary = agent.ask("summary", column="sbp", filter=f)
        if summary.outcome in (Outcome.RELEASED, Outcome.SUPPRESSED):
            means.add(tuple(tuple(g) for g in summary.payload["groups"]))
    assert len(counts) == 1 and len(cells) == 1 and len(means) == 1


def test_the_same_records_counted_by_different_analyses_give_one_n(
    factory: Factory, frame: pd.DataFrame
) -> None:
    """n of one cohort (age >= 40; every column non-null) from count, the crosstab's grand
    total, summary, correlation and quantiles.

    Nothing learned beyond one answer: every released n of these records is the same
    perturbed value (same records, same cell key), so they cannot be averaged.
    """
    agent = factory.agent(factory.source(frame))
    ns = {"count": count_of(agent.ask("count", filter=OLDER))}
    table = agent.ask("crosstab", rows="sex", margins=True, filter=OLDER)
    ns["crosstab total"] = table.payload["margins"]["total"]
    summary = agent.ask("summary", column="sbp", filter=OLDER)
    ns["summary"] = summary.payload["groups"][0][1]
    corr = agent.ask("correlation", columns=["sbp", "age"], filter=OLDER)
    if corr.outcome in (Outcome.RELEASED, Outcome.SUPPRESSED) and "n" in corr.payload:
        ns["correlation"] = corr.payload["n"]
    quant = agent.ask("quantiles", column="sbp", width=5, filter=OLDER)
    if quant.outcome in (Outcome.RELEASED, Outcome.SUPPRESSED) and "n" in quant.payload:
        ns["quantiles"] = quant.payload["n"]
    released = {k: v for k, v in ns.items() if v is not None}
    assert len(released) >= 3, ns
    assert len(set(released.values())) == 1, ns
