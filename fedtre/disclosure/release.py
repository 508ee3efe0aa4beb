"""The release stage: the one place that turns a computed value into a value that may leave a TRE.

Every value of a node payload has a kind, and each kind has one rule (docs/disclosure.md):

| kind      | what it is                                  | how it leaves                                   |
|-----------|---------------------------------------------|-------------------------------------------------|
| count     | a cell, margin, bin, n, number at risk      | withheld below the threshold (and a true zero   |
|           |                                             | unless zeros may show); otherwise perturbed by  |
|           |                                             | the cell-key method (or rounded, if the TRE     |
|           |                                             | chose rounding)                                 |
| magnitude | a sum, mean or spread of a column           | the caller applies NK and p% first; the value   |
|           |                                             | carries consistent noise scaled to the largest  |
|           |                                             | contribution (magnitude_total, spread)          |
| bound     | an interval edge or a time                  | a point of the grid the TRE declared for the    |
|           |                                             | column, never a record's value; outer edges are |
|           |                                             | open (never released)                           |
| label     | a category or bin of a released group       | only for groups that are released               |
| model     | a model's sufficient statistics             | exact, after the model rules and dominance;     |
|           |                                             | for the coordinator's combination               |
| parameter | an echo of the researcher's own parameters  | as given                                        |

An analysis builds its payload from the marker values this module returns (count(),
magnitude_total(), bound(), label(), model()); seal() then walks the payload and refuses
any value whose path the analysis did not declare (Analysis.released_fields) or whose
value did not come from the matching function here. So "what can a researcher learn"
is answered by this module, the policy, and each analysis's table of fields.

public_rules() is the other half: a researcher sees each rule family in fixed plain words
(and, for a blocked output, only the families that failed), never a detail that depends
on the data (labels, counts, which other rules passed). Full details stay at the agent.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from fedtre.analyses.base import NodeOutput, Outcome, RuleResult
from fedtre.disclosure import cellkey
from fedtre.disclosure.policy import DisclosurePolicy
from fedtre.disclosure.rules import OPERATOR_APPROVAL, REVIEW, apply_rounding
from fedtre.errors import FedtreError


class Kind(enum.StrEnum):
    """What a released value is (the table in the module docstring)."""

    COUNT = "count"
    MAGNITUDE = "magnitude"
    BOUND = "bound"
    LABEL = "label"
    MODEL = "model"
    PARAMETER = "parameter"


class UndeclaredValue(FedtreError):
    """A payload holds a value the release stage does not know: a bug, never released."""


# -- marker values: only this module makes them ----------------------------------------


class _Count(int):
    __slots__ = ()


class _Magnitude(float):
    __slots__ = ()


class _Bound(float):
    __slots__ = ()


class _Label(str):
    __slots__ = ()


class _Model(float):
    __slots__ = ()


_MARKERS: dict[Kind, type] = {
    Kind.COUNT: _Count,
    Kind.MAGNITUDE: _Magnitude,
    Kind.BOUND: _Bound,
    Kind.LABEL: _Label,
    Kind.MODEL: _Model,
}


# -- counts -------------------------------------------------------------------------------


def count(n: int, key: int, policy: DisclosurePolicy, *, zero_ok: bool = False) -> int | None:
    """Return the count n (with cell key `key`) as it may leave, or None when withheld.

    Withheld: 0 < n < threshold; n == 0 unless zero_ok (a zero the analysis may show,
    e.g. an empty bin beside released ones, and only when zeros are not disclosive or the
    zero is structural); a perturbed value below the threshold (a TRE's own table).
    """
    n = int(n)
    if n < 0:
        raise ValueError("a count cannot be negative")
    if n == 0:
        return _Count(0) if zero_ok else None
    if n < policy.threshold:
        return None
    if policy.perturbation == "cell_key":
        value = n + policy.ptable.noise(n, int(key))
        if value < max(policy.threshold, 1):
            return None
        return _Count(value)
    return _Count(apply_rounding(n, policy))


def is_released(value: Any) -> bool:
    """True when value is a count, magnitude, bound or label made by this module."""
    return isinstance(value, _Count | _Magnitude | _Bound | _Label | _Model)


# -- magnitudes -----------------------------------------------------------------------


def magnitude_total(
    total: float, scale: float, key: int, policy: DisclosurePolicy, *, slot: str
) -> float:
    """Return a sum with noise of at most policy.magnitude_noise x scale, fixed by the cell key.

    scale: the largest absolute contribution to the total (computed in the engine, never
    released). slot names the statistic (e.g. "sum:sbp"), so two statistics of one cell
    get unrelated noise. The caller applies the dominance rules before this.
    """
    factor = cellkey.unit_noise(policy.secret_tag, int(key), slot)
    return float(total) + abs(float(scale)) * policy.magnitude_noise * factor


def magnitude(value: float | None) -> float | None:
    """Mark a magnitude computed from magnitude_total()'s outputs (a mean, an sd) for release."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return _Magnitude(value)


def mean_and_sd(
    *,
    n: int,
    total: float,
    sum_sq_dev: float,
    scale: float,
    dev_scale: float,
    key: int,
    policy: DisclosurePolicy,
    slot: str,
) -> tuple[float | None, float | None]:
    """Return a group's mean and sample sd (n - 1 denominator) with consistent noise.

    total and sum_sq_dev are exact; scale is the largest |value| and dev_scale the largest
    |value - mean| in the group. The noise on the total makes the mean times any n not a
    whole number, so n cannot be read back from an exact mean (docs/disclosure.md).
    """
    noisy_total = magnitude_total(total, scale, key, policy, slot=f"sum:{slot}")
    mean = noisy_total / n if n > 0 else None
    sd = None
    if n > 1:
        noisy_ss = magnitude_total(sum_sq_dev, dev_scale**2, key, policy, slot=f"ss:{slot}")
        sd = math.sqrt(max(noisy_ss, 0.0) / (n - 1))
    return magnitude(mean), magnitude(sd)


# -- bounds and labels ------------------------------------------------------------------


def bound(value: float, grid: float, origin: float = 0.0) -> float:
    """Return value as a released bound; raise ValueError unless it is a grid point.

    grid: the column's grid width (at least the TRE's declared grid); origin: the grid's
    origin. Interval edges are built from grid indices, never from a record's value.
    """
    if not (grid > 0 and math.isfinite(value)):
        raise ValueError("a bound needs a positive grid and a finite value")
    steps = (value - origin) / grid
    if abs(steps - round(steps)) > 1e-9 * max(1.0, abs(steps)):
        raise ValueError(f"bound {value!r} is not on the grid of width {grid!r}")
    return _Bound(value)


def label(value: str | None) -> str | None:
    """Mark the label of a released group (None is the NULL level)."""
    return None if value is None else _Label(value)


def model(value: float) -> float:
    """Mark one model statistic (an entry of X'WX, X'Wz, a deviance) for the coordinator."""
    return _Model(float(value))


def models(values: Sequence[Any]) -> list[Any]:
    """Mark a vector or matrix of model statistics (nested lists of numbers)."""
    return [models(v) if isinstance(v, list | tuple) else model(v) for v in values]


# -- sealing a payload --------------------------------------------------------------------


def _compile(pattern: str) -> re.Pattern[str]:
    parts = [r"\d+" if p == "*" else re.escape(p) for p in pattern.split(".")]
    return re.compile(r"\.".join(parts) + r"\Z")


def seal(analysis: str, payload: Mapping[str, Any], fields: Mapping[str, Kind]) -> dict[str, Any]:
    """Return payload as plain JSON, checked against the analysis's declared fields.

    fields maps dotted paths ("groups.*.1"; * is any list index) to kinds. Raises
    UndeclaredValue when a value's path is not declared, or a value of a declared kind did
    not come from this module's function for that kind (e.g. a raw count).
    """
    compiled = [(_compile(p), kind) for p, kind in fields.items()]

    def kind_of(path: str) -> Kind | None:
        for pattern, kind in compiled:
            if pattern.match(path):
                return kind
        return None

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, Mapping):
            return {str(k): walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        kind = kind_of(path)
        if kind is None:
            raise UndeclaredValue(f"{analysis}: payload value at {path!r} has no declared kind")
        if value is None:
            return None
        if kind is Kind.PARAMETER:
            if is_released(value) or not isinstance(value, str | int | float | bool):
                raise UndeclaredValue(f"{analysis}: {path!r} is declared a parameter")
            return value
        marker = _MARKERS[kind]
        if not isinstance(value, marker):
            raise UndeclaredValue(
                f"{analysis}: {path!r} is a {kind.value} that did not pass the release stage"
            )
        if kind is Kind.LABEL:
            return str(value)
        if kind is Kind.COUNT:
            return int(value)  # type: ignore[call-overload]
        return float(value)  # type: ignore[arg-type]

    return walk(dict(payload), "")


# -- what a researcher sees of a payload ------------------------------------------------


def researcher_view(analysis: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Return a node payload without its model statistics (the kind MODEL).

    Model statistics (cross-products, X'WX, means for exact pooling) are for the
    coordinator's combination; a researcher receives the combined fit and, per node, the
    rest of the payload. The agent signs this view (node_agent.provenance), so the
    researcher can check what they receive.
    """
    from fedtre.analyses import CATALOGUE

    entry = CATALOGUE.get(analysis)
    if entry is None or not payload:
        return dict(payload)
    model_keys = {
        path.split(".")[0] for path, kind in entry.released_fields.items() if kind == Kind.MODEL
    }
    other_keys = {
        path.split(".")[0] for path, kind in entry.released_fields.items() if kind != Kind.MODEL
    }
    hidden = model_keys - other_keys
    return {k: v for k, v in payload.items() if k not in hidden}


# -- what a researcher sees of the rules --------------------------------------------------

# Fixed plain words per rule family: nothing here depends on the data.
PLAIN_WORDS: Mapping[str, str] = {
    "threshold": "counts below the TRE's minimum are withheld",
    "rounding": "counts are rounded",
    "perturbation": "counts carry small consistent noise (cell-key method)",
    "zero_cells": "zero cells are withheld",
    "secondary_suppression": "values that would let a withheld one be recovered are withheld",
    "nk_dominance": "totals dominated by a few contributors are withheld",
    "p_percent": "totals that would let one contributor be estimated closely are withheld",
    "sd_threshold": "spreads need enough values",
    "extremes": "minimum and maximum are never released",
    "cohort_size": "the selected records, and those left out, must each reach the minimum",
    "differencing": "an output may not differ from an earlier one on this dataset by a few records",
    "review": "the TRE's output checker reviews this output",
    OPERATOR_APPROVAL: "the TRE's operator approves a project or job before it runs there",
    "residual_df": "models need enough residual degrees of freedom",
    "parameters": "models need enough records per parameter",
    "level_counts": "each level of a categorical variable needs enough records",
    "table_model": "models need a numeric covariate (otherwise ask for the table)",
    "leverage": "no record may weigh more in its own fitted value than the TRE allows",
    "events_per_parameter": "survival models need enough events per parameter",
    "quantile": "quantiles need enough values on each side",
    "survival": "survival intervals need enough events and censorings",
    "grid": "bounds are released on the TRE's grid only",
}
GENERIC_BLOCKED = "the output did not pass the TRE's disclosure control, so nothing was released"

# The policy settings each rule family applies, shown beside its verdict: the TRE's
# declared policy, never a figure from the data (the cell-key secret is never one).
RULE_SETTINGS: Mapping[str, tuple[str, ...]] = {
    "threshold": ("threshold",),
    "secondary_suppression": ("threshold",),
    "sd_threshold": ("threshold",),
    "cohort_size": ("threshold",),
    "differencing": ("threshold",),
    "parameters": ("threshold",),
    "level_counts": ("threshold",),
    "survival_threshold": ("threshold",),
    "quantile_position": ("threshold",),
    "rounding": ("rounding_base", "rounding"),
    "perturbation": ("perturbation", "noise_deviation", "noise_variance"),
    "zero_cells": ("zeros_disclosive",),
    "nk_dominance": ("dominance_n", "dominance_k"),
    "p_percent": ("p_percent",),
    "residual_df": ("min_residual_df",),
    "table_model": ("categorical_only_models",),
}


def rule_setting(rule: str, policy: DisclosurePolicy) -> str:
    """Return the settings of policy that rule applies, e.g. "dominance_n=2, dominance_k=90"."""

    def show(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    shown = [f"{name}={show(getattr(policy, name))}" for name in RULE_SETTINGS.get(rule, ())]
    if rule == "perturbation" and policy.custom_ptable is not None:
        shown.append("ptable=the TRE's own")
    return ", ".join(shown)


def with_settings(output: NodeOutput, policy: DisclosurePolicy) -> NodeOutput:
    """Return output with each rule's policy setting filled in (rule_setting)."""
    rules = tuple(
        r if r.setting else replace(r, setting=rule_setting(r.rule, policy)) for r in output.rules
    )
    return replace(output, rules=rules)


def public_rules(output: NodeOutput) -> tuple[RuleResult, ...]:
    """Return the rules as a researcher may see them: family, verdict, fixed words.

    A blocked output shows only the families that failed, so it says nothing about which
    other rules passed (a tracker would use that to tune a padding set). The review
    family keeps its words: they are the TRE's (its hold setting, or the output checker's
    decision and reason, written for the researcher), never computed from the data.
    """
    shown = output.rules
    if output.outcome is Outcome.BLOCKED:
        shown = tuple(r for r in output.rules if not r.passed)
    seen: dict[str, RuleResult] = {}
    for r in shown:
        if r.rule == REVIEW:
            seen[f"{REVIEW}:{len(seen)}"] = r
            continue
        words = PLAIN_WORDS.get(r.rule, "a disclosure rule of the TRE")
        prior = seen.get(r.rule)
        passed = r.passed and (prior is None or prior.passed)
        seen[r.rule] = RuleResult(r.rule, passed, words, r.setting)
    return tuple(seen.values())


def public_output(output: NodeOutput) -> NodeOutput:
    """Return output as it may leave: public rules, and a generic text for a blocked one
    (unless the TRE's output checker denied it: their reason is for the researcher)."""
    error = output.error
    denied = any(r.rule == REVIEW and not r.passed for r in output.rules)
    if output.outcome is Outcome.BLOCKED and not denied:
        error = GENERIC_BLOCKED
    return NodeOutput(output.outcome, output.payload, public_rules(output), error)
