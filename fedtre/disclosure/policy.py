"""A TRE's disclosure policy: every setting, its default, and the rule that no override loosens it.

The defaults are no weaker than UK practice (SACRO/ACRO, OpenSAFELY, Bunny): a threshold
of 10, rounding to 5, the NK rule with n = 2 and k = 90%, the p% rule with p = 10, zero
cells treated as disclosive, and 10 residual degrees of freedom for models. docs/disclosure.md
explains each setting and the attack it stops.

A policy may carry per-project overrides. Each is merged over the base policy and must be
at least as strict in every setting; a looser one is an error when the policy is built
(at agent start-up), so nothing a project asks for, and nothing from the coordinator, can
weaken what the TRE set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

from fedtre.disclosure.cellkey import PTable
from fedtre.errors import InvalidRequest

DEFAULT_THRESHOLD = 10
DEFAULT_ROUNDING_BASE = 5
DEFAULT_ROUNDING = "nearest"
DEFAULT_DOMINANCE_N = 2
DEFAULT_DOMINANCE_K = 90.0
DEFAULT_P_PERCENT = 10.0
DEFAULT_MIN_RESIDUAL_DF = 10
DEFAULT_PERTURBATION = "cell_key"
DEFAULT_NOISE_DEVIATION = 3
DEFAULT_NOISE_VARIANCE = 2.0
DEFAULT_MAGNITUDE_NOISE = 0.5

PERTURBATIONS = ("cell_key", "rounding")
# The magnitude-noise key of a policy built without the agent's secret (tests, tools):
# agents always set their own (node_agent.config).
UNKEYED = b"fedtre-unkeyed"

ROUNDING_SCHEMES = ("nearest", "midpoint")
# The largest NK n a policy may set: analyses fetch this many top contributors per group.
MAX_DOMINANCE_N = 10
# hold_for_review entry meaning "every analysis".
ALL_ANALYSES = "*"

_SETTINGS = (
    "threshold",
    "rounding_base",
    "rounding",
    "zeros_disclosive",
    "dominance_n",
    "dominance_k",
    "p_percent",
    "min_residual_df",
    "hold_for_review",
    "perturbation",
    "noise_deviation",
    "noise_variance",
    "magnitude_noise",
    "categorical_only_models",
)
_EXAMPLES = {
    "threshold": "threshold = 10",
    "rounding_base": "rounding_base = 5",
    "rounding": 'rounding = "nearest"',
    "zeros_disclosive": "zeros_disclosive = true",
    "dominance_n": "dominance_n = 2",
    "dominance_k": "dominance_k = 90",
    "p_percent": "p_percent = 10",
    "min_residual_df": "min_residual_df = 10",
    "hold_for_review": 'hold_for_review = ["summary"]',
    "perturbation": 'perturbation = "cell_key"',
    "noise_deviation": "noise_deviation = 3",
    "noise_variance": "noise_variance = 2.0",
    "magnitude_noise": "magnitude_noise = 0.5",
    "categorical_only_models": "categorical_only_models = false",
}


@dataclass(frozen=True)
class DisclosurePolicy:
    """The disclosure settings an agent applies to every output.

    threshold: every released count, cell, margin and the n behind a statistic is at least
        this; a mean needs n >= threshold and a standard deviation n - 1 >= threshold.
    rounding_base, rounding: released counts are rounded after suppression, "nearest"
        (to the nearest multiple of rounding_base, an exact half up; base 1 is exact) or
        "midpoint" (bins of width rounding_base, released as the bin's midpoint; with base
        6: 0 -> 0, 1-6 -> 3, 7-12 -> 9).
    zeros_disclosive: zero cells of a table are withheld, because a zero reveals an
        attribute of everyone in its row or column.
    dominance_n, dominance_k: NK rule for sums and means: the largest n contributors may not
        make up k% or more of a group's total (n = 0 turns the rule off).
    p_percent: p% rule: the total less the two largest contributors must be at least p% of
        the largest (0 turns the rule off).
    min_residual_df: models need at least this many residual degrees of freedom.
    hold_for_review: analyses whose outputs wait for the TRE's output checker ("*" = all).
    perturbation: how released counts are protected beyond the threshold: "cell_key"
        (the default: consistent noise of at most noise_deviation, variance
        noise_variance; fedtre.disclosure.cellkey) or "rounding" (rounding_base/rounding).
    magnitude_noise: sums and means carry consistent noise of up to this fraction of the
        group's largest contribution (0 turns it off).
    categorical_only_models: allow models with no numeric covariate (intercept only, or
        categorical covariates only), whose exact fit reproduces a table (off by default).
    custom_ptable: the TRE's own perturbation table, replacing the default one.
    secret_tag: the key of magnitude noise, derived from the TRE's secret (never shown).
    projects: stricter settings for named projects, as (name, policy) pairs.
    """

    threshold: int = DEFAULT_THRESHOLD
    rounding_base: int = DEFAULT_ROUNDING_BASE
    rounding: str = DEFAULT_ROUNDING
    zeros_disclosive: bool = True
    dominance_n: int = DEFAULT_DOMINANCE_N
    dominance_k: float = DEFAULT_DOMINANCE_K
    p_percent: float = DEFAULT_P_PERCENT
    min_residual_df: int = DEFAULT_MIN_RESIDUAL_DF
    hold_for_review: tuple[str, ...] = ()
    perturbation: str = DEFAULT_PERTURBATION
    noise_deviation: int = DEFAULT_NOISE_DEVIATION
    noise_variance: float = DEFAULT_NOISE_VARIANCE
    magnitude_noise: float = DEFAULT_MAGNITUDE_NOISE
    categorical_only_models: bool = False
    custom_ptable: PTable | None = field(default=None, repr=False, compare=False)
    secret_tag: bytes = field(default=UNKEYED, repr=False, compare=False)
    projects: tuple[tuple[str, DisclosurePolicy], ...] = ()

    def __post_init__(self) -> None:
        _whole("threshold", self.threshold, 0)
        _whole("rounding_base", self.rounding_base, 1)
        if self.rounding not in ROUNDING_SCHEMES:
            raise InvalidRequest(
                f"policy rounding must be one of {list(ROUNDING_SCHEMES)}, "
                f'e.g. rounding = "nearest" (got {self.rounding!r})'
            )
        if self.rounding == "midpoint" and self.rounding_base % 2:
            raise InvalidRequest(
                'policy rounding = "midpoint" needs an even rounding_base (bins of that width '
                "are released as their midpoint), e.g. rounding_base = 6 for midpoint-6"
            )
        if not isinstance(self.zeros_disclosive, bool):
            raise InvalidRequest("policy zeros_disclosive must be true or false")
        _whole("dominance_n", self.dominance_n, 0)
        if self.dominance_n > MAX_DOMINANCE_N:
            raise InvalidRequest(f"policy dominance_n must be at most {MAX_DOMINANCE_N}")
        _percent("dominance_k", self.dominance_k, low=0.0, high=100.0, low_open=True)
        _percent("p_percent", self.p_percent, low=0.0, high=100.0, low_open=False)
        _whole("min_residual_df", self.min_residual_df, 0)
        holds = self.hold_for_review
        if isinstance(holds, str) or not all(isinstance(a, str) and a for a in holds):
            raise InvalidRequest(
                'policy hold_for_review must be a list of analysis names, e.g. ["summary"], '
                'or ["*"] for every analysis'
            )
        if not isinstance(self.categorical_only_models, bool):
            raise InvalidRequest("policy categorical_only_models must be true or false")
        if self.perturbation not in PERTURBATIONS:
            raise InvalidRequest(
                f"policy perturbation must be one of {list(PERTURBATIONS)}, "
                f'e.g. perturbation = "cell_key" (got {self.perturbation!r})'
            )
        _whole("noise_deviation", self.noise_deviation, 0)
        _percent("noise_variance", self.noise_variance, low=0.0, high=1e6, low_open=False)
        _percent("magnitude_noise", self.magnitude_noise, low=0.0, high=10.0, low_open=False)
        object.__setattr__(self, "noise_variance", float(self.noise_variance))
        object.__setattr__(self, "magnitude_noise", float(self.magnitude_noise))
        if self.perturbation == "cell_key" and self.custom_ptable is None:
            self.ptable  # noqa: B018  (raises InvalidRequest on an impossible D and V)
        object.__setattr__(self, "hold_for_review", tuple(holds))
        object.__setattr__(self, "dominance_k", float(self.dominance_k))
        object.__setattr__(self, "p_percent", float(self.p_percent))
        for name, override in self.projects:
            problems = override.looser_than(self)
            if problems:
                raise InvalidRequest(
                    f"the policy of project {name!r} would loosen this TRE's policy: "
                    + "; ".join(problems)
                    + "; a project may only make the policy stricter"
                )
            if override.projects:
                raise InvalidRequest(f"the policy of project {name!r} cannot have projects")

    # -- reading -------------------------------------------------------------------------

    @cached_property
    def ptable(self) -> PTable:
        """The perturbation table counts are released through (cell_key perturbation)."""
        if self.custom_ptable is not None:
            return self.custom_ptable
        return PTable.maximum_entropy(
            threshold=self.threshold,
            deviation=self.noise_deviation,
            variance=self.noise_variance,
        )

    def for_project(self, project: str) -> DisclosurePolicy:
        """Return the policy that applies to `project`: its override, or this policy."""
        for name, override in self.projects:
            if name == project:
                return override
        return replace(self, projects=()) if self.projects else self

    def keyed(
        self, *, secret_tag: bytes | None = None, custom_ptable: PTable | None = None
    ) -> DisclosurePolicy:
        """Return this policy (and its project overrides) with the TRE's secret or table set."""
        changes: dict[str, Any] = {}
        if secret_tag is not None:
            changes["secret_tag"] = secret_tag
        if custom_ptable is not None:
            changes["custom_ptable"] = custom_ptable
        projects = tuple((name, replace(o, **changes)) for name, o in self.projects)
        return replace(self, **changes, projects=projects)

    def holds(self, analysis: str) -> bool:
        """Return True when outputs of `analysis` wait for the TRE's output checker."""
        return ALL_ANALYSES in self.hold_for_review or analysis in self.hold_for_review

    @property
    def dominance_on(self) -> bool:
        """True when either dominance rule (NK or p%) applies."""
        return self.dominance_n > 0 or self.p_percent > 0

    def looser_than(self, floor: DisclosurePolicy) -> list[str]:
        """Return each setting in which this policy is looser than `floor` (empty: none)."""
        problems: list[str] = []

        def less(name: str, mine: float, theirs: float) -> None:
            if mine < theirs:
                problems.append(f"{name} {mine:g} is below {theirs:g}")

        less("threshold", self.threshold, floor.threshold)
        if self.rounding != floor.rounding:
            problems.append(f"rounding {self.rounding!r} differs from {floor.rounding!r}")
        less("rounding_base", self.rounding_base, floor.rounding_base)
        if floor.zeros_disclosive and not self.zeros_disclosive:
            problems.append("zeros_disclosive false where it is true")
        # NK with a larger n is stricter (the top n+1 always hold at least the top n's share),
        # but n = 0 turns it off.
        if floor.dominance_n > 0 and self.dominance_n < floor.dominance_n:
            problems.append(f"dominance_n {self.dominance_n} is below {floor.dominance_n}")
        if floor.dominance_n > 0 and self.dominance_k > floor.dominance_k:
            problems.append(f"dominance_k {self.dominance_k:g} is above {floor.dominance_k:g}")
        less("p_percent", self.p_percent, floor.p_percent)
        less("min_residual_df", self.min_residual_df, floor.min_residual_df)
        if self.perturbation != floor.perturbation:
            problems.append(
                f"perturbation {self.perturbation!r} differs from {floor.perturbation!r}"
            )
        less("noise_deviation", self.noise_deviation, floor.noise_deviation)
        less("noise_variance", self.noise_variance, floor.noise_variance)
        less("magnitude_noise", self.magnitude_noise, floor.magnitude_noise)
        if self.categorical_only_models and not floor.categorical_only_models:
            problems.append("categorical_only_models true where it is false")
        if self.custom_ptable is not floor.custom_ptable:
            problems.append("a project cannot change the TRE's perturbation table")
        if ALL_ANALYSES not in self.hold_for_review:
            dropped = sorted(set(floor.hold_for_review) - set(self.hold_for_review))
            if dropped:
                problems.append(f"hold_for_review leaves out {dropped}")
        return problems

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DisclosurePolicy:
        """Build a policy from a config mapping; "projects" maps names to override mappings.

        Raises InvalidRequest on unknown keys, impossible values, or a project override
        looser than the base policy.
        """
        known = {*_SETTINGS, "projects"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidRequest(
                f"unknown disclosure policy setting(s) {unknown}; known settings: {sorted(known)}"
            )
        settings = {k: v for k, v in values.items() if k != "projects"}
        if "hold_for_review" in settings:
            settings["hold_for_review"] = _holds(settings["hold_for_review"])
        base = cls(**settings)
        projects = values.get("projects") or {}
        if not isinstance(projects, Mapping):
            raise InvalidRequest("policy projects must map project names to their settings")
        overrides: list[tuple[str, DisclosurePolicy]] = []
        for name, override in projects.items():
            if not isinstance(name, str) or not name:
                raise InvalidRequest("policy project names must be non-empty strings")
            if not isinstance(override, Mapping):
                raise InvalidRequest(f"the policy of project {name!r} must be a table of settings")
            bad = sorted(set(override) - set(_SETTINGS))
            if bad:
                raise InvalidRequest(
                    f"unknown setting(s) {bad} in the policy of project {name!r}; "
                    f"known settings: {sorted(_SETTINGS)}"
                )
            changes = dict(override)
            if "hold_for_review" in changes:
                # A project's holds add to the TRE's; true holds every analysis of the project.
                changes["hold_for_review"] = tuple(
                    dict.fromkeys(base.hold_for_review + _holds(changes["hold_for_review"]))
                )
            overrides.append((name, replace(base, **changes)))
        return replace(base, projects=tuple(overrides)) if overrides else base

    def to_toml_lines(self) -> list[str]:
        """Return this policy's settings as TOML lines for the [policy] table.

        Project overrides are returned separately by project_toml_tables().
        """
        return [_toml_line(name, getattr(self, name)) for name in _SETTINGS]

    def project_toml_tables(self, prefix: str = "policy.projects") -> list[str]:
        """Return each project override as a TOML table of the settings it changes."""
        lines: list[str] = []
        for name, override in self.projects:
            lines += ["", f"[{prefix}.{_toml_key(name)}]"]
            for setting in _SETTINGS:
                value = getattr(override, setting)
                if value != getattr(self, setting):
                    lines.append(_toml_line(setting, value))
        return lines


def _holds(value: Any) -> tuple[str, ...]:
    if value is True:
        return (ALL_ANALYSES,)
    if value is False:
        return ()
    if isinstance(value, list | tuple) and all(isinstance(a, str) and a for a in value):
        return tuple(value)
    raise InvalidRequest(
        'policy hold_for_review must be a list of analysis names, e.g. ["summary"], ["*"] '
        "for every analysis, or (in a project's policy) true"
    )


def _whole(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"policy {name} must be a whole number, e.g. {_EXAMPLES[name]}")
    if value < low:
        raise InvalidRequest(
            f"policy {name} must be {low} or more, e.g. {_EXAMPLES[name]} (the default)"
        )


def _percent(name: str, value: Any, *, low: float, high: float, low_open: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"policy {name} must be a percentage, e.g. {_EXAMPLES[name]}")
    if value > high or value < low or (low_open and value == low):
        side = "above" if low_open else "at least"
        raise InvalidRequest(
            f"policy {name} must be {side} {low:g} and at most {high:g}, e.g. {_EXAMPLES[name]}"
        )


def _toml_key(name: str) -> str:
    import json

    return name if name.replace("_", "").replace("-", "").isalnum() else json.dumps(name)


def _toml_line(name: str, value: Any) -> str:
    import json

    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, tuple):
        text = "[" + ", ".join(json.dumps(v) for v in value) + "]"
    elif isinstance(value, str):
        text = json.dumps(value)
    else:
        text = str(value)
    return f"{name} = {text}"


# Every field but "projects" is a setting; keep the two lists in step.
assert {f.name for f in fields(DisclosurePolicy)} == {
    *_SETTINGS,
    "projects",
    "custom_ptable",
    "secret_tag",
}
