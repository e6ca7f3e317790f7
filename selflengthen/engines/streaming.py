"""Reading a streamed completion for early abort: the OpenAI engine streams a request that carries an
abort rule, and closes the response at the first token where the rule fails (dispatch.py closes it;
vLLM, SGLang and llama-server stop generating for a client that has gone)."""

from __future__ import annotations

from typing import Any

from selflengthen.engines.base import cut_at_stop


class AbortingStream:
    """Assembles a streamed completion (or chat completion) from its events, and asks to stop at
    the first event where the request's abort rule fails on the text so far (cut at the stop
    strings, as the final text is). `result()` has the non-streaming response's shape, plus
    `aborted` (the reason) and `events` (one per generated token on vLLM and llama-server)."""

    def __init__(self, monitor: Any, stop: tuple[str, ...], chat: bool):
        self.monitor = monitor
        self.stop = stop
        self.chat = chat
        self.parts: list[str] = []
        self.finish: str | None = None
        self.usage: dict | None = None
        self.events = 0
        self.aborted: str | None = None
        self.garbage: str | None = None
        self.plain = False

    def feed(self, event: Any) -> bool:
        if not isinstance(event, dict):
            self.garbage = f"an event is {type(event).__name__}, not an object"
            return True
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        for choice in event.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
            if piece:
                self.parts.append(piece)
                self.events += 1
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        if self.finish is None and self.monitor is not None and self.parts:
            text, _ = cut_at_stop("".join(self.parts), self.stop)
            self.aborted = self.monitor.feed(text)
            return self.aborted is not None
        return False

    def result(self) -> dict:
        if self.garbage is not None:
            raise ValueError(f"a streamed event is not JSON: {self.garbage}")
        if self.finish is None and self.aborted is None:
            raise ValueError("the stream ended before the completion did (no finish_reason)")
        text = "".join(self.parts)
        choice: dict[str, Any] = {"index": 0, "finish_reason": self.finish or "aborted"}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        data: dict[str, Any] = {"choices": [choice], "events": self.events}
        if self.usage is not None:
            data["usage"] = self.usage
        if self.aborted is not None:
            data["aborted"] = self.aborted
        return data
