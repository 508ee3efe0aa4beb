"""coordinator.rpc.batching.Batcher: group commit for calls made on the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from coordinator.rpc.batching import Batcher


class Recorder:
    """A write that records its batches; it can be held open to let callers pile up."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def write(self, items: Sequence[int]) -> list[int | Exception]:
        self.entered.set()
        self.release.wait(10)
        self.batches.append(list(items))
        return [ValueError(f"item {i} is odd") if i % 2 else i * 10 for i in items]


def test_a_lone_call_is_written_at_once_and_callers_woken_together_share_a_batch():
    recorder = Recorder()

    async def scenario():
        batcher = Batcher(recorder.write)
        assert await batcher.run(0) == 0
        return await asyncio.gather(*(batcher.run(i) for i in (2, 4, 6)))

    assert asyncio.run(scenario()) == [20, 40, 60]
    assert recorder.batches == [[0], [2, 4, 6]]


def test_calls_arriving_while_a_batch_is_written_go_together_in_the_next():
    recorder = Recorder()
    recorder.release.clear()

    async def scenario():
        batcher = Batcher(recorder.write, max_batch=3)
        first = asyncio.ensure_future(batcher.run(0))
        await asyncio.to_thread(recorder.entered.wait, 10)  # the first batch is being written
        later = [asyncio.ensure_future(batcher.run(i)) for i in (2, 4, 6, 8)]
        await asyncio.sleep(0.05)
        recorder.release.set()
        return await first, await asyncio.gather(*later)

    assert asyncio.run(scenario()) == (0, [20, 40, 60, 80])
    assert recorder.batches == [[0], [2, 4, 6], [8]]  # at most max_batch at a time


def test_an_items_error_goes_to_its_caller_alone():
    recorder = Recorder()

    async def scenario():
        batcher = Batcher(recorder.write)
        return await asyncio.gather(*(batcher.run(i) for i in (2, 3, 4)), return_exceptions=True)

    good, bad, other = asyncio.run(scenario())
    assert (good, other) == (20, 40)
    assert isinstance(bad, ValueError) and str(bad) == "item 3 is odd"


def test_a_failed_write_reaches_every_caller_of_its_batch_and_the_next_batch_still_runs():
    calls = []

    def write(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("the database is down")
        return list(items)

    async def scenario():
        batcher = Batcher(write)
        failed = await asyncio.gather(batcher.run(1), batcher.run(2), return_exceptions=True)
        return failed, await batcher.run(3)

    failed, later = asyncio.run(scenario())
    assert [str(e) for e in failed] == ["the database is down"] * 2
    assert later == 3


def test_a_result_whose_caller_went_away_is_handed_to_on_abandoned():
    recorder = Recorder()
    recorder.release.clear()
    abandoned: list[tuple[int, int]] = []

    async def scenario():
        batcher = Batcher(recorder.write, on_abandoned=lambda i, r: abandoned.append((i, r)))
        gone = asyncio.ensure_future(batcher.run(4))
        stays = asyncio.ensure_future(batcher.run(6))
        await asyncio.to_thread(recorder.entered.wait, 10)
        gone.cancel()  # e.g. the task stream ended while its tasks were being taken
        recorder.release.set()
        with pytest.raises(asyncio.CancelledError):
            await gone
        result = await stays
        for _ in range(500):  # handed over on a worker thread after the batch's answers
            if abandoned:
                break
            await asyncio.sleep(0.01)
        return result

    assert asyncio.run(scenario()) == 60
    assert abandoned == [(4, 40)]
