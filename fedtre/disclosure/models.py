"""Rules for model outputs (regressions, GLMs), for the analyses that fit models.

A model output (a node's sufficient statistics, or a GLM round's score vector and
information matrix) is released only when every rule passes; otherwise the output is
BLOCKED and nothing leaves, neither a payload nor an error text naming a level or a
count. Each GLM round is checked before its aggregates leave the agent.

- residual_df: records minus parameters must be at least `policy.min_residual_df`
  (default 10). Few residual degrees of freedom let fitted values reproduce records.
- parameters: at most a third of the records (3 x parameters <= records), so no model
  is close to saturated (one parameter per record or group reproduces the data).
- level_counts: every level of a binary or categorical outcome and of each categorical
  covariate must be present in at least `policy.threshold` records; a rare level's
  coefficient describes the few records that have it.
- nk_dominance and p_percent (when the policy turns them on): on the outcome and on every
  numeric covariate, over the model's records. A model's statistics hold each such
  column's total (its mean times n; the intercept of an intercept-only regression is the
  mean), so a column whose total is dominated by one or two records would give their
  values away. The rules are applied to the absolute values (the largest |x| against
  the sum of |x|), so a signed column (a centred covariate, a log) is judged too: when
  the largest |x| make up most of the sum of |x|, the total is close to their sum.
  A dominated column blocks the model.
- events_per_parameter (survival models, cox): parameters at most a third of the events,
  and events less parameters at least `policy.min_residual_df`. A Cox fit is driven by
  its events (each adds its covariates less its risk set's mean to the score): with few
  events per parameter the fit follows single events, or runs off to infinity.

The rule details (RuleResult.detail) stay at the agent: its audit log and the TRE's
output checker see which level is rare or which column is dominated; the researcher sees
only the rule family in fixed words (fedtre.disclosure.release.public_rules).

released_count() is the model's n as it leaves: the release stage's count (threshold,
then the cell-key perturbation or rounding), with the cell key of the model's records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedtre.analyses.base import RuleResult
from fedtre.disclosure import release
from fedtre.disclosure.dominance import columns_dominance_rules
from fedtre.disclosure.policy import DisclosurePolicy
from fedtre.disclosure.rules import (
    EVENTS_PER_PARAMETER,
    LEVEL_COUNTS,
    LEVERAGE,
    PARAMETERS,
    RESIDUAL_DF,
    TABLE_MODEL,
    THRESHOLD,
    count_rule,
)


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
    magnitudes: Mapping[str, tuple[Sequence[float], float]] | None = None,
    numeric_covariates: int = 1,
    leverage: float | None = None,
) -> ModelCheck:
    """Check a model fitted on `records` records with `parameters` parameters.

    levels maps each categorical variable (the outcome if binary or categorical, and each
    categorical covariate) to its levels' record counts, exact and never released; a level
    that the model's design knows but the data lacks must be given with count 0.
    magnitudes maps the outcome and each numeric covariate (when the outcome is numeric:
    a binary outcome is judged by its level counts) to (its largest absolute values,
    descending; the sum of its absolute values) over the model's records, for the
    dominance rules. numeric_covariates: how many numeric covariates the design has; with
    none (intercept only, or categorical covariates only) the model reproduces a table of
    group means or proportions, and its exact coefficients and standard errors would give
    the groups' exact sizes (an intercept-only logistic model: n = 1 / (se^2 p (1 - p))),
    undoing the perturbation of counts; such models are blocked unless the policy allows
    them (categorical_only_models): the researcher asks for the table instead.
    leverage: the largest leverage of the model's records (design.max_leverage): at most
    1 / threshold, the leverage of a member of a level of exactly `threshold` records, so
    no record weighs more in its own fitted value than a member of the smallest level
    the level_counts rule allows (a numeric covariate that singles a few records out, or
    one record's extreme value, would otherwise reproduce their outcomes).
    """
    t = policy.threshold
    df = records - parameters
    rules: list[RuleResult] = []
    if leverage is not None and t > 1:
        if leverage <= 1.0 / t + 1e-9:
            rules.append(RuleResult(LEVERAGE, True, f"no record's leverage exceeds 1/{t}"))
        else:
            rules.append(
                RuleResult(
                    LEVERAGE,
                    False,
                    f"a record's leverage exceeds 1/{t}: a covariate singles out fewer than "
                    f"{t} records, or one record's value is far from the others'; drop or "
                    "band that covariate, or narrow the cohort",
                )
            )
    if numeric_covariates > 0 or policy.categorical_only_models:
        rules.append(RuleResult(TABLE_MODEL, True, "the design has a numeric covariate"))
    else:
        rules.append(
            RuleResult(
                TABLE_MODEL,
                False,
                "a model with no numeric covariate reproduces a table of group means or "
                "proportions exactly; ask for the table (crosstab or summary), or add a "
                "numeric covariate",
            )
        )
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
    # Agent-side detail only (public_rules replaces it with fixed words): it names the rare
    # level for the TRE's output checker, never its count.
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
    rules += dominance(magnitudes or {}, policy)
    return ModelCheck(all(r.passed for r in rules), tuple(rules))


def dominance(
    magnitudes: Mapping[str, tuple[Sequence[float], float]], policy: DisclosurePolicy
) -> list[RuleResult]:
    """Return the NK and p% results over the model's numeric columns (see the module doc).

    Each column is judged on its absolute values (largest |x| against the sum of |x|),
    which are non-negative, so the rules apply to every column and none needs the output
    checker's review. The rules themselves are fedtre.disclosure.dominance's.
    """
    contributions = {
        column: {"top": list(top), "total": float(total), "minimum": 0.0}
        for column, (top, total) in magnitudes.items()
    }
    return columns_dominance_rules(contributions, policy, what="the model")


def events_per_parameter(events: int, parameters: int, policy: DisclosurePolicy) -> RuleResult:
    """Return the events_per_parameter rule for a survival model (see the module doc)."""
    need = policy.min_residual_df
    if 3 * parameters <= events and events - parameters >= need:
        return RuleResult(
            EVENTS_PER_PARAMETER,
            True,
            f"parameters are at most a third of the events, with at least {need} events to spare",
        )
    return RuleResult(
        EVENTS_PER_PARAMETER,
        False,
        "the model has too few events for its parameters (it needs three events per "
        f"parameter and {need} more than parameters); use fewer parameters or more records",
    )


def released_events(
    events: int, key: int, policy: DisclosurePolicy
) -> tuple[int | None, tuple[RuleResult, ...]]:
    """Return a survival model's number of events as it may leave (None: withheld), with
    the rules applied; key: the cell key of exactly its event records."""
    value = release.count(events, key, policy)
    if value is None:
        return None, (
            RuleResult(
                THRESHOLD, False, "the model's events are fewer than the TRE's minimum count"
            ),
        )
    return value, (
        RuleResult(THRESHOLD, True, f"the model has at least {policy.threshold} events"),
    )


def released_count(
    n: int, key: int, policy: DisclosurePolicy
) -> tuple[int | None, tuple[RuleResult, ...]]:
    """Return the model's n as it may leave (None: withheld) and the rules applied to it.

    key: the cell key of exactly the model's records (cell_key_sum over them), so the same
    records always give the same released n, in every round of a GLM and in every job.
    """
    value = release.count(n, key, policy)
    if value is None:
        return None, (
            RuleResult(
                THRESHOLD, False, "the model's records are fewer than the TRE's minimum count"
            ),
        )
    rules = [RuleResult(THRESHOLD, True, f"the model has at least {policy.threshold} records")]
    rules.append(count_rule(policy))
    return value, tuple(rules)


def released_design(
    covariates: Sequence[Sequence[Any]], basis: Sequence[Sequence[Any]]
) -> tuple[list[list[Any]], list[list[Any]]]:
    """Return a node's covariate report and design columns with their levels as labels.

    Called only after the model rules passed: every level a node lists then has at least
    `threshold` records there (level_counts), or is a level of the agreed design the
    coordinator sent (a later GLM round), so its name may leave.
    """
    report = [
        [spec, kind, ctype, [release.label(str(x)) for x in levels]]
        for spec, kind, ctype, levels in covariates
    ]
    columns = [
        [spec, release.label(None if level is None else str(level))] for spec, level in basis
    ]
    return report, columns
