"""bench/server_threads.py's timing helper, on the scripted engine: every request is answered on the
helper's own event loop (gather() outside a coroutine bound its futures to another loop)."""

from __future__ import annotations

from selflengthen.config import load_config
from selflengthen.engines.base import Request, SamplingParams
from tests.bench.conftest import load_bench

server_threads = load_bench("server_threads")


def test_run_once_answers_every_request_and_counts_their_tokens(tmp_path):
    config = load_config(None, ["engine.kind=fake"])
    params = SamplingParams(max_tokens=32, seed=7, stop=())
    requests = [
        Request(messages=[{"role": "user", "content": f"Write about {t}."}], params=params) for t in "abc"
    ]
    seconds, tokens = server_threads.run_once(config, requests)
    assert seconds >= 0
    assert tokens == 3 * len("This is a scripted answer.".split())  # the fake engine counts words as tokens
