"""The asyncio front shared by the engines that run requests in batches (transformers, Ray Data).

Stage code awaits one request at a time, from many items in flight. `BatchingQueue.submit`
queues a request and returns its result; a worker task takes a batch (`take` chooses which
pending requests go together), runs it in a thread (`run`, blocking) so the loop keeps collecting
the next batch meanwhile, and resolves each request's future. When fewer than `size` requests
wait, the worker first sleeps `wait_s`: the items whose request just finished send their next one
in that moment, and the next batch is fuller. The worker lives only while requests wait: the
first request starts it, it ends when the queue is empty, so no state outlives the event loop
that made it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from selflengthen.engines.base import Request, Result
from selflengthen.errors import EngineError


@dataclass
class Pending:
    request: Request
    prompt: str
    future: asyncio.Future
    order: int  # arrival order: the oldest waiting group goes first among equals


class BatchingQueue:
    def __init__(
        self,
        take: Callable[[list[Pending], int], list[Pending]],
        run: Callable[[list[Pending]], list[Result]],
        *,
        size: int,
        wait_s: float,
        failure: str,
    ):
        """`take(pending, size)` picks at most `size` of the pending requests for the next batch;
        `run(batch)` returns one Result per request, in order. A batch that raises fails its own
        requests with EngineError(f"{failure}: ...") and the worker goes on."""
        self.take, self.run = take, run
        self.size, self.wait_s, self.failure = size, wait_s, failure
        self.order = itertools.count()
        self._pending: list[Pending] = []
        self._worker: asyncio.Task | None = None

    async def submit(self, request: Request, prompt: str) -> Result:
        loop = asyncio.get_running_loop()
        item = Pending(request, prompt, loop.create_future(), next(self.order))
        self._pending.append(item)
        if self._worker is None:
            self._worker = loop.create_task(self._work())
        try:
            return await item.future
        except asyncio.CancelledError:  # a cancelled item leaves nothing behind for the worker
            if item in self._pending:
                self._pending.remove(item)
            raise

    async def _work(self) -> None:
        try:
            while self._pending:
                if len(self._pending) < self.size and self.wait_s > 0:
                    await asyncio.sleep(self.wait_s)
                batch = self.take(self._pending, self.size)
                chosen = {id(p) for p in batch}
                self._pending = [p for p in self._pending if id(p) not in chosen]
                try:
                    results = await asyncio.to_thread(self.run, batch)
                except Exception as exc:  # a failed batch fails its requests, not the worker
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(EngineError(f"{self.failure}: {exc}"))
                    continue
                for p, r in zip(batch, results, strict=True):
                    if not p.future.done():
                        p.future.set_result(r)
        finally:
            # No await between the last look at the queue and this line: a request queued after it
            # starts a new worker.
            self._worker = None

    def close(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        self._worker = None
        self._pending = []
