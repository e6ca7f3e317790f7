"""A scripted engine for exact tests of stage logic (and `engine.kind: fake` dry runs).

`FakeEngine(script)` answers each request with `script(request)`, which returns a string (finish
"stop") or a full `Result`; without a script it echoes a fixed sentence. Every request is kept
in `history`, so tests can check exactly what the stages sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from selflengthen.engines.base import Request, Result


class FakeEngine:
    name = "fake"

    def __init__(self, script: Callable[[Request], str | Result] | None = None, delay: float = 0.0):
        self.script = script or (lambda request: "This is a scripted answer.")
        self.delay = delay
        self.history: list[Request] = []
        self.adapters: dict[str, str] = {}

    async def generate(self, request: Request) -> Result:
        self.history.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        out = self.script(request)
        if isinstance(out, Result):
            return out
        return Result(text=out, finish_reason="stop", completion_tokens=len(out.split()), model=request.adapter or "base")

    def set_adapters(self, adapters: dict[str, str]) -> None:
        self.adapters.update(adapters)

    def close(self) -> None:
        pass
