"""The release stage: only values that passed their kind's rule can be sealed, and what a
researcher sees of rules says nothing that depends on the data."""

from __future__ import annotations

import pytest

from fedtre.analyses.base import NodeOutput, Outcome, RuleResult
from fedtre.disclosure import DisclosurePolicy, release
from fedtre.disclosure.release import Kind, UndeclaredValue

POLICY = DisclosurePolicy()
FIELDS = {
    "column": Kind.PARAMETER,
    "groups.*.0": Kind.LABEL,
    "groups.*.1": Kind.COUNT,
    "groups.*.2": Kind.MAGNITUDE,
    "edges.*": Kind.BOUND,
    "xtx.*.*": Kind.MODEL,
}


def test_a_payload_of_released_values_seals_to_plain_json() -> None:
    payload = {
        "column": "sbp",
        "groups": [[release.label("F"), release.count(40, 17, POLICY), release.magnitude(1.5)]],
        "edges": [release.bound(120.0, 5.0)],
        "xtx": [release.models([1.0, 2.0])],
    }
    sealed = release.seal("summary", payload, FIELDS)
    assert sealed["groups"][0][0] == "F" and type(sealed["groups"][0][0]) is str
    assert type(sealed["groups"][0][1]) is int and abs(sealed["groups"][0][1] - 40) <= 3
    assert sealed["edges"] == [120.0] and sealed["xtx"] == [[1.0, 2.0]]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"groups": [["F", 40, None]]}, "label that did not pass"),
        ({"groups": [[None, 40, None]]}, "count that did not pass"),
        ({"groups": [[None, None, 1.5]]}, "magnitude that did not pass"),
        ({"edges": [121.3]}, "bound that did not pass"),
        ({"minimum": 3}, "no declared kind"),
        ({"column": release.count(40, 1, POLICY)}, "declared a parameter"),
    ],
)
def test_a_value_that_skipped_the_release_stage_is_refused(payload: dict, problem: str) -> None:
    with pytest.raises(UndeclaredValue, match=problem):
        release.seal("summary", payload, FIELDS)


def test_a_bound_must_be_a_grid_point() -> None:
    assert release.bound(45.0, 5.0) == 45.0
    with pytest.raises(ValueError, match="not on the grid"):
        release.bound(45.2, 5.0)


def test_rounding_remains_a_policy_choice() -> None:
    rounding = DisclosurePolicy(perturbation="rounding", rounding_base=5)
    assert [release.count(n, 0, rounding) for n in (9, 12, 13)] == [None, 10, 15]


def test_the_same_cell_key_always_gives_the_same_answer() -> None:
    answers = {release.count(137, 201, POLICY) for _ in range(20)}
    assert len(answers) == 1


def test_magnitude_noise_is_fixed_by_the_cell_key_and_bounded_by_the_largest_value() -> None:
    noisy = [release.magnitude_total(1000.0, 80.0, key, POLICY, slot="sum:x") for key in range(256)]
    assert all(abs(v - 1000.0) <= POLICY.magnitude_noise * 80.0 for v in noisy)
    assert len(set(noisy)) > 200  # unrelated keys, unrelated noise
    assert release.magnitude_total(1000.0, 80.0, 7, POLICY, slot="sum:x") == noisy[7]


def test_a_blocked_output_shows_only_its_failed_families_in_fixed_words() -> None:
    rules = (
        RuleResult("cohort_size", True, "the filter selects, and leaves out, at least 10"),
        RuleResult("level_counts", False, "level(s) postcode = ZZ9 have fewer than 10 records"),
        RuleResult("level_counts", False, "level(s) ward = W1 have fewer than 10 records"),
    )
    public = release.public_output(NodeOutput(Outcome.BLOCKED, {}, rules, "3 records"))
    assert [r.rule for r in public.rules] == ["level_counts"]
    shown = " ".join(r.detail for r in public.rules) + public.error
    assert "ZZ9" not in shown and "W1" not in shown and "3" not in shown and "10" not in shown
    assert "cohort" not in shown


def test_a_released_output_shows_every_family_in_fixed_words() -> None:
    rules = (
        RuleResult("threshold", False, "2 of 12 cells have fewer than 10 records; withheld"),
        RuleResult("secondary_suppression", False, "1 more cell withheld"),
    )
    public = release.public_output(NodeOutput(Outcome.SUPPRESSED, {"n": 1}, rules))
    assert [r.rule for r in public.rules] == ["threshold", "secondary_suppression"]
    assert all(r.detail == release.PLAIN_WORDS[r.rule] for r in public.rules)
