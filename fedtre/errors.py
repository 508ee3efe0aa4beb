"""The errors fedtre raises, shared by the coordinator, the agent and the client.

FedtreError
 ├── InvalidRequest      the request is malformed or asks for something that does not exist
 │    └── NotFound       a named job, node or dataset does not exist
 ├── Unauthenticated     no valid identity was presented
 ├── PermissionDenied    the identity may not do this
 ├── Conflict            the request clashes with the current state (e.g. approving a rejected job)
 ├── DisclosureBlocked   a disclosure rule stopped an output from leaving a node
 └── Unavailable         a service cannot be reached or is not ready

Every message is public: it tells the user what is wrong and how to fix it, and never
carries data values, secrets or tracebacks.
"""

from __future__ import annotations


class FedtreError(Exception):
    """Base of every error fedtre raises on purpose."""


class InvalidRequest(FedtreError):
    """The request is malformed or refers to something that does not exist."""


class NotFound(InvalidRequest):
    """A named job, node, dataset or column does not exist."""


class Unauthenticated(FedtreError):
    """No valid identity was presented."""


class PermissionDenied(FedtreError):
    """The caller's identity may not do this."""


class Conflict(FedtreError):
    """The request clashes with the current state."""


class DisclosureBlocked(FedtreError):
    """A disclosure rule stopped an output from leaving a node."""


class Unavailable(FedtreError):
    """A service cannot be reached or is not ready."""
