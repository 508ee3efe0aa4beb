"""Disclosure control: the policy a TRE applies to every output before it leaves.

Modules: policy (settings and their defaults), rules (threshold, rounding, rule names),
tables (primary and secondary suppression), dominance (NK and p% rules), differencing
(cohort rules and memory), models, survival and distributions (rules for the analyses
that fit models or describe distributions). docs/disclosure.md explains each rule.
"""

# The rule modules use fedtre.analyses.base, whose package imports analyses that use
# the rule modules: load the catalogue first, so either package may be imported first.
import fedtre.analyses  # noqa: F401  (import order, see above)
from fedtre.disclosure.policy import DisclosurePolicy

__all__ = ["DisclosurePolicy"]
