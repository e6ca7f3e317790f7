"""The batching front the transformers and Ray Data engines share: requests in flight are gathered
into batches run off the event loop, a failed batch fails only its own requests, and the worker
ends when the queue is empty."""

from __future__ import annotations

import asyncio
import threading

import pytest

from selflengthen.engines.base import Request, Result, SamplingParams
from selflengthen.engines.batching import BatchingQueue, Pending
from selflengthen.engines.transformers import take_batch
from selflengthen.errors import EngineError


def request(adapter=None, max_tokens=16) -> Request:
    return Request(
        messages=[{"role": "user", "content": "x"}],
        params=SamplingParams(max_tokens=max_tokens),
        adapter=adapter,
    )


def echo_queue(size, batches, wait_s=0.01):
    def run(batch):
        assert threading.current_thread() is not threading.main_thread()  # never on the event loop
        batches.append([p.prompt for p in batch])
        if "boom" in batches[-1]:
            raise RuntimeError("out of memory")
        return [Result(text=p.prompt.upper(), finish_reason="stop") for p in batch]

    return BatchingQueue(
        lambda pending, n: pending[:n], run, size=size, wait_s=wait_s, failure="test batch failed"
    )


def test_requests_in_flight_share_batches_and_get_their_own_results():
    batches: list[list[str]] = []
    queue = echo_queue(4, batches)

    async def main():
        return await asyncio.gather(*(queue.submit(request(), f"p{i}") for i in range(10)))

    results = asyncio.run(main())
    assert [r.text for r in results] == [f"P{i}" for i in range(10)]
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(p for b in batches for p in b) == sorted(f"p{i}" for i in range(10))
    queue.close()


def test_a_failed_batch_fails_only_its_requests_and_the_worker_goes_on():
    batches: list[list[str]] = []
    queue = echo_queue(2, batches)

    async def main():
        return await asyncio.gather(
            *(queue.submit(request(), p) for p in ["a", "boom", "c", "d"]), return_exceptions=True
        )

    a, boom, c, d = asyncio.run(main())
    assert isinstance(a, EngineError) and isinstance(boom, EngineError)  # the same batch
    assert "test batch failed: out of memory" in str(boom)
    assert (c.text, d.text) == ("C", "D")
    queue.close()


def test_the_worker_lives_only_while_requests_wait():
    """No worker outlives its work, so none is left on a closed loop to swallow later requests."""
    batches: list[list[str]] = []
    queue = echo_queue(3, batches, wait_s=0)
    first = asyncio.run(queue.submit(request(), "one"))
    assert queue._worker is None
    second = asyncio.run(queue.submit(request(), "two"))
    assert (first.text, second.text) == ("ONE", "TWO") and queue._worker is None
    queue.close()


def test_transformers_batches_one_group_longest_prompts_first():
    loop = asyncio.new_event_loop()
    try:

        def pending(prompt, order, **kw):
            return Pending(request(**kw), prompt, loop.create_future(), order)

        items = [
            pending("short", 0, adapter="generator"),
            pending("a much longer prompt", 1),
            pending("mid prompt", 2),
            pending("a longer one", 3),
            pending("x", 4, max_tokens=99),
        ]
        # the base group (3 requests at 16 tokens) is the largest; longest prompt first, at most 2
        assert [p.prompt for p in take_batch(items, 2)] == ["a much longer prompt", "a longer one"]
        # equal groups: the one waiting longest (lowest arrival order) goes first
        assert [p.prompt for p in take_batch([items[4], items[0]], 8)] == ["short"]
    finally:
        loop.close()


@pytest.mark.parametrize("size", [1, 5])
def test_no_request_is_lost_under_staggered_arrivals(size):
    batches: list[list[str]] = []
    queue = echo_queue(size, batches, wait_s=0.002)

    async def item(i):
        await asyncio.sleep(0.001 * (i % 4))
        first = await queue.submit(request(), f"{i}-a")
        second = await queue.submit(request(), f"{i}-b")  # the item's next request, as stages send it
        return first.text, second.text

    async def main():
        return await asyncio.gather(*(item(i) for i in range(12)))

    assert asyncio.run(main()) == [(f"{i}-A", f"{i}-B") for i in range(12)]
    assert all(len(b) <= size for b in batches)
    queue.close()
