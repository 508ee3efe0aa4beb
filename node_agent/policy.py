"""LocalPolicy: what this TRE serves, and the reasons it refuses a task."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from fedtre.analyses.base import Analysis, DatasetSchema
from fedtre.analyses.derived import policy_problems, resolve_schema
from fedtre.analyses.expressions import FEATURES
from fedtre.disclosure import DisclosurePolicy
from fedtre.errors import InvalidRequest, NotFound
from node_agent.config import AgentConfig
from node_agent.task import TaskSpec

Catalogue = Callable[[str], Analysis]


@dataclass(frozen=True)
class LocalPolicy:
    """The TRE's sovereignty: the coordinator can neither widen nor loosen any of this.

    analyses: the analyses this node serves, by name.
    disclosure: the disclosure policy applied to every output, with any stricter
        per-project settings (see disclosure_for).
    datasets: the declared datasets; undeclared datasets and columns do not exist.
    keys: per dataset, the column identifying records for differencing protection
        (datasets without one are identified by their declared values).
    projects: the projects this node serves; None serves every project the network
        approved ([governance] projects).
    derived: the functions and operators derived variables may use here ([policy]
        derived; fedtre.analyses.expressions.FEATURES); empty: no derived variables.
    """

    node_id: str
    analyses: Mapping[str, Analysis]
    disclosure: DisclosurePolicy
    datasets: Mapping[str, DatasetSchema]
    keys: Mapping[str, str] = field(default_factory=dict)
    projects: tuple[str, ...] | None = None
    derived: frozenset[str] = frozenset(FEATURES)

    def __post_init__(self) -> None:
        object.__setattr__(self, "analyses", MappingProxyType(dict(self.analyses)))
        object.__setattr__(self, "datasets", MappingProxyType(dict(self.datasets)))
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    def disclosure_for(self, project: str) -> DisclosurePolicy:
        """Return the disclosure policy for a task of `project`: never looser than the TRE's."""
        return self.disclosure.for_project(project)

    @classmethod
    def from_config(cls, config: AgentConfig, catalogue: Catalogue | None = None) -> LocalPolicy:
        """Build the policy from config, resolving each allowed analysis in the catalogue.

        Raises InvalidRequest when the config allows an analysis the catalogue lacks.
        """
        if catalogue is None:
            from fedtre.analyses import get_analysis

            catalogue = get_analysis
        return cls(
            node_id=config.node_id,
            analyses=_resolve(config.analyses, catalogue),
            disclosure=config.policy,
            datasets={name: ds.schema for name, ds in config.datasets.items()},
            keys={
                name: key
                for name, ds in config.datasets.items()
                if (key := getattr(ds, "key", None))
            },
            projects=config.governance.projects,
            derived=frozenset(config.derived),
        )

    def check_task(self, task: TaskSpec) -> list[str]:
        """Return every reason this node refuses task; an empty list means it may run."""
        reasons: list[str] = []
        if task.node != self.node_id:
            reasons.append(
                f"task is addressed to node {task.node!r}, but this node is {self.node_id!r}"
            )
        if self.projects is not None and task.project not in self.projects:
            reasons.append(
                f"project {task.project!r} is not served by this node; "
                f"it serves {sorted(self.projects)}"
            )
        analysis = self.analyses.get(task.analysis)
        if analysis is None:
            reasons.append(
                f"analysis {task.analysis!r} is not served by this node; "
                f"it serves {sorted(self.analyses)}"
            )
        schema = self.datasets.get(task.dataset)
        if schema is None:
            reasons.append(
                f"dataset {task.dataset!r} is not declared by this node; "
                f"it declares {sorted(self.datasets)}"
            )
        if analysis is not None and schema is not None:
            try:
                params = analysis.validate(task.params)
            except InvalidRequest as exc:
                reasons.append(f"invalid parameters for {task.analysis!r}: {exc}")
            else:
                reasons.extend(policy_problems(params, schema, self.derived))
                schema, derived = resolve_schema(params, schema)
                reasons.extend(derived or analysis.schema_problems(params, schema))
        return reasons


def _resolve(names: Iterable[str], catalogue: Catalogue) -> dict[str, Analysis]:
    resolved: dict[str, Analysis] = {}
    for name in names:
        try:
            resolved[name] = catalogue(name)
        except NotFound as exc:
            raise InvalidRequest(
                f"[policy] analyses lists {name!r}, which this fedtre version does not provide "
                f"({exc}); remove it or upgrade fedtre"
            ) from exc
    return resolved
