"""Disclosure control: the policy a TRE applies to every output before it leaves."""

from fedtre.disclosure.policy import DisclosurePolicy

__all__ = ["DisclosurePolicy"]
