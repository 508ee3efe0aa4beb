"""A job fanned out over a real network (in-process, mutual TLS): the streams woken by it are
dispatched in one transaction, and every node's answer is recorded once.
"""

from __future__ import annotations

import pandas as pd

from fedtre.testing import LocalNetwork

FRAME = pd.DataFrame({"age": list(range(20, 80)) * 2, "sex": ["F", "M"] * 60})
NODES = [f"tre-{i}" for i in range(8)]


def test_the_streams_a_job_wakes_are_dispatched_together_and_answered_once():
    data = {node: {"cohort": FRAME} for node in NODES}
    with LocalNetwork(
        data, policy={"threshold": 0, "rounding_base": 1, "perturbation": "rounding"}
    ) as net:
        with net.client() as client:
            handle = client.submit("count", dataset="cohort")
            result = handle.result(timeout=60)
        registry = net.coordinator.metrics.registry

        def observed(le: str) -> float:
            labels = {"kind": "dispatch", "le": le}
            return registry.get_sample_value("fedtre_write_batch_size_bucket", labels) or 0

        batches_of_six_to_ten = observed("10.0") - observed("5.0")
        governance = net.coordinator.store.governance
        entries = list(governance.audit_entries())
        assert governance.verify_audit().ok

    assert result.state == "completed"
    assert int(result.combined["n"]) == len(FRAME) * len(NODES)  # pooled count
    job_tasks = [e for e in entries if e.details.get("job_id") == handle.id]
    dispatched = [e for e in job_tasks if e.event == "task.dispatched"]
    reported = [e for e in job_tasks if e.event == "task.reported"]
    assert sorted(e.details["node"] for e in dispatched) == sorted(NODES)
    # One transaction stamps one time on every entry it writes: all eight in one batch.
    assert len({e.at for e in dispatched}) == 1
    assert batches_of_six_to_ten >= 1  # the metric saw that batch of eight (and maybe more)
    # Each node's answer recorded exactly once, whatever batches the reports fell into.
    assert sorted(e.actor for e in reported) == sorted(NODES)
