"""The agent's signature on each output it releases (fedtre.identity.provenance).

Signed with the key of the agent's current certificate, read from its bundle at each
release so that a rotated certificate signs from the moment the agent uses it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import sqlalchemy as sa

from fedtre.analyses.base import NodeOutput
from fedtre.disclosure.release import public_rules, researcher_view
from fedtre.identity import provenance
from fedtre.identity.provenance import Provenance, ProvenanceError
from fedtre.identity.tls import TlsFiles
from node_agent.state import RELEASING, AgentState, tasks

logger = logging.getLogger(__name__)


class ResultSigner:
    """Signs the provenance of released outputs for one node."""

    def __init__(
        self,
        node_id: str,
        files: TlsFiles,
        state: AgentState,
        agent_version: str,
        dataset_versions: Mapping[str, str],
    ) -> None:
        self.node_id = node_id
        self._files = files
        self._state = state
        self.agent_version = agent_version
        self._versions = dict(dataset_versions)

    def __call__(self, task_id: str, output: NodeOutput) -> Provenance | None:
        """Return the signed provenance of a released output; None for any other outcome."""
        if output.outcome not in RELEASING:
            return None
        with self._state.engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    tasks.c.job_id,
                    tasks.c.project,
                    tasks.c.analysis,
                    tasks.c.dataset,
                    tasks.c.params,
                ).where(tasks.c.task_id == task_id)
            ).first()
        if row is None:
            logger.warning(
                "no record of a released task; sent unsigned", extra={"task_id": task_id}
            )
            return None
        try:
            cert = self._files.cert.read_bytes()
            key = provenance.load_private_key(self._files.key.read_bytes())
        except (OSError, ValueError, ProvenanceError):
            logger.exception("cannot read this agent's key; output sent unsigned")
            return None
        return provenance.sign(
            key,
            cert,
            node=self.node_id,
            task_id=task_id,
            job_id=int(row.job_id),
            project=row.project,
            analysis=row.analysis,
            dataset=row.dataset,
            dataset_version=self._versions.get(row.dataset, ""),
            agent_version=self.agent_version,
            outcome=output.outcome.value,
            # what the researcher receives: the payload less its model statistics
            payload=researcher_view(row.analysis, output.payload),
            # the rules exactly as they leave (connection.report_from_output)
            rules=public_rules(output),
            params=row.params,
        )
