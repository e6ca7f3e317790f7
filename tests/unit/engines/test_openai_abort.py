"""Early abort over HTTP: a request with an abort rule is streamed, and the engine closes the stream at
the first token where the rule fails; the server sees the client go and sends no more."""

from __future__ import annotations

import threading
import time

from selflengthen.engines.base import Request, SamplingParams
from selflengthen.text.prefix import AbortRule
from tests.unit.engines.httpfake import FakeServer, Reply
from tests.unit.engines.test_openai import make_engine, run

LOOP = "round and round the garden goes the little teddy bear again "
CLEAN = " ".join(f"word{i}" for i in range(300)) + "."


def token_events(text: str, chat: bool = False, usage: bool = True) -> list[dict]:
    """One event per word, as a server streams tokens; then the finish and (optionally) usage."""
    words = text.split(" ")
    pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
    key = (lambda p: {"delta": {"content": p}}) if chat else (lambda p: {"text": p})
    events = [{"choices": [{"index": 0, **key(p), "finish_reason": None}]} for p in pieces]
    events.append({"choices": [{"index": 0, **key(""), "finish_reason": "length"}]})
    if usage:
        events.append({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": len(pieces)}})
    return events


def streaming(text: str, chat: bool = False, delay: float = 0.005):
    lock = threading.Lock()

    def handler(seen):
        if seen.path not in ("/v1/completions", "/v1/chat/completions"):
            return None
        with lock:
            return Reply(events=token_events(text, chat), event_delay=delay)

    return handler


def looping_request(prefill: str = "", max_tokens: int = 400) -> Request:
    return Request(
        [{"role": "user", "content": "Write."}],
        SamplingParams(seed=3, max_tokens=max_tokens),
        prefill=prefill,
        tag="loop-1",
        abort=AbortRule(ngram=10),
    )


def test_a_looping_stream_is_closed_at_the_first_repeat():
    text = "Once upon a time. " + LOOP * 40
    with FakeServer(streaming(text)) as server:
        engine = make_engine([server.url], sampling_fields="vllm")
        result = run(engine, looping_request())
        deadline = time.monotonic() + 10  # the server notices at its next writes after we closed
        while server.hangups == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    body = server.posts()[0].json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert result.finish_reason == "aborted" and result.abort_reason == "repeated_ngram"
    # stopped just after the loop's second round started: 4 + 12 + 10 words, not 484
    assert len(result.text.split()) < 30 and result.text.startswith("Once upon a time.")
    assert result.completion_tokens == len(result.text.split())
    assert result.tokens_saved == 400 - result.completion_tokens
    assert engine.dispatch.stats.aborted == 1
    # the server saw the client hang up and wrote far fewer than its 486 events
    assert server.hangups == 1 and server.events_sent < 60


def test_a_clean_stream_is_read_to_the_end_with_the_servers_finish_and_usage():
    with FakeServer(streaming(CLEAN, delay=0)) as server:
        engine = make_engine([server.url], sampling_fields="llamacpp")
        result = run(engine, looping_request())
    assert "stream_options" not in server.posts()[0].json
    assert result.text == CLEAN and result.finish_reason == "length" and result.abort_reason is None
    assert result.completion_tokens == 300 and result.prompt_tokens == 9
    assert server.hangups == 0


def test_chat_mode_streams_deltas_and_aborts_too():
    text = LOOP * 10
    with FakeServer(streaming(text, chat=True)) as server:
        engine = make_engine([server.url], mode="chat")
        result = run(engine, looping_request())
    assert server.posts("/v1/chat/completions")[0].json["stream"] is True
    assert result.finish_reason == "aborted" and len(result.text.split()) < 25


def test_the_prefill_counts_and_a_failing_prefill_sends_nothing():
    with FakeServer(streaming(LOOP * 10)) as server:
        engine = make_engine([server.url])
        looping_prefill = LOOP * 2 + "\n\n"
        result = run(engine, looping_request(prefill=looping_prefill))
        assert result.finish_reason == "aborted" and result.text == "" and result.completion_tokens == 0
        assert server.posts() == []
        # a prefill that is half a loop: the stream is cut after far fewer words than without it
        half = run(engine, looping_request(prefill="Start. " + LOOP))
    assert half.finish_reason == "aborted" and len(half.text.split()) <= 10


def test_a_stream_cut_before_its_end_is_retried():
    events = token_events(CLEAN)[:5]  # no finish_reason, no [DONE]: the server died mid-answer
    replies = iter([Reply(events=events), None])

    def handler(seen):
        if seen.path != "/v1/completions":
            return None
        reply = next(replies)
        return reply or Reply(events=token_events(CLEAN))

    with FakeServer(handler) as server:
        engine = make_engine([server.url])
        result = run(engine, looping_request())
    assert result.text == CLEAN and len(server.posts()) == 2 and engine.stats.retries == 1


def test_a_server_that_ignores_stream_is_read_whole():
    """Some OpenAI-compatible servers answer `stream: true` with one JSON body: no abort, same answer."""
    from tests.unit.engines.httpfake import completion

    text = LOOP * 5
    with FakeServer(lambda seen: Reply(json=completion(text, "length", tokens=60))) as server:
        engine = make_engine([server.url])
        result = run(engine, looping_request())
    assert server.posts()[0].json["stream"] is True
    assert result.text == text and result.finish_reason == "length" and result.completion_tokens == 60
