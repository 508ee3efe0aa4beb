"""An automatic approval over a real network (in-process): the approval, the signed grant
and the queued tasks are committed together, with the same audit entries as ever.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from fedtre.errors import FedtreError
from fedtre.testing import LocalNetwork

FRAME = pd.DataFrame({"age": list(range(20, 80)) * 2, "sex": ["F", "M"] * 60})


@pytest.fixture(scope="module")
def network() -> Iterator[LocalNetwork]:
    with LocalNetwork(
        {"tre-a": {"cohort": FRAME}, "tre-b": {"cohort": FRAME}},
        policy={"threshold": 0, "rounding_base": 1, "perturbation": "rounding"},
    ) as net:
        yield net


def job_events(net: LocalNetwork, job_id: int) -> list[str]:
    governance = net.coordinator.store.governance
    return [e.event for e in governance.audit_entries() if e.subject == f"job:{job_id}"]


def test_an_automatic_approval_keeps_every_audit_entry(network):
    with network.client() as client:
        handle = client.submit("count", dataset="cohort")
        assert handle.result(timeout=20).state == "completed"

    assert job_events(network, handle.id) == [
        "job.submitted",
        "job.approval_recorded",
        "job.approved",
        "job.completed",
        "result.read",
    ]


def test_a_release_that_fails_leaves_no_approval_and_no_grant(network, monkeypatch):
    store = network.coordinator.store
    before = {j.id for j in store.list_jobs(None, 1000)}

    def broken(*args, **kwargs):
        raise RuntimeError("the database failed while queueing the tasks")

    # Given queueing the tasks fails after the approval and the grant were written
    monkeypatch.setattr(store, "approve_job", broken)
    with network.client() as client, pytest.raises(FedtreError):
        client.submit("count", dataset="cohort")
    monkeypatch.undo()

    # Then the job stays pending with neither an approval nor a grant: all or nothing
    (job,) = [j for j in store.list_jobs(None, 1000) if j.id not in before]
    assert job.state.value == "pending_approval"
    assert store.governance.approvers([job.id]) == {}
    assert store.governance.grant(job.id) is None
    assert job_events(network, job.id) == ["job.submitted"]
    # and the restart path approves it, once
    assert network.coordinator.service.resume_pending() == 1
    assert store.get_job(job.id).state.value == "running"
    assert job_events(network, job.id) == ["job.submitted", "job.approval_recorded", "job.approved"]
