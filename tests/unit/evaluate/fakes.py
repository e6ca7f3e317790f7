"""A scripted engine for evaluation tests: canned answers per request tag, a call history."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

from selflengthen.engines.base import Request, Result


class ScriptedEngine:
    """`respond(request, call_no)` gives each answer; `call_no` counts calls per request tag.

    `fail_after`: raise RuntimeError on every call once that many calls have succeeded (to
    interrupt a run part-way).
    """

    name = "scripted"

    def __init__(
        self,
        respond: Callable[[Request, int], str | Result] | None = None,
        fail_after: int | None = None,
    ):
        self.respond = respond or (lambda request, n: f"Answer to: {request.messages[-1]['content'][:20]}.")
        self.fail_after = fail_after
        self.history: list[Request] = []
        self.calls_by_tag: dict[str, int] = defaultdict(int)
        self.adapters: dict[str, str] = {}
        self.closed = False

    async def generate(self, request: Request) -> Result:
        await asyncio.sleep(0)  # let other requests interleave, as a batching engine would
        if self.fail_after is not None and len(self.history) >= self.fail_after:
            raise RuntimeError("scripted failure")
        self.history.append(request)
        n = self.calls_by_tag[request.tag]
        self.calls_by_tag[request.tag] += 1
        out = self.respond(request, n)
        return out if isinstance(out, Result) else Result(text=out, finish_reason="stop", model="scripted")

    def set_adapters(self, adapters: dict[str, str]) -> None:
        self.adapters.update(adapters)

    def close(self) -> None:
        self.closed = True
