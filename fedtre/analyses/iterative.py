"""Iterative analyses: jobs of several rounds, each an ordinary task at every target node.

The coordinator drives an IterativeAnalysis (coordinator.domain.rounds):

1. state = initial_state(params); round 1's tasks carry round_params(params, state);
2. when every node has answered a round, advance(params, state, outputs) combines the
   released aggregates into the next state: either the next round (new tasks for the
   same nodes, carrying the new round_params) or, when done, the combined result;
3. a job never runs more than max_rounds(params) rounds.

The round's parameters travel to the agent beside the job's parameters (Task.round on
the wire, TaskSpec.round at the agent), never inside them: the job's own parameters stay
exactly as the researcher submitted and the approver approved them. The agent hands them
to the analysis under the key ROUND_KEY (with_round), and validates them like any input.
Every round's output passes the analysis's disclosure check at the agent before it leaves.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedtre.analyses.base import Analysis, NodeOutput
from fedtre.errors import InvalidRequest

# The key under which an agent passes a round's parameters to compute() and check().
ROUND_KEY = "round"


@dataclass(frozen=True)
class RoundStep:
    """What the coordinator does after a round.

    state: the analysis's state after this round (JSON-compatible; stored with the job).
    done: True when the job is finished; `result` is then its combined result.
    progress: figures for the researcher while the job runs, e.g. {"deviance": 812.4}.
    """

    state: dict[str, Any]
    done: bool
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None


class IterativeAnalysis(Analysis):
    """An analysis computed over several rounds of tasks (see the module docstring)."""

    @abstractmethod
    def max_rounds(self, params: Mapping[str, Any]) -> int:
        """Return the most rounds a job with these validated params may run."""

    @abstractmethod
    def initial_state(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Return the state before round 1 (JSON-compatible)."""

    @abstractmethod
    def round_params(self, params: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
        """Return what every node needs for the next round (JSON-compatible)."""

    @abstractmethod
    def advance(
        self,
        params: Mapping[str, Any],
        state: Mapping[str, Any],
        outputs: Mapping[str, NodeOutput],
    ) -> RoundStep:
        """Combine one round's released outputs (every one RELEASED or SUPPRESSED).

        Raises InvalidRequest (a public message) when the model cannot be fitted.
        """

    def validate_round(self, params: Mapping[str, Any], round_params: Any) -> dict[str, Any]:
        """Return the round's parameters checked for shape; raise InvalidRequest if malformed."""
        if not isinstance(round_params, Mapping):
            raise InvalidRequest(f"{self.name}: the round's parameters are not an object")
        return dict(round_params)

    def combine(
        self, params: Mapping[str, Any], outputs: Mapping[str, NodeOutput]
    ) -> dict[str, Any]:
        raise InvalidRequest(
            f"{self.name} is combined round by round by the coordinator, not in one step"
        )


def is_iterative(analysis: Analysis) -> bool:
    """Return True when `analysis` runs in several rounds."""
    return isinstance(analysis, IterativeAnalysis)


def with_round(analysis: Analysis, params: Mapping[str, Any], round_params: Any) -> dict[str, Any]:
    """Return validated params with the round's parameters under ROUND_KEY (at the agent).

    Raises InvalidRequest when the analysis is not iterative or the round is malformed.
    """
    if not isinstance(analysis, IterativeAnalysis):
        raise InvalidRequest(f"analysis {analysis.name!r} does not run in rounds")
    return {**params, ROUND_KEY: analysis.validate_round(params, round_params)}


def split_round(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (the job's params, the round's params or {}) from params given to compute()."""
    rest = {k: v for k, v in params.items() if k != ROUND_KEY}
    round_params = params.get(ROUND_KEY) or {}
    if not isinstance(round_params, Mapping):
        raise InvalidRequest("the round's parameters are not an object")
    return rest, dict(round_params)
