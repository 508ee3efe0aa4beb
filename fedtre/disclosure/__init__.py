"""Disclosure control: the policy a TRE applies to every output before it leaves.

Modules: release (the one release stage: every value that leaves, by its kind), cellkey
(the cell-key method: record keys, perturbation tables), policy (settings and their
defaults), rules (threshold, rounding, rule names), tables (primary and secondary
suppression), dominance (NK and p% rules), differencing (cohort rules and the memory of
described sets), models, survival and distributions (rules for the analyses that fit
models or describe distributions). docs/disclosure.md explains each rule.
"""

# The rule modules use fedtre.analyses.base, whose package imports analyses that use
# the rule modules: load the catalogue first, so either package may be imported first.
import fedtre.analyses  # noqa: F401  (import order, see above)
from fedtre.disclosure.policy import DisclosurePolicy

__all__ = ["DisclosurePolicy"]
