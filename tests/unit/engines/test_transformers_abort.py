"""Early abort in the transformers engine, on the real embedded model: a looping greedy generation is
stopped at its first repeated n-gram, its text is a prefix of the full generation, and a batch
mixing a looping and a clean request stops only the looping one."""

from __future__ import annotations

import asyncio

import pytest

from selflengthen.config import load_config
from selflengthen.engines import create_engine
from selflengthen.engines.base import Request, SamplingParams
from selflengthen.text.checks import check_text, find_repeated_ngram
from selflengthen.text.prefix import AbortRule

pytestmark = pytest.mark.slow

PHRASE = "the cat sat on the mat and the dog sat on the log and"  # 13 words, no sentence end
GREEDY = SamplingParams(temperature=0.0, repetition_penalty=1.0, max_tokens=60, stop=(), seed=0)


@pytest.fixture(scope="module")
def engine():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # short greedy runs; one thread degrades least on a busy CPU
    config = load_config(
        None, ["engine.kind=transformers", "engine.batch_size=4", "engine.batch_wait_ms=200"]
    )
    engine = create_engine(config.engine, config.model)
    yield engine
    engine.close()
    torch.set_num_threads(threads)


def looping(rule):
    # A prefill that is the phrase twice (26 words, no 20-gram repeat yet): greedy decoding keeps
    # looping it, so the 20-word rule fails a few words in.
    return Request(
        [{"role": "user", "content": "Write a long chant."}],
        GREEDY,
        prefill=f"{PHRASE} {PHRASE} ",
        abort=rule,
        tag="loop",
    )


def test_a_looping_generation_is_stopped_at_its_first_repeat(engine):
    async def go():
        full = await engine.generate(looping(None))
        cut = await engine.generate(looping(AbortRule(ngram=20)))
        return full, cut

    full, cut = asyncio.run(go())
    prefill = looping(None).prefill
    assert find_repeated_ngram(prefill + full.text, 20) is not None  # the model does loop
    assert cut.finish_reason == "aborted" and cut.abort_reason == "repeated_ngram"
    assert cut.completion_tokens < 20 < full.completion_tokens
    assert full.text.startswith(cut.text.rstrip())  # same greedy tokens, cut early
    assert check_text(prefill + cut.text, cut.finish_reason) == check_text(
        prefill + full.text, full.finish_reason
    )
    assert cut.tokens_saved == 60 - cut.completion_tokens


def test_in_a_batch_only_the_looping_row_stops(engine):
    clean = Request(
        [{"role": "user", "content": "Name three colours."}], GREEDY, abort=AbortRule(ngram=20), tag="clean"
    )  # same sampling as the looping request: one batch

    async def go():
        return await asyncio.gather(engine.generate(looping(AbortRule(ngram=20))), engine.generate(clean))

    cut, whole = asyncio.run(go())
    assert cut.finish_reason == "aborted"
    assert whole.finish_reason in ("stop", "length") and whole.abort_reason is None
    assert whole.completion_tokens > cut.completion_tokens
