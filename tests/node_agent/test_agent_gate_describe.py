"""What `fedtre agent inbox show` tells a TRE's operator a waiting task would release.

The operator decides on this text, so it must state the TRE's own count protection: noise
under cell-key perturbation (the default), rounding only when the TRE rounds.
"""

from __future__ import annotations

from typing import Any

import pytest

from fedtre.analyses import get_analysis
from fedtre.analyses.base import DatasetSchema
from fedtre.disclosure import DisclosurePolicy
from node_agent.gate import TaskGate
from node_agent.policy import LocalPolicy
from node_agent.sovereignty import GovernanceConfig
from node_agent.task import TaskSpec

TASK = TaskSpec(
    task_id="t-1", job_id=1, node="tre-a", analysis="count", dataset="cohort", params={}
)


def describe(disclosure: DisclosurePolicy) -> str:
    policy = LocalPolicy(
        node_id="tre-a",
        analyses={"count": get_analysis("count")},
        disclosure=disclosure,
        datasets={"cohort": DatasetSchema("cohort", {"age": "integer"})},
    )
    unused: Any = None  # describe reads the policy only
    return TaskGate(unused, unused, policy, GovernanceConfig(), unused, unused).describe(TASK)


def test_cell_key_perturbation_is_described_as_noise_not_rounding() -> None:
    text = describe(DisclosurePolicy())  # the default: cell_key, rounding_base 5 unused
    assert "small consistent noise (at most +-3)" in text
    assert "rounded" not in text


@pytest.mark.parametrize(("base", "rounded"), [(5, True), (1, False)])
def test_rounding_is_described_only_when_the_tre_rounds(base: int, rounded: bool) -> None:
    text = describe(DisclosurePolicy(perturbation="rounding", rounding_base=base))
    assert ("rounded to a multiple of 5" in text) is rounded
    assert "noise" not in text
