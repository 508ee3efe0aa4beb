"""TaskSpec: one task as the agent's domain code sees it, converted from fedtre.v1.Task."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    """One task for this node: run `analysis` with `params` on the local `dataset`.

    params is the task's google.protobuf.Struct as a plain dict (numbers arrive as floats).
    """

    task_id: str
    job_id: int
    node: str
    analysis: str
    dataset: str
    params: Mapping[str, Any] = field(default_factory=dict)
    project: str = ""
    # The signed approval as received (node_agent.verify checks it before anything runs).
    grant: bytes = field(default=b"", repr=False)
    signature: bytes = field(default=b"", repr=False)
    # A round of a multi-round analysis: the coordinator's parameters for this round
    # (fedtre.analyses.iterative); None for single-round analyses.
    round: Mapping[str, Any] | None = None
