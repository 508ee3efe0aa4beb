"""GetJob's wait over a real network (in-process): it answers once the job finishes, or
with the job still running once the wait is over, and refuses a wait out of bounds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pandas as pd
import pytest

from coordinator.rpc.job_waiters import JobWaiters
from fedtre.errors import InvalidRequest
from fedtre.testing import LocalNetwork
from fedtre.testing import eventually as _eventually

FRAME = pd.DataFrame({"age": list(range(20, 80)) * 2, "sex": ["F", "M"] * 60})
WAIT_S = 20.0


def eventually(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    _eventually(condition, timeout, interval=0.01)  # finer: these tests time waits


@pytest.fixture(scope="module")
def network() -> Iterator[LocalNetwork]:
    with LocalNetwork(
        {"tre-a": {"cohort": FRAME}, "tre-b": {"cohort": FRAME}},
        policy={"threshold": 0, "rounding_base": 1, "perturbation": "rounding"},
        ping_interval=1.0,
    ) as net:
        yield net


def waiters(net: LocalNetwork) -> JobWaiters:
    (listener,) = net.coordinator.service.on_job_changed
    return listener.__self__


class Waiting(threading.Thread):
    """A GetJob with a wait, in the background; .status and .seconds once it answers."""

    def __init__(self, net: LocalNetwork, job_id: int, wait: float, progress: bool = False) -> None:
        super().__init__(daemon=True)
        self.net, self.job_id, self.wait, self.progress = net, job_id, wait, progress
        self.status = None
        self.seconds = math.inf

    def run(self) -> None:
        with self.net.client() as client:
            start = time.monotonic()
            self.status = client.job(self.job_id, wait=self.wait, progress=self.progress)
            self.seconds = time.monotonic() - start


@contextmanager
def paused(network: LocalNetwork, *nodes: str) -> Iterator[None]:
    """The nodes take no task while paused, so a job to them stays running."""
    for node in nodes:
        network.agents[node].state.pause("operator", "holding a job for the test")
    try:
        with network.client("admin") as admin:
            eventually(
                lambda: all(n.status == "paused" for n in admin.nodes() if n.node_id in nodes)
            )
        yield
    finally:
        for node in nodes:
            network.agents[node].state.resume("operator")


@pytest.fixture
def paused_b(network) -> Iterator[None]:
    with paused(network, "tre-b"):
        yield


def test_a_wait_answers_as_soon_as_the_job_finishes(network, paused_b):
    # Given a job held running by a paused node, and a GetJob waiting up to 30 s on it
    with network.client() as client:
        handle = client.submit("count", dataset="cohort", on_pause="wait")
    waiting = Waiting(network, handle.id, 30.0)
    waiting.start()
    eventually(lambda: len(waiters(network)) == 1)
    assert waiting.status is None  # still waiting: the job cannot finish yet
    # When the node resumes and the job finishes
    network.agents["tre-b"].state.resume("operator")
    waiting.join(WAIT_S)
    # Then the wait answered with the finished job, long before its 30 s
    assert waiting.status is not None and waiting.status.state == "completed"
    assert waiting.seconds < 10
    assert len(waiters(network)) == 0  # nothing left registered


def test_a_wait_that_runs_out_answers_with_the_running_job(network, paused_b):
    with network.client() as client:
        handle = client.submit("count", dataset="cohort", on_pause="wait")
        start = time.monotonic()
        status = client.job(handle.id, wait=0.5)
        took = time.monotonic() - start
        assert status.state == "running"
        assert 0.5 <= took < 5
        assert len(waiters(network)) == 0
        client.cancel(handle.id, "done with it")


def test_a_cancellation_ends_the_wait(network, paused_b):
    with network.client() as client:
        handle = client.submit("count", dataset="cohort", on_pause="wait")
        waiting = Waiting(network, handle.id, 30.0)
        waiting.start()
        eventually(lambda: len(waiters(network)) == 1)
        client.cancel(handle.id, "not needed")
        waiting.join(WAIT_S)
        assert waiting.status is not None and waiting.status.state == "cancelled"
        assert waiting.seconds < 10


def test_without_a_wait_getjob_answers_at_once(network, paused_b):
    with network.client() as client:
        handle = client.submit("count", dataset="cohort", on_pause="wait")
        start = time.monotonic()
        assert client.job(handle.id).state == "running"
        assert time.monotonic() - start < 0.5
        client.cancel(handle.id, "done with it")


def test_handle_wait_returns_the_finished_job_and_times_out_when_it_cannot_finish(
    network, paused_b
):
    with network.client() as client:
        handle = client.submit("count", dataset="cohort", on_pause="wait")
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            handle.wait(timeout=0.6)
        assert 0.6 <= time.monotonic() - start < 5
        network.agents["tre-b"].state.resume("operator")
        assert handle.wait(timeout=WAIT_S).state == "completed"


@pytest.mark.parametrize("wait", [-1.0, 60.5, math.nan, math.inf])
def test_a_wait_out_of_bounds_is_refused(network, wait):
    with network.client() as client:
        handle = client.submit("count", dataset="cohort")
        with pytest.raises(InvalidRequest, match="wait_seconds"):
            client.job(handle.id, wait=wait)


def test_a_wait_for_progress_answers_when_a_node_finishes_its_task(network):
    with paused(network, "tre-a", "tre-b"):
        # Given a job neither node has taken, and a GetJob waiting up to 30 s for progress
        with network.client() as client:
            handle = client.submit("count", dataset="cohort", on_pause="wait")
        waiting = Waiting(network, handle.id, 30.0, progress=True)
        waiting.start()
        eventually(lambda: len(waiters(network)) == 1)
        # When one node resumes and does its task
        network.agents["tre-a"].state.resume("operator")
        waiting.join(WAIT_S)
        # Then the wait answered with the running job showing that node done
        assert waiting.status is not None and waiting.status.state == "running"
        assert waiting.status.tasks["tre-a"].state == "done"
        assert waiting.seconds < 10
        with network.client() as client:
            client.cancel(handle.id, "done with it")
