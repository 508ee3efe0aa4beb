"""The disclosure policy: defaults no weaker than UK practice, validation, and no loosening."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from fedtre.disclosure import DisclosurePolicy
from fedtre.errors import InvalidRequest


def test_defaults_are_no_weaker_than_sacro_opensafely_and_bunny() -> None:
    policy = DisclosurePolicy()

    assert policy.threshold == 10
    assert (policy.rounding, policy.rounding_base) == ("nearest", 5)
    assert policy.zeros_disclosive is True
    assert (policy.dominance_n, policy.dominance_k) == (2, 90.0)
    assert policy.p_percent == 10.0
    assert policy.min_residual_df == 10
    assert policy.hold_for_review == ()


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ({"threshold": -1}, "threshold must be 0 or more"),
        ({"threshold": 2.5}, "threshold must be a whole number"),
        ({"rounding_base": 0}, "rounding_base must be 1 or more"),
        ({"rounding": "banker"}, "rounding must be one of"),
        ({"rounding": "midpoint", "rounding_base": 5}, "even rounding_base"),
        ({"zeros_disclosive": "yes"}, "zeros_disclosive must be true or false"),
        ({"dominance_n": 11}, "at most 10"),
        ({"dominance_k": 0}, "dominance_k must be above 0"),
        ({"dominance_k": 101}, "at most 100"),
        ({"p_percent": -1}, "p_percent must be at least 0"),
        ({"hold_for_review": "summary"}, "hold_for_review must be a list"),
        ({"dominance": 0.9}, "unknown disclosure policy setting"),
    ],
)
def test_impossible_settings_are_refused_with_an_example(
    bad: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        DisclosurePolicy.from_mapping(bad)


def test_a_project_may_make_the_policy_stricter() -> None:
    policy = DisclosurePolicy.from_mapping(
        {
            "hold_for_review": ["summary"],
            "projects": {"rare-disease": {"threshold": 20, "hold_for_review": ["crosstab"]}},
        }
    )

    strict = policy.for_project("rare-disease")
    assert strict.threshold == 20
    assert strict.rounding_base == 5  # inherited from the TRE's policy
    assert set(strict.hold_for_review) == {"summary", "crosstab"}  # adds to the TRE's holds
    assert policy.for_project("other").threshold == 10
    assert policy.for_project("other").projects == ()


def test_hold_true_in_a_project_holds_every_analysis() -> None:
    policy = DisclosurePolicy.from_mapping({"projects": {"p": {"hold_for_review": True}}})
    assert policy.for_project("p").holds("count")
    assert not policy.for_project("q").holds("count")


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"threshold": 9}, "threshold 9 is below 10"),
        ({"rounding_base": 1}, "rounding_base 1 is below 5"),
        ({"zeros_disclosive": False}, "zeros_disclosive false"),
        ({"dominance_n": 1}, "dominance_n 1 is below 2"),
        ({"dominance_n": 0}, "dominance_n 0 is below 2"),
        ({"dominance_k": 95}, "dominance_k 95 is above 90"),
        ({"p_percent": 5}, "p_percent 5 is below 10"),
        ({"min_residual_df": 5}, "min_residual_df 5 is below 10"),
        ({"rounding": "midpoint", "rounding_base": 6}, "rounding 'midpoint' differs"),
    ],
)
def test_a_project_can_never_loosen_the_tre_policy(override: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidRequest, match="would loosen") as err:
        DisclosurePolicy.from_mapping({"projects": {"p": override}})
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("override", "stricter"),
    [
        ({"threshold": 11}, True),
        ({"dominance_n": 3}, True),
        ({"dominance_k": 80}, True),
        ({"p_percent": 15}, True),
        ({"threshold": 10}, True),  # equal is allowed
    ],
)
def test_equal_or_stricter_overrides_pass(override: dict[str, Any], stricter: bool) -> None:
    base = DisclosurePolicy()
    assert (DisclosurePolicy(**override).looser_than(base) == []) is stricter


def test_holds_names_analyses_or_star() -> None:
    assert DisclosurePolicy(hold_for_review=("summary",)).holds("summary")
    assert not DisclosurePolicy(hold_for_review=("summary",)).holds("count")
    assert DisclosurePolicy(hold_for_review=("*",)).holds("count")


def test_toml_lines_round_trip_through_from_mapping() -> None:
    policy = DisclosurePolicy.from_mapping(
        {
            "threshold": 12,
            "rounding": "midpoint",
            "rounding_base": 6,
            "p_percent": 12.5,
            "hold_for_review": ["summary"],
            "projects": {"p-1": {"threshold": 20}},
        }
    )
    text = "\n".join(["[policy]", *policy.to_toml_lines(), *policy.project_toml_tables()])

    parsed = tomllib.loads(text)["policy"]

    assert DisclosurePolicy.from_mapping(parsed) == policy
