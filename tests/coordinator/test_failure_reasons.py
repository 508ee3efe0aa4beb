"""A job that did not complete says why once: nodes with the same cause share one clause."""

from __future__ import annotations

from coordinator.domain.completion import describe_withheld
from fedtre.analyses import NodeOutput, Outcome, RuleResult

TIMED_OUT = NodeOutput(Outcome.FAILED, {}, error="no answer within the job's deadline (timed out)")
SMALL = NodeOutput(Outcome.BLOCKED, {}, (RuleResult("threshold", False, "below the minimum"),))


def test_a_cause_shared_by_every_node_is_stated_once() -> None:
    text = describe_withheld({"tre-a": TIMED_OUT, "tre-b": TIMED_OUT, "tre-c": TIMED_OUT})

    assert text == (
        "nodes 'tre-a', 'tre-b' and 'tre-c' failed "
        "(no answer within the job's deadline (timed out))"
    )
    assert text.count("timed out") == 1


def test_different_causes_each_get_their_own_clause() -> None:
    text = describe_withheld({"tre-b": SMALL, "tre-a": TIMED_OUT, "tre-c": SMALL})

    assert text == (
        "node 'tre-a' failed (no answer within the job's deadline (timed out)); "
        "nodes 'tre-b' and 'tre-c' blocked their output (threshold: below the minimum)"
    )


def test_nothing_withheld_says_nothing() -> None:
    assert describe_withheld({}) == ""


def test_a_checkers_denial_states_its_reason_once() -> None:
    # Given the output checker denied an output with a reason (as the agent reports it)
    denied = NodeOutput(
        Outcome.BLOCKED,
        {},
        (RuleResult("review", False, "denied by output checker carol: reveals a rare condition"),),
        error="the TRE's output checker did not release this output: reveals a rare condition",
    )

    # When the coordinator says why the node released nothing
    text = describe_withheld({"tre-a": denied})

    # Then the reason appears once, with who denied it
    assert text == (
        "node 'tre-a' blocked its output "
        "(review: denied by output checker carol: reveals a rare condition)"
    )
    assert text.count("reveals a rare condition") == 1
