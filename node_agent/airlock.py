"""The airlock: outputs held for the TRE's output checker, their decisions, and their delivery.

An output is held when the TRE's policy holds its analysis (or its project), or when a
rule asks for a person (negative values in a dominance check). The agent then records
it in its state database, reports HELD to the coordinator (the researcher's job waits,
showing the node as held) and sends nothing else. The output checker, inside the TRE,
uses `fedtre agent inbox list|show|approve|deny` (fedtre.cli.inbox) on the same state
database; the decision is recorded with who decided and why. The running agent's
Courier notices each decision within a poll interval and reports the final outcome:
the held output itself when approved, BLOCKED with the checker's reason when denied.
A decision is reported until the coordinator has it, across restarts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from fedtre.analyses.base import NodeOutput
from fedtre.errors import InvalidRequest
from node_agent.state import AgentState, Review

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0

# Reports one task's final output; True once the coordinator has it (or has refused it
# for good), False when it must be tried again later.
Reporter = Callable[[str, NodeOutput], bool]


class Airlock:
    """The output checker's view of held outputs in an agent's state database."""

    def __init__(self, state: AgentState) -> None:
        self._state = state

    def list(self, *, pending_only: bool = True) -> list[Review]:
        """Return held outputs, oldest first: those awaiting a decision, or all."""
        return self._state.reviews(pending_only=pending_only)

    def show(self, task_id: str) -> Review:
        """Return one held output with what would leave and its rules; NotFound if none."""
        return self._state.review(task_id)

    def approve(self, task_id: str, *, checker: str, reason: str = "") -> NodeOutput:
        """Release a held output; the running agent sends it. Raises NotFound or Conflict."""
        output = self._state.decide(
            task_id, approve=True, checker=_checker(checker), reason=reason.strip()
        )
        logger.info("held output approved", extra={"task_id": task_id, "checker": checker})
        return output

    def deny(self, task_id: str, *, checker: str, reason: str) -> NodeOutput:
        """Block a held output with a reason the researcher sees. Raises NotFound or Conflict."""
        if not reason or not reason.strip():
            raise InvalidRequest(
                "give the researcher a reason, e.g. --reason 'the table reveals a rare condition'"
            )
        output = self._state.decide(
            task_id, approve=False, checker=_checker(checker), reason=reason.strip()
        )
        logger.info("held output denied", extra={"task_id": task_id, "checker": checker})
        return output


def _checker(name: str) -> str:
    if not name or not name.strip():
        raise InvalidRequest("the output checker's name is required, e.g. --checker j.smith")
    return name.strip()


class Courier:
    """Polls the state database and reports each decided output once the coordinator takes it."""

    def __init__(
        self,
        state: AgentState,
        report: Reporter,
        *,
        interval: float = POLL_INTERVAL_S,
        on_reported: Callable[[NodeOutput], None] | None = None,
    ) -> None:
        """on_reported is called with each final output the coordinator took (metrics)."""
        self._state = state
        self._report = report
        self._on_reported = on_reported
        self._interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def deliver_once(self) -> int:
        """Report every decided, unreported output; return how many reached the coordinator."""
        delivered = 0
        for task_id, output in self._state.decided_unreported():
            if self._stopping.is_set():
                break
            if self._report(task_id, output):
                self._state.mark_reported(task_id)
                delivered += 1
                if self._on_reported is not None:
                    self._on_reported(output)
                logger.info(
                    "reviewed output reported",
                    extra={"task_id": task_id, "outcome": output.outcome.value},
                )
        return delivered

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.deliver_once()
            except Exception:
                logger.exception("reporting reviewed outputs failed; retrying")
            self._stopping.wait(self._interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="airlock-courier", daemon=True)
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        """Stop polling; with wait, also wait for a report in flight to return."""
        self._stopping.set()
        if wait and self._thread is not None:
            self._thread.join(timeout=10)
