"""Each rule a researcher sees names the TRE's setting it applied: its policy, never the data."""

from __future__ import annotations

from fedtre.analyses.base import NodeOutput, Outcome, RuleResult
from fedtre.disclosure import DisclosurePolicy
from fedtre.disclosure.release import public_rules, rule_setting, with_settings


def test_settings_come_from_the_policy_in_force():
    strict = DisclosurePolicy(threshold=20, dominance_n=3, dominance_k=80, zeros_disclosive=False)
    assert rule_setting("threshold", strict) == "threshold=20"
    assert rule_setting("cohort_size", strict) == "threshold=20"
    assert rule_setting("nk_dominance", strict) == "dominance_n=3, dominance_k=80"
    assert rule_setting("zero_cells", strict) == "zeros_disclosive=false"
    assert rule_setting("review", strict) == ""  # the checker's decision, not a setting


def test_public_rules_keep_the_settings_and_show_only_failed_families_when_blocked():
    policy = DisclosurePolicy(threshold=15)
    output = NodeOutput(
        Outcome.BLOCKED,
        {},
        (
            RuleResult("cohort_size", True, "412 records selected, 1 203 left out"),
            RuleResult("threshold", False, "cell (F, never) holds 3 records"),
        ),
    )
    shown = public_rules(with_settings(output, policy))
    assert [(r.rule, r.passed, r.setting) for r in shown] == [("threshold", False, "threshold=15")]
    assert "3 records" not in shown[0].detail
