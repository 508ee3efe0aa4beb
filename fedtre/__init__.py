"""fedtre: federated analysis across Trusted Research Environments.

The researcher's entry point is `fedtre.Client`; `fedtre.testing.LocalNetwork` runs a
whole network in-process for rehearsal and tests.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `fedtre` commands that never use the client do not pay for importing it.
    if name == "Client":
        from fedtre.client import Client

        return Client
    raise AttributeError(f"module 'fedtre' has no attribute {name!r}")
