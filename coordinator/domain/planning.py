"""Checking a submission against the catalogue and the nodes' advertised datasets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from coordinator.domain.model import (
    DEFAULT_DEADLINE_S,
    MAX_DEADLINE_S,
    JobSpec,
    Node,
    PauseChoice,
    Plan,
    Problem,
)
from fedtre.analyses import get_analysis
from fedtre.analyses.derived import resolve_schema
from fedtre.errors import InvalidRequest
from fedtre.identity.peer import NAME_PATTERN


def plan_job(
    analysis: str,
    dataset: str,
    params: Mapping[str, Any],
    nodes: Iterable[str],
    project: str,
    known_nodes: Mapping[str, Node],
    *,
    deadline_s: int = DEFAULT_DEADLINE_S,
    on_pause: PauseChoice = PauseChoice.WAIT,
) -> Plan:
    """Return the validated spec and every problem with it, all at once.

    Raises nothing for bad input: a dry run reports the problems, a submission refuses them.
    """
    problems: list[Problem] = []
    if not 1 <= deadline_s <= MAX_DEADLINE_S:
        problems.append(
            Problem(
                f"the deadline must be from 1 to {MAX_DEADLINE_S} seconds (7 days), "
                f"not {deadline_s}; leave it unset for the coordinator's default"
            )
        )
    normalised: dict[str, Any] = dict(params)
    try:
        impl = get_analysis(analysis)
        normalised = impl.validate(params)
    except InvalidRequest as exc:
        impl = None
        problems.append(Problem(str(exc)))
    if not dataset:
        problems.append(Problem("no dataset given; name one with dataset=... (see `fedtre nodes`)"))
    if not NAME_PATTERN.match(project):
        problems.append(
            Problem(
                "a project name is 1 to 63 lowercase letters, digits or '-', e.g. 'diabetes-2026'"
            )
        )

    targets = tuple(dict.fromkeys(nodes))
    if not targets:
        targets = tuple(
            sorted(n.node_id for n in known_nodes.values() if n.dataset(dataset) is not None)
        )
        if dataset and not targets:
            problems.append(
                Problem(
                    f"no node advertises dataset '{dataset}'; see `fedtre nodes` for what each node offers"
                )
            )
    for node_id in targets:
        node = known_nodes.get(node_id)
        if node is None:
            problems.append(
                Problem(f"unknown node '{node_id}'; known nodes: {sorted(known_nodes)}", node_id)
            )
            continue
        if impl is not None and node.analyses and analysis not in node.analyses:
            problems.append(
                Problem(f"node '{node_id}' does not serve analysis '{analysis}'", node_id)
            )
        schema = node.dataset(dataset) if dataset else None
        if dataset and schema is None:
            offered = sorted(d.name for d in node.datasets)
            problems.append(
                Problem(
                    f"node '{node_id}' has no dataset '{dataset}'; it offers {offered}", node_id
                )
            )
        elif impl is not None and schema is not None and not _shape_problems(problems):
            # Derived variables (log(x), bands(age, [...])) get their types from the columns.
            schema, derived = resolve_schema(normalised, schema)
            problems.extend(Problem(m, node_id) for m in derived)
            if not derived:
                problems.extend(
                    Problem(m, node_id) for m in impl.schema_problems(normalised, schema)
                )
    spec = JobSpec(
        analysis, dataset, normalised, targets, project, deadline_s=deadline_s, on_pause=on_pause
    )
    return Plan(spec, tuple(problems))


def _shape_problems(problems: list[Problem]) -> bool:
    # Column checks only make sense once the parameters themselves are well formed.
    return any(not p.node for p in problems)
