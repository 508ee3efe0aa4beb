"""What the models fitted by federated Newton–Raphson over rounds (glm, cox) share.

Round 1 has no design yet: each node reports its levels and the coordinator agrees them.
Every later round carries the current coefficients and the agreed levels. Both models
take `max_iter` and `tol` alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedtre.analyses.design import GlobalDesign
from fedtre.analyses.iterative import IterativeAnalysis
from fedtre.analyses.linear_regression import scaled_inverse
from fedtre.errors import InvalidRequest

DEFAULT_MAX_ITER = 25
MAX_ITER = 100
DEFAULT_TOL = 1e-10
# A step that makes the fit worse is halved at most this often before the fit is refused.
MAX_HALVINGS = 10


def iteration_params(p: Mapping[str, Any], analysis: str) -> dict[str, Any]:
    """Return {"max_iter", "tol"} from a job's parameters, defaults filled in.

    Raises InvalidRequest for a max_iter that is not a whole number from 2 to MAX_ITER, or
    a tol that is not above 0 and at most 0.001.
    """
    max_iter = p.get("max_iter")
    if max_iter is None:
        max_iter = DEFAULT_MAX_ITER
    if (
        isinstance(max_iter, bool)
        or not isinstance(max_iter, int | float)
        or max_iter != int(max_iter)
        or not 2 <= max_iter <= MAX_ITER
    ):
        raise InvalidRequest(
            f"{analysis} parameter 'max_iter' must be a whole number from 2 to {MAX_ITER}"
        )
    tol = p.get("tol")
    if tol is None:
        tol = DEFAULT_TOL
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 < tol <= 1e-3:
        raise InvalidRequest(
            f"{analysis} parameter 'tol' must be a number above 0 and at most 0.001"
        )
    return {"max_iter": int(max_iter), "tol": float(tol)}


def newton_step(information: np.ndarray, score: np.ndarray, terms: Sequence[str]) -> np.ndarray:
    """Return the Newton step, information^-1 score (InvalidRequest if it is singular)."""
    return scaled_inverse(information, list(terms)) @ score


def halved(state: Mapping[str, Any], iteration: int, max_iter: int, diverged: str) -> dict:
    """Return the next state after a step that made the fit worse: half-way back to the
    last accepted coefficients. Raises InvalidRequest(diverged) once halving has not
    helped MAX_HALVINGS times, or the rounds are spent."""
    halvings = int(state.get("halvings", 0)) + 1
    if halvings > MAX_HALVINGS or iteration >= max_iter:
        raise InvalidRequest(diverged)
    accepted = np.asarray(state["accepted_beta"], dtype=float)
    beta = np.asarray(state["beta"], dtype=float)
    half = accepted + (beta - accepted) / 2.0
    return {**state, "iteration": iteration, "beta": half.tolist(), "halvings": halvings}


class NewtonAnalysis(IterativeAnalysis):
    """An IterativeAnalysis whose state holds the agreed design and the coefficients."""

    def validate_round(self, params: Mapping[str, Any], round_params: Any) -> dict[str, Any]:
        """Return a later round's {"beta", "levels"} ({} in round 1).

        Raises InvalidRequest for coefficients that are not finite numbers or levels that
        are not lists of strings."""
        r = super().validate_round(params, round_params)
        if not r:
            return {}
        beta, levels = r.get("beta"), r.get("levels")
        if not isinstance(beta, list) or not all(
            isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b)
            for b in beta
        ):
            raise InvalidRequest(f"{self.name}: the round's 'beta' is not a list of finite numbers")
        if not isinstance(levels, Mapping) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in levels.values()
        ):
            raise InvalidRequest(f"{self.name}: the round's 'levels' are malformed")
        return {"beta": [float(b) for b in beta], "levels": {k: list(v) for k, v in levels.items()}}

    def max_rounds(self, params: Mapping[str, Any]) -> int:
        return int(self.validate(params)["max_iter"])

    def initial_state(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"iteration": 0, "design": None, "beta": None}

    def round_params(self, params: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
        if state.get("design") is None:
            return {}
        design = GlobalDesign.from_json(state["design"])
        return {
            "beta": list(state["beta"]),
            "levels": {k: list(v) for k, v in design.levels.items()},
        }
