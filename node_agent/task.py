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
