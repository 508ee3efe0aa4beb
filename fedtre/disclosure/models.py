"""Rules for model outputs (regressions, GLMs), for the analyses that fit models.

A model output (coefficients, standard errors, or a GLM round's score vector and
information matrix) is released only when every rule passes; otherwise nothing leaves.
Each GLM round is checked before its aggregates leave the agent.

- residual_df: records minus parameters must be at least `policy.min_residual_df`
  (default 10). Few residual degrees of freedom let fitted values reproduce records.
- parameters: at most a third of the records (3 x parameters <= records), so no model
  is close to saturated (one parameter per record or group reproduces the data).
- level_counts: every level of a binary or categorical outcome and of each categorical
  covariate must be present in at least `policy.threshold` records; a rare level's
  coefficient describes the few records that have it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fedtre.analyses.base import RuleResult
from fedtre.disclosure.policy import DisclosurePolicy
from fedtre.disclosure.rules import LEVEL_COUNTS, PARAMETERS, RESIDUAL_DF


@dataclass(frozen=True)
class ModelCheck:
    """The model rules' results; passed is True only when every rule passed."""

    passed: bool
    rules: tuple[RuleResult, ...]


def check_model(
    *,
    records: int,
    parameters: int,
    levels: Mapping[str, Mapping[str | None, int]],
    policy: DisclosurePolicy,
) -> ModelCheck:
    """Check a model fitted on `records` records with `parameters` parameters.

    levels maps each categorical variable (the outcome if binary or categorical, and each
    categorical covariate) to its levels' record counts, exact and never released; a level
    that the model's design knows but the data lacks must be given with count 0.
    """
    t = policy.threshold
    df = records - parameters
    rules: list[RuleResult] = []
    need = policy.min_residual_df
    if df >= need:
        rules.append(RuleResult(RESIDUAL_DF, True, f"at least {need} residual degrees of freedom"))
    else:
        rules.append(
            RuleResult(
                RESIDUAL_DF,
                False,
                f"fewer than {need} residual degrees of freedom; use fewer parameters or more records",
            )
        )
    if 3 * parameters <= records:
        rules.append(RuleResult(PARAMETERS, True, "parameters are at most a third of the records"))
    else:
        rules.append(
            RuleResult(
                PARAMETERS,
                False,
                "the model has more parameters than a third of its records (close to saturated); "
                "use fewer parameters",
            )
        )
    rare = [
        f"{variable} = {'NULL' if level is None else level}"
        for variable, counts in levels.items()
        for level, n in counts.items()
        if n < t
    ]
    if rare:
        rules.append(
            RuleResult(
                LEVEL_COUNTS,
                False,
                f"level(s) {', '.join(rare)} have fewer than {t} records; merge or drop them",
            )
        )
    else:
        rules.append(
            RuleResult(LEVEL_COUNTS, True, f"every categorical level has at least {t} records")
        )
    return ModelCheck(all(r.passed for r in rules), tuple(rules))
