"""A scripted engine for exact tests of stage logic (and `engine.kind: fake` dry runs).

`FakeEngine(script)` answers each request with `script(request)`, which returns a string (finish
"stop") or a full `Result`; without a script it echoes a fixed sentence. Every request is kept
in `history`, so tests can check exactly what the stages sent. A request's abort rule is honoured
as a streaming engine would: the scripted text is fed to its monitor a word at a time and cut
where the monitor fails (finish "aborted"). Tokens are counted as words.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from selflengthen.engines.base import Request, Result, aborted_result


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
        monitor = request.monitor()
        if monitor is not None and monitor.reason is not None:  # the prefill alone fails: nothing is sent
            return aborted_result(
                "", monitor.reason, max_tokens=request.params.max_tokens, model=request.adapter or "base"
            )
        out = self.script(request)
        result = (
            out
            if isinstance(out, Result)
            else Result(
                text=out,
                finish_reason="stop",
                completion_tokens=len(out.split()),
                model=request.adapter or "base",
            )
        )
        if monitor is None:
            return result
        for word in re.finditer(r"\S+\s*", result.text):
            reason = monitor.feed(result.text[: word.end()])
            if reason is not None:
                text = result.text[: word.end()]
                return aborted_result(
                    text,
                    reason,
                    max_tokens=request.params.max_tokens,
                    completion_tokens=len(text.split()),
                    model=result.model,
                )
        return result

    def set_adapters(self, adapters: dict[str, str]) -> None:
        self.adapters.update(adapters)

    def suspend(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def close(self) -> None:
        pass
